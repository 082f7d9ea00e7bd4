"""Every message between the engine facade and its actors, and between actors: frozen data.

Nothing here holds a live object (future, closure, lock, engine or runtime): a reply is addressed by
a request id, a run by its id. So each message pickles, and the same actors run in one process or
across processes. Two kinds of message stay inside one process and say so: `Committed` (the
journal's answer to the host that submitted the batch) and `PumpCall` (the embedded pump's own
work items); neither crosses an actor boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "RunMessage",
    "StartRun",
    "StepDone",
    "CompDone",
    "TimerFired",
    "SignalArrived",
    "ChildDone",
    "CancelRun",
    "WatchChild",
    "LoadRun",
    "WatchStatus",
    "Housekeep",
    "Recover",
    "Rearm",
    "Committed",
    "HostBatch",
    "ArmTimer",
    "DisarmTimer",
    "TimerBatch",
    "TimerTick",
    "SignalBatch",
    "Outcome",
    "StatusChanged",
    "Reply",
    "NoticeBatch",
    "PumpCall",
    "HOUSEKEEP",
    "RECOVER",
    "REARM",
]

_FROZEN = {"frozen": True, "slots": True}


# --- to a run (routed to the host of the run's shard) --------------------------------------------
@dataclass(**_FROZEN)
class RunMessage:
    """Base of the messages addressed to one run."""

    run_id: str


@dataclass(**_FROZEN)
class StartRun(RunMessage):
    """A run whose start is durable: create its actor and run it to its first wait."""

    record: tuple[Any, ...]  # RunRecord.as_tuple()
    args: tuple[Any, ...]  # the journaled copy of its arguments


@dataclass(**_FROZEN)
class StepDone(RunMessage):
    """A step attempt finished: ok with (encoded step_completed record, journaled value), else the error."""

    pos: int
    attempt: int
    ok: bool
    payload: Any


@dataclass(**_FROZEN)
class CompDone(RunMessage):
    """A compensation finished (error None when it succeeded)."""

    pos: int
    ok: bool
    error: BaseException | None


@dataclass(**_FROZEN)
class TimerFired(RunMessage):
    """A timer of the run fell due; `tag`: "sleep", "wait", "reload", ("retry", n) or ("timeout", n)."""

    pos: int
    tag: Any


@dataclass(**_FROZEN)
class SignalArrived(RunMessage):
    """A signal is durable in the run's inbox (seq: its inbox position)."""

    name: str
    seq: int
    payload: Any


@dataclass(**_FROZEN)
class ChildDone(RunMessage):
    """A child run the run waits on at `pos` ended; kind "child_completed" or "child_failed"."""

    pos: int
    kind: str
    data: Any


@dataclass(**_FROZEN)
class CancelRun(RunMessage):
    """Cancel the run; `reply` (a request id, or None) gets whether it was still running."""

    reply: int | None = None


@dataclass(**_FROZEN)
class WatchChild(RunMessage):
    """`parent_id` waits (at `pos`) for this run's outcome."""

    parent_id: str
    pos: int


@dataclass(**_FROZEN)
class LoadRun(RunMessage):
    """Load the run from the journal (recovery of one run)."""


@dataclass(**_FROZEN)
class WatchStatus(RunMessage):
    """Someone monitors the run: report its status changes (`on`) or stop (`not on`)."""

    on: bool = True


# --- to a host, about itself ---------------------------------------------------------------------
@dataclass(**_FROZEN)
class Housekeep:
    """Passivate idle runs and flush status records held for a step's commit."""


@dataclass(**_FROZEN)
class Recover:
    """Replay this shard's unfinished runs (after open, or after the host restarted)."""


@dataclass(**_FROZEN)
class Rearm:
    """The timer actor restarted: arm again the timers that lived only in its memory."""


HOUSEKEEP, RECOVER, REARM = Housekeep(), Recover(), Rearm()


@dataclass(**_FROZEN)
class Committed:
    """In-process only: the journal committed (or failed) the batch a host submitted."""

    shard: int
    token: Any
    future: Any


@dataclass(**_FROZEN)
class HostBatch:
    """Many messages for one host, delivered as one actor message."""

    items: list[Any]


# --- to the timer actor --------------------------------------------------------------------------
@dataclass(**_FROZEN)
class ArmTimer:
    """Fire TimerFired(run_id, pos, tag) at `due`; `durable`: also in the journal's timer index."""

    due: float
    run_id: str
    pos: int
    tag: Any
    durable: bool = False


@dataclass(**_FROZEN)
class DisarmTimer:
    """The timer armed with these fields is no longer wanted."""

    due: float
    run_id: str
    pos: int
    tag: Any


@dataclass(**_FROZEN)
class TimerBatch:
    items: list[ArmTimer | DisarmTimer]


@dataclass(**_FROZEN)
class TimerTick:
    """Fire what is due at `now`."""

    now: float


@dataclass(**_FROZEN)
class SignalBatch:
    """Durable signals for the signal actor to route to their runs' hosts."""

    items: list[SignalArrived]


# --- from hosts to whoever waits on runs (the engine facade) -------------------------------------
@dataclass(**_FROZEN)
class Outcome:
    """A run ended (durably): state completed/failed/cancelled, its value or error data."""

    run_id: str
    record: tuple[Any, ...]
    state: str
    value: Any
    data: Any


@dataclass(**_FROZEN)
class StatusChanged:
    """A monitored run's status changed (RunStatus fields as a tuple)."""

    status: Any


@dataclass(**_FROZEN)
class Reply:
    """The answer to request `request_id` (error: an exception to raise instead)."""

    request_id: int
    value: Any = None
    error: BaseException | None = None


@dataclass(**_FROZEN)
class NoticeBatch:
    items: list[Outcome | StatusChanged | Reply]


# --- the embedded pump's own items ---------------------------------------------------------------
@dataclass(**_FROZEN)
class PumpCall:
    """In-process only: run `fn` on the thread driving the actors (`flush`: housekeep every host now)."""

    fn: Any = None
    flush: bool = False
