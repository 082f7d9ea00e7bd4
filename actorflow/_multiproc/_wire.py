"""What crosses between the engine facade and its shard processes, besides `actorflow._messages`.

Batches of run messages and notices travel as `Packed` bytes (cloudpickle, one dumps per batch):
payloads the journal accepted may need cloudpickle (a lambda argument, a class from `__main__`),
which Thespian's own pickle cannot send, and one blob per batch keeps a message's cost flat.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from .._messages import message

__all__ = ["Packed", "Hello", "ShardReady", "Peers", "Drain", "Drained", "ShardInit", "pack", "unpack"]



@message
class Packed:
    """A list of messages (run messages to a shard, or notices to the facade), pickled once."""

    blob: bytes


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
    max_resident: int | None = None  # runs in memory at most, over all shards (see actorflow._residency)


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


@message
class Drain:
    """Close the shard's runtime: running steps get `grace` seconds, then it answers Drained."""

    grace: float


@message
class Drained:
    shard: int
