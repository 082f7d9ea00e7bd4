"""The run machine's contract with its host: what it may use (`Env`) and what it asks for (`Completion`).

An activation (one message in) yields one Completion: an ordered list of ops. Writes go into the
host's journal batch in that order; effects are held by the host and released, in that order, only
once the batch holding the writes before them is durable (output commit). Ops are plain tuples
tagged by a small int, not an object per op: one step is one message, and the completion of the
hot path (`APPEND` the step's result, `DISPATCH` the next step) costs two tuples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "APPEND",
    "PUT_TIMER",
    "DEL_TIMER",
    "DEL_SIGNAL",
    "CREATE_CHILD",
    "DISPATCH",
    "ARM",
    "DISARM",
    "SEND",
    "REPLY",
    "FINISHED",
    "BLOCKED",
    "ABANDON",
    "CREATE_ELSEWHERE",
    "OP_NAMES",
    "Codec",
    "Env",
    "Completion",
]

# --- writes: into the journal batch, in order --------------------------------------------------
APPEND = 0  # (APPEND, seq, record, kind, name, pos): the run's next event, already encoded
PUT_TIMER = 1  # (PUT_TIMER, due, pos, tag): a durable timer index entry ("sleep" / "wait")
DEL_TIMER = 2  # (DEL_TIMER, due, pos): the timer index entry is done with
DEL_SIGNAL = 3  # (DEL_SIGNAL, name, seq): a signal taken from the durable inbox
CREATE_CHILD = 4  # (CREATE_CHILD, child_id, name, args, args_copy, pos): the child's record and start;
#                   once durable: start it, or report a conflict (its id belongs to another workflow)
# --- effects: released once the writes are durable -------------------------------------------
DISPATCH = 10  # (DISPATCH, (run_id, pos, name, attempt, fn, kind)): run a step ("step") or compensation ("comp")
ARM = 11  # (ARM, ArmTimer, guard): arm a timer, unless `guard` (a Command or None) resolved meanwhile
DISARM = 12  # (DISARM, DisarmTimer)
SEND = 13  # (SEND, RunMessage): a message to another run (routed to its host)
REPLY = 14  # (REPLY, request_id, value): answer a waiting caller
FINISHED = 15  # (FINISHED, state, value, data): the run ended; tell watchers, parent and waiters
BLOCKED = 16  # (BLOCKED,): replay diverged; the run is held with its evidence (journaled in run_blocked)
ABANDON = 17  # (ABANDON, (run_id, pos, attempt)): an attempt timed out; whatever runs it may be stopped
CREATE_ELSEWHERE = 18  # (CREATE_ELSEWHERE, CreateChild): ask the owner of a child journaled elsewhere to
#                        create it; child_started is journaled once it answers (ChildCreated)

OP_NAMES = {
    APPEND: "append",
    PUT_TIMER: "put_timer",
    DEL_TIMER: "del_timer",
    DEL_SIGNAL: "del_signal",
    CREATE_CHILD: "create_child",
    DISPATCH: "dispatch",
    ARM: "arm",
    DISARM: "disarm",
    SEND: "send",
    REPLY: "reply",
    FINISHED: "finished",
    BLOCKED: "blocked",
    ABANDON: "abandon",
    CREATE_ELSEWHERE: "create_elsewhere",
}


class Codec(Protocol):
    """The part of the journal's codec a run needs: encode an event, check a value loads back."""

    def encode(self, value: Any, what: str = ...) -> bytes: ...

    def roundtrip(self, value: Any, what: str = ...) -> Any: ...


class Env:
    """All a run machine may use of the outside world: the time, the codec, and workflow names.

    No journal, host, thread or clock object: a test builds one from a lambda and a Codec.
    """

    __slots__ = ("now", "codec", "workflow_name", "elsewhere")

    def __init__(
        self,
        now: Callable[[], float],
        codec: Codec,
        workflow_name: Callable[[Any], str],
        elsewhere: Callable[[str], bool] | None = None,
    ) -> None:
        self.now = now
        self.codec = codec
        self.workflow_name = workflow_name  # a workflow function or name -> its registered name (or raises)
        # whether a run id is journaled by another process than this run's (a shard on a member node):
        # a child there is created by a request to its owner (None: every run is journaled here)
        self.elsewhere = elsewhere


class Completion:
    """What one activation asks of the host (reused by its machine: read it before the next one).

    `dirty`: the run record changed (state, error, progress): the host writes and reports it.
    `rederivable`: how many of the writes recovery would derive again the same (a fired sleep's
    event and index delete), so a batch holding only those need not be durable before acting.
    `first_seq`: the run's next event seq when the activation began (where a quarantine record goes
    if the host has to drop this completion).
    """

    __slots__ = ("ops", "dirty", "rederivable", "first_seq")

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self.dirty = False
        self.rederivable = 0
        self.first_seq = 0

    def events(self) -> list[tuple[str, str, int]]:
        """(kind, name, pos) of the events to append, in order."""
        return [(op[3], op[4], op[5]) for op in self.ops if op[0] == APPEND]

    def effects(self) -> list[tuple[Any, ...]]:
        """The ops that are not journal writes, each with its code spelled out."""
        return [(OP_NAMES[op[0]], *op[1:]) for op in self.ops if op[0] >= DISPATCH]

    def __repr__(self) -> str:
        ops = ", ".join(OP_NAMES[op[0]] for op in self.ops)
        return f"<Completion [{ops}] dirty={self.dirty}>"
