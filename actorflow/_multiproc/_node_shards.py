"""Shards owned by member nodes: the option, the durable shard map, and where a node keeps a shard.

`Engine(system="multiproc" | "HOST:PORT", shard_nodes={1: "node-b"})` puts shard 1's actor on the
member node started with `actorflow worker --join ... --data-dir DIR --node-id node-b`; that shard
journals its runs in its own LMDB environment `DIR/<cluster id>/shard-1/` on the node. The path is
the node's own setting (`--data-dir`, passed to its actors in `ACTORFLOW_NODE_DATA_DIR`) plus two
checked components; the engine never names a path on a node.

The shard map (which shard a node owns, and the cluster id naming the engine's data set on the
nodes) is recorded in the engine's journal (kv namespace `cluster`) when first configured. Shards
do not move in this version: an engine whose `shard_nodes` differ from the recorded map refuses to
open, so runs never end up in two places.
"""

from __future__ import annotations

import os
import re
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage import Journal

from ..errors import ConfigError

__all__ = ["SHARD_NODE_CAPABILITY", "NODE_DATA_ENV", "check_shard_nodes", "node_id", "record_shard_map", "shard_dir", "wait_for_nodes"]

SHARD_NODE_CAPABILITY = "actorflow.shard_node"  # a worker started with --data-dir: its node id
NODE_DATA_ENV = "ACTORFLOW_NODE_DATA_DIR"  # that worker's --data-dir, inherited by its actors
NS_CLUSTER = "cluster"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CLUSTER_ID = re.compile(r"^[0-9a-f]{32}$")


def check_shard_nodes(shard_nodes: Any, shards: int, system: str) -> dict[int, str]:
    """ConfigError unless `shard_nodes` maps shard indexes of this engine to node ids."""
    if shard_nodes is None:
        return {}
    if system == "embedded":
        raise ConfigError("shard_nodes places shards on member nodes: it needs system='multiproc' or 'HOST:PORT'",
                          option="shard_nodes")
    if not isinstance(shard_nodes, dict):
        raise ConfigError(f"shard_nodes must be a dict of shard index -> node id, got {shard_nodes!r}",
                          option="shard_nodes")
    out: dict[int, str] = {}
    for shard, node in shard_nodes.items():
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
            raise ConfigError(f"shard_nodes: {shard!r} is not a shard index of this engine (0..{shards - 1})",
                              option="shard_nodes")
        if not isinstance(node, str) or not _NODE_ID.match(node):
            raise ConfigError(f"shard_nodes[{shard}]: {node!r} is not a node id (letters, digits, '_.-')",
                              option="shard_nodes")
        out[shard] = node
    return out


def node_id(data_dir: str, given: str | None) -> str:
    """The worker's node id: `given`, else the one stored in `data_dir` (made once), so a restarted
    node is the same owner. A given id that differs from the stored one is refused."""
    path = Path(data_dir, "node-id")
    stored = path.read_text().strip() if path.exists() else None
    nid = given or stored or f"node-{uuid.uuid4().hex[:12]}"
    if not _NODE_ID.match(nid):
        raise ConfigError(f"--node-id {nid!r}: letters, digits and '_.-' only", node_id=nid)
    if stored is not None and stored != nid:
        raise ConfigError(f"{data_dir} belongs to node {stored!r}, not {nid!r}", node_id=nid, stored=stored)
    if stored is None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(nid + "\n")
        os.replace(tmp, path)
    return nid


def shard_dir(cluster: str, shard: int, node: str) -> str:
    """On a member node: the directory of `shard`'s journal, under the node's own --data-dir."""
    base = os.environ.get(NODE_DATA_ENV)
    if not base:
        raise ConfigError("this node was not started with --data-dir: it cannot own shards", shard=shard)
    if not _CLUSTER_ID.match(cluster) or isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ConfigError(f"bad shard placement ({cluster!r}, {shard!r})", shard=repr(shard))
    stored = Path(base, "node-id").read_text().strip()
    if stored != node:
        raise ConfigError(f"shard {shard} is for node {node!r}, this is {stored!r}", shard=shard, node=node)
    path = Path(base, cluster, f"shard-{shard}")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def wait_for_nodes(
    members: Callable[[float], list[tuple[str, dict[str, Any]]]], wanted: set[str], timeout: float = 60.0
) -> None:
    """Before the shards are created: every node owning one must be in the convention (a shard whose
    node is missing would fail its creation again and again, spending the restart budget)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - {caps.get(SHARD_NODE_CAPABILITY) for _, caps in members(5.0)}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ConfigError(
                f"shard_nodes: node(s) {sorted(missing)} did not join the convention within {timeout:g} s "
                "(start them with `actorflow worker --join HOST:PORT --data-dir DIR --node-id ID`)",
                option="shard_nodes", missing=sorted(missing),
            )
        time.sleep(0.5)


def record_shard_map(journal: Journal, shard_nodes: dict[int, str], shards: int) -> str:
    """Check `shard_nodes` against the map recorded in the engine's journal (recording it the first
    time); returns the cluster id ("" when no node owns a shard)."""
    recorded = journal.kv_get(NS_CLUSTER, "shard_nodes")
    cluster = journal.kv_get(NS_CLUSTER, "id")
    want = {str(k): v for k, v in sorted(shard_nodes.items())}
    if recorded is not None:
        if recorded != want or journal.kv_get(NS_CLUSTER, "shards") != shards:
            raise ConfigError(
                f"this data directory's shards are owned by {recorded or 'the engine'} (shards={shard_nodes}): "
                f"shard_nodes={shard_nodes or None} differs; moving shards between nodes is not supported yet",
                option="shard_nodes", recorded=recorded,
            )
        return str(cluster) if recorded else ""
    if not shard_nodes:
        return ""  # nothing to record: the directory stays as it was
    # runs of a shard that is to live on a node must not be here already (they would be lost to it)
    moved = [r for r in journal.active_run_ids() if _shard_of(r, shards) in shard_nodes]
    if moved or any(_shard_of(r.run_id, shards) in shard_nodes for r in journal.iter_runs()):
        raise ConfigError("shard_nodes names shards whose runs this data directory already holds; "
                          "moving shards between nodes is not supported yet", option="shard_nodes")
    cluster = uuid.uuid4().hex
    batch = journal.batch()
    batch.kv_put(NS_CLUSTER, "id", cluster)
    batch.kv_put(NS_CLUSTER, "shards", shards)
    batch.kv_put(NS_CLUSTER, "shard_nodes", want)
    journal.commit(batch)
    return str(cluster)


def _shard_of(run_id: str, shards: int) -> int:
    return zlib.crc32(run_id.encode()) % shards if shards > 1 else 0
