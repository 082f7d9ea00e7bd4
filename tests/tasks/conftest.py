"""Fixtures of the task tests: worker nodes of a convention (shared with tests/engine)."""

from _node_cluster import leader_port, nodes  # noqa: F401 - fixtures of the node tests
