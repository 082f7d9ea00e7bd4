"""Every message between the engine facade and its actors, and between actors: frozen data.

Nothing here holds a live object (future, closure, lock, engine or runtime): a reply is addressed by
a request id, a run by its id. So each message pickles, and the same actors run in one process or
across processes. Two kinds of message stay inside one process and say so: `Committed` (the
journal's answer to the host that submitted the batch) and `PumpCall` (the embedded pump's own
work items); neither crosses an actor boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar, dataclass_transform

__all__ = [
    "RunMessage",
    "StartRun",
    "StartRuns",
    "StepDone",
    "CompDone",
    "TimerFired",
    "SignalArrived",
    "ChildDone",
    "CancelRun",
    "WatchChild",
    "CreateChild",
    "ChildCreated",
    "StepProgress",
    "LoadRun",
    "WatchStatus",
    "Housekeep",
    "Recover",
    "Rearm",
    "Admit",
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
    "ADMIT",
]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def message(cls: type[T]) -> type[T]:
    """A frozen, slotted dataclass that pickles fast: a slots dataclass's default pickling calls
    `dataclasses.fields()` per object (measured: ~13% of the multiprocess facade's CPU), so each
    message class gets a `__reduce__` over its field names, computed once. It is built fast too
    (`_fast_init`): a step's result is two messages."""
    made = dataclass(frozen=True, slots=True)(cls)
    names = tuple(f.name for f in fields(made))  # type: ignore[arg-type]

    def __reduce__(self: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return made, tuple([getattr(self, n) for n in names])

    made.__reduce__ = __reduce__  # type: ignore[method-assign]
    _fast_init(made)
    return made


def _fast_init(cls: type[Any]) -> None:
    """Give a frozen slots dataclass an `__init__` that stores each field through its slot's own
    setter: the generated one calls `object.__setattr__(self, name, value)` per field, which looks
    the name up again every time (about a third of what building a message costs). Same signature
    and defaults; a class with default factories, keyword-only fields or `__post_init__` keeps
    the generated one."""
    fs = fields(cls)
    if hasattr(cls, "__post_init__") or any(
        f.default_factory is not MISSING or f.kw_only or not f.init for f in fs
    ):
        return
    ns: dict[str, Any] = {}
    params, body = [], []
    for i, f in enumerate(fs):
        slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)
        ns[f"_set{i}"] = slot.__set__
        if f.default is MISSING:
            params.append(f.name)
        else:
            ns[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(body) or '    pass'}", ns)  # noqa: S102
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init


# --- to a run (routed to the host of the run's shard) --------------------------------------------
@message
class RunMessage:
    """Base of the messages addressed to one run."""

    run_id: str


@message
class StartRun(RunMessage):
    """A run whose start is durable: create its actor and run it to its first wait."""

    record: tuple[Any, ...]  # RunRecord.as_tuple()
    args: tuple[Any, ...]  # the journaled copy of its arguments


@message
class StartRuns(RunMessage):
    """Runs of one start_many commit, all durable and all on the shard of `run_id` (the first of
    `run_ids`): one message per shard and commit instead of a record and a message per run."""

    run_ids: tuple[str, ...]
    workflow: str
    created_at: float  # every run of the commit was created at this time
    args: tuple[tuple[Any, ...], ...]  # the journaled copies of their arguments, in order


@message
class StepDone(RunMessage):
    """A step attempt finished: ok with (encoded step_completed record, journaled value), else the error."""

    pos: int
    attempt: int
    ok: bool
    payload: Any


@message
class CompDone(RunMessage):
    """A compensation finished (error None when it succeeded)."""

    pos: int
    ok: bool
    error: BaseException | None


@message
class TimerFired(RunMessage):
    """A timer of the run fell due; `tag`: "sleep", "wait", "reload", ("retry", n) or ("timeout", n)."""

    pos: int
    tag: Any


@message
class SignalArrived(RunMessage):
    """A signal is durable in the run's inbox (seq: its inbox position)."""

    name: str
    seq: int
    payload: Any


@message
class ChildDone(RunMessage):
    """A child run the run waits on at `pos` ended; kind "child_completed" or "child_failed"."""

    pos: int
    kind: str
    data: Any


@message
class CancelRun(RunMessage):
    """Cancel the run; `reply` (a request id, or None) gets whether it was still running."""

    reply: int | None = None


@message
class StepProgress(RunMessage):
    """Code running in a step (a task handler) reports the run's progress; journaled if it still runs."""

    fraction: float


@message
class WatchChild(RunMessage):
    """`parent_id` waits (at `pos`) for this run's outcome."""

    parent_id: str
    pos: int


@message
class CreateChild(RunMessage):
    """To the shard of child run `run_id`, when it journals elsewhere than its parent (a shard owned
    by a member node): create the run durably there, start it, and answer ChildCreated to the parent.
    Sent again until answered; a repeated request finds the run ("that run": the id is the parent's
    and the position's, or the one the workflow named)."""

    workflow: str
    args: tuple[Any, ...]
    parent_id: str
    pos: int


@message
class ChildCreated(RunMessage):
    """To the parent `run_id`: its child `child_id` (waited on at `pos`) exists in its owner's journal
    now; `conflict`: the workflow the id belongs to, when not the one asked for."""

    pos: int
    child_id: str
    conflict: str | None = None


@message
class LoadRun(RunMessage):
    """Load the run from the journal (recovery of one run)."""


@message
class WatchStatus(RunMessage):
    """Someone monitors the run: report its status changes (`on`) or stop (`not on`)."""

    on: bool = True


# --- to a host, about itself ---------------------------------------------------------------------
@message
class Housekeep:
    """Passivate idle runs and flush status records held for a step's commit."""


@message
class Recover:
    """Replay this shard's unfinished runs (after open, or after the host restarted)."""


@message
class Rearm:
    """The timer actor restarted: arm again the timers that lived only in its memory."""


@message
class Admit:
    """Sent by a host to itself: runs wait for room and the last cohort's commit is already durable."""


HOUSEKEEP, RECOVER, REARM, ADMIT = Housekeep(), Recover(), Rearm(), Admit()


@message
class Committed:
    """In-process only: the journal committed (or failed) the batch a host submitted."""

    shard: int
    token: Any
    future: Any


@message
class HostBatch:
    """Many messages for one host, delivered as one actor message."""

    items: list[Any]


# --- to the timer actor --------------------------------------------------------------------------
@message
class ArmTimer:
    """Fire TimerFired(run_id, pos, tag) at `due`; `durable`: also in the journal's timer index."""

    due: float
    run_id: str
    pos: int
    tag: Any
    durable: bool = False


@message
class DisarmTimer:
    """The timer armed with these fields is no longer wanted."""

    due: float
    run_id: str
    pos: int
    tag: Any


@message
class TimerBatch:
    items: list[ArmTimer | DisarmTimer]


@message
class TimerTick:
    """Fire what is due at `now`."""

    now: float


@message
class SignalBatch:
    """Durable signals for the signal actor to route to their runs' hosts."""

    items: list[SignalArrived]


# --- from hosts to whoever waits on runs (the engine facade) -------------------------------------
@message
class Outcome:
    """A run ended (durably): state completed/failed/cancelled, its value or error data."""

    run_id: str
    record: tuple[Any, ...]
    state: str
    value: Any
    data: Any


@message
class StatusChanged:
    """A monitored run's status changed (RunStatus fields as a tuple)."""

    status: Any


@message
class Reply:
    """The answer to request `request_id` (error: an exception to raise instead)."""

    request_id: int
    value: Any = None
    error: BaseException | None = None


@message
class NoticeBatch:
    items: list[Outcome | StatusChanged | Reply]


# --- the embedded pump's own items ---------------------------------------------------------------
@message
class PumpCall:
    """In-process only: run `fn` on the thread driving the actors (`flush`: housekeep every host now)."""

    fn: Any = None
    flush: bool = False
