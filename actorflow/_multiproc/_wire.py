"""What crosses between the engine facade and its shard processes, besides `actorflow._messages`.

Batches of run messages and notices travel as `Packed` bytes (cloudpickle, one dumps per batch):
payloads the journal accepted may need cloudpickle (a lambda argument, a class from `__main__`),
which Thespian's own pickle cannot send, and one blob per batch keeps a message's cost flat.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._messages import message

__all__ = ["Packed", "Workflows", "Hello", "ShardReady", "Peers", "Drain", "Drained", "GatewayBeat", "ShardAlive", "ShardInit", "pack", "unpack"]


@message
class Packed:
    """A list of messages (run messages to a shard, or notices to the facade), pickled once."""

    blob: bytes

    def __repr__(self) -> str:
        # Thespian formats every message it sends or receives for its debug log, whatever the level
        # (`intent.identify()`): the generated repr escaped the whole blob (~3% of a shard's CPU)
        return f"Packed(<{len(self.blob)} bytes>)"


def pack(items: list[Any]) -> Packed:
    try:
        return Packed(pickle.dumps(items, protocol=5))
    except Exception:  # noqa: BLE001 - something in it needs pickling by value
        return Packed(cloudpickle.dumps(items, protocol=5))


def unpack(msg: Packed) -> list[Any]:
    items: list[Any] = pickle.loads(msg.blob)
    return items


@message
class ShardInit:
    """Everything a shard process needs to open its own resources (it shares no memory with the facade)."""

    data_dir: str
    shard: int
    shards: int
    codec: str
    max_payload: int
    sync: bool
    passivate_after: float | None
    step_threads: int
    timer_horizon: float
    workflows: dict[str, bytes]  # name -> cloudpickle of the workflow function
    facade_pid: int  # the shard stops when this process is gone (no orphan keeps running runs)
    step_processes: int = 0  # sync steps in worker processes of the shard (0: its threads)
    step_requirements: dict[str, Any] | None = None  # sync steps on a node with these capabilities
    node_timeout: float = 15.0  # seconds a node's worker may not answer pings before its steps go elsewhere
    # the Engine's gc_threshold, applied in the shard process (None: CPython's defaults); a shard
    # holds thousands of live runs, and at (700, 10, 10) it spent ~40% of its CPU in the collector
    gc_threshold: tuple[int, int, int] | None = None
    max_resident: int | None = None  # runs in memory at most, over all shards (see actorflow._residency)
    # a shard owned by a member node (_node_shards): its journal is its own, under the node's --data-dir
    node: str = ""  # the owning node's id ("" : the engine's machine, journal in data_dir)
    cluster: str = ""  # the engine's data set on the nodes (a directory name there)
    # shards whose runs this shard's journal holds (None: every shard's, as without nodes); a child
    # run of another journal's shard is created by a request to its owner (actorflow/_elsewhere.py)
    env_shards: tuple[int, ...] | None = None


@message
class Workflows:
    """From the facade: workflows registered (or replaced) after open, name -> cloudpickle blob.

    `recover`: the shard restarted after they were registered, so its recovery skipped their runs:
    load them now."""

    blobs: dict[str, bytes]
    recover: bool = False


@message
class Hello:
    """From the facade: I am the gateway (the sender); the shards' addresses are these."""

    addresses: dict[int, Any]


@message
class Peers:
    """A shard was restarted somewhere: the shards' addresses now."""

    addresses: dict[int, Any]


@message
class ShardReady:
    """A shard process runs (its runs are recovering); `errors`: workflows it could not load."""

    shard: int
    pid: int
    errors: dict[str, str]
    worker: str = ""  # on a member node: "host:pid" of the node's worker process (_node_watch)


@message
class Drain:
    """Close the shard's runtime: running steps get `grace` seconds, then it answers Drained."""

    grace: float


@message
class Drained:
    shard: int


@message
class GatewayBeat:
    """Facade -> a node-owned shard, every second: the engine is there. A shard on another machine
    cannot check the engine's PID; one that hears nothing for 2 x node_timeout stops (a normal exit)."""


@message
class ShardAlive:
    """A node-owned shard's answer to each GatewayBeat: the gateway finds a lost node by its silence
    (`_node_watch`); `worker` as in ShardReady."""

    shard: int
    worker: str


# Notices of other kinds from the shards (e.g. a task handler began or ended: tasks/_leases.py),
# by type; the facade calls each on its actor thread, so it must be quick.
NOTICE_HANDLERS: dict[type, Callable[[Any], None]] = {}
