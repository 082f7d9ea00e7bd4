"""`ExecutionContext`: the read-only view a node's executor gets of its run (input, variables, config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._paths import MISSING, lookup

if TYPE_CHECKING:
    from ._definition import EdgeDef, GraphDefinition, NodeDef

__all__ = ["ExecutionContext", "TokenInfo"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A position of the run's control flow when the node started: a node about to run or waiting."""

    node: str
    state: str  # "ready", "running", "user_task" (a pending user task) or "join" (waiting at a join)


def _required(value: Any, what: str, path: str) -> Any:
    if value is MISSING or value is None:
        raise KeyError(f"{what} has no value at {path!r}")
    return value


@dataclass(frozen=True)
class ExecutionContext:
    """Everything an executor may read. Copies, not live state: executors change the run only through
    what they return (output, port, effects), which is journaled before the run acts on it."""

    graph: GraphDefinition
    node: NodeDef
    run_id: str
    input: Mapping[str, Any]
    workflow_input: Mapping[str, Any]
    accumulated: Mapping[str, Any]
    attempt: int = 1
    branches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tokens: tuple[TokenInfo, ...] = ()
    signal_name: str | None = None

    # --- input: the previous node's output -------------------------------------------------------
    def get(self, path: str, default: Any = None) -> Any:
        """The value at a dot/index path of `input` (`approval.levels.0.level`), or `default`."""
        value = lookup(self.input, path)
        return default if value is MISSING else value

    def get_required(self, path: str) -> Any:
        """As `get`, but a missing (or null) value raises KeyError (a retryable internal failure unless caught)."""
        return _required(lookup(self.input, path), "the node input", path)

    # --- the workflow's original input ----------------------------------------------------------
    def get_initial(self, path: str, default: Any = None) -> Any:
        value = lookup(self.workflow_input, path)
        return default if value is MISSING else value

    def get_initial_required(self, path: str) -> Any:
        return _required(lookup(self.workflow_input, path), "the workflow input", path)

    # --- accumulated: workflow input merged with every output so far ------------------------------
    def get_any(self, path: str, default: Any = None) -> Any:
        value = lookup(self.accumulated, path)
        return default if value is MISSING else value

    # --- node config ----------------------------------------------------------------------------
    @property
    def config(self) -> Mapping[str, Any]:
        return self.node.config

    def get_config(self, path: str, default: Any = None) -> Any:
        value = lookup(self.node.config, path)
        return default if value is MISSING else value

    def get_config_required(self, path: str) -> Any:
        return _required(lookup(self.node.config, path), f"the config of node {self.node.id!r}", path)

    # --- retries --------------------------------------------------------------------------------
    @property
    def attempt_number(self) -> int:
        """1 on the first try, 2 on the first retry."""
        return self.attempt

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1

    # --- navigation -----------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def outgoing_edges(self) -> tuple[EdgeDef, ...]:
        return self.graph.outgoing(self.node.id)

    @property
    def incoming_edges(self) -> tuple[EdgeDef, ...]:
        return self.graph.incoming(self.node.id)

    def get_node(self, node_id: str) -> NodeDef | None:
        return self.graph.nodes_by_id.get(node_id)

    def get_tokens_at_node(self, node_id: str) -> list[TokenInfo]:
        return [t for t in self.tokens if t.node == node_id]

    @property
    def is_start_node(self) -> bool:
        return self.node.id == self.graph.start

    @property
    def is_end_node(self) -> bool:
        return self.node.id in self.graph.ends
