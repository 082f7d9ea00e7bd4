"""A run's state as rebuilt from its history, and the few primitives every command is made of.

Replay is by position: the n-th ctx operation a workflow issues matches the events recorded at
position n (same family and name), else the run diverged (NondeterminismError, with evidence).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import Event, RunRecord

from .._context import Command
from .._messages import ArmTimer
from ..errors import NondeterminismError, PayloadError
from ._completion import APPEND, ARM, Completion, Env

__all__ = ["FAMILY", "RunState", "Detached", "describe_error", "failure_text"]

# which command family each position-bound event kind belongs to (replay matches on family + name)
FAMILY = {
    "step_completed": "step",
    "step_failed": "step",
    "step_attempt_failed": "step",
    "timer_started": "sleep",
    "timer_fired": "sleep",
    "wait_started": "signal",
    "signal_received": "signal",
    "wait_timeout": "signal",
    "child_started": "child",
    "child_completed": "child",
    "child_failed": "child",
    "now": "now",
    "random": "random",
    "uuid4": "uuid4",
    "patch": "patch",
}


class Detached(BaseException):
    """Raised into workflow code that runs after its run left memory (a finally block on close)."""


def describe_error(exc: BaseException) -> str:
    """`Type: message` of an exception, as journals and errors show it."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_text(data: dict[str, Any]) -> str:
    """The error text of a failed/cancelled run's final event, with its failed compensations."""
    error = str(data.get("error", "?"))
    comp = data.get("compensation_errors")
    if comp:
        error += f" (compensation failed: {'; '.join(comp)})"
    return error


class RunState:
    """Everything a run machine knows; the command mixins (steps, waits, saga) work on this."""

    __slots__ = (
        "_rng",
        "args",
        "awaiting",
        "cancel_pos",
        "cancelled",
        "comp_done",
        "comp_errors",
        "comp_queue",
        "comps",
        "coro",
        "detached",
        "driving",
        "env",
        "final",
        "fn",
        "inbox",
        "last_active",
        "max_pos",
        "next_seq",
        "nondet",
        "ops",
        "out",
        "pending",
        "pending_commits",
        "phase",
        "pos",
        "progress_recorded",
        "progress_replayed",
        "record",
        "recorded",
        "run_id",
        "seen_signals",
        "steps_inflight",
        "waits",
        "workflow",
    )

    def __init__(
        self,
        record: RunRecord,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        events: list[Event],
        env: Env,
        signals: list[tuple[str, int, Any]] | tuple[()] = (),
    ) -> None:
        self.record = record
        self.run_id = record.run_id
        self.workflow = record.workflow
        self.fn = fn
        self.args = args
        self.env = env
        self.next_seq = len(events)
        self.recorded: dict[int, list[Event]] = {}
        self.max_pos = -1
        self.cancel_pos: int | None = None
        self.comp_done: dict[int, Event] = {}
        self.progress_recorded = 0  # progress events in the journal: replayed report_progress calls skip them
        self.progress_replayed = 0
        for ev in events:
            if ev.kind == "progress":
                self.progress_recorded += 1
            elif ev.kind in FAMILY:
                self.recorded.setdefault(ev.pos, []).append(ev)
                if ev.pos > self.max_pos:
                    self.max_pos = ev.pos
            elif ev.kind == "cancel_requested":
                self.cancel_pos = ev.pos
            elif ev.kind in ("compensation_completed", "compensation_failed"):
                self.comp_done[ev.pos] = ev
        self.pos = 0
        self._rng: random.Random | None = None
        self.detached = False
        self.coro: Any = None
        self.awaiting: Command | None = None
        self.pending: dict[int, Command] = {}
        self.inbox: dict[str, list[tuple[int, Any]]] = {}
        self.seen_signals: set[int] = set()
        for name, seq, payload in signals:  # durable, not yet taken: delivered when a wait asks
            self.seen_signals.add(seq)
            self.inbox.setdefault(name, []).append((seq, payload))
        self.waits: dict[str, list[Command]] = {}
        self.comps: list[tuple[int, int, str, Callable[[], Any]]] = []
        self.comp_queue: list[tuple[int, int, str, Callable[[], Any]]] = []
        self.comp_errors: list[str] = []
        self.final: tuple[str, Any] | None = None
        self.phase = "new"  # new, running, compensating, finished, blocked
        self.cancelled = False
        self.nondet: NondeterminismError | None = None
        self.steps_inflight = 0
        self.driving = False
        self.out = Completion()
        self.ops = self.out.ops
        # kept by the host on the machine (never read here): when a message last reached the run, and
        # how many of its journal batches are submitted but not yet durable
        self.last_active = 0.0
        self.pending_commits = 0

    if TYPE_CHECKING:  # provided by the mixins RunMachine is made of

        def _drive(self, throw: BaseException | None = None) -> None: ...
        def _deliver_cancel(self) -> None: ...
        def _fail(self, exc: BaseException, cancelled: bool = False) -> None: ...
        def _complete(self, value: Any) -> None: ...
        def _block(self, err: NondeterminismError) -> None: ...
        def _update_state(self) -> None: ...
        def on_step_result(self, pos: int, attempt: int, ok: bool, payload: Any) -> None: ...

    # --- what workflow code reads ---------------------------------------------------------------
    @property
    def rng(self) -> random.Random:
        """Seeded from the OS only when first used: its draws are journaled, so replay needs no seed."""
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

    @property
    def replaying(self) -> bool:
        return self.pos <= self.max_pos

    def clock_now(self) -> float:
        return self.env.now()

    # --- primitives -----------------------------------------------------------------------------
    def _append(self, kind: str, name: str, pos: int, data: Any) -> int:
        """Journal an event (encoded now: an unjournalable value fails here, in the workflow's code)."""
        if self.detached:
            raise self._gone()
        seq = self.next_seq
        fields = (kind, name, pos, self.env.now(), data)
        codec = self.env.codec
        try:
            record = codec.encode(fields, kind)
        except PayloadError:  # again, to name the event in the error (not formatted on every append)
            record = codec.encode(fields, f"{kind} {name!r}")
        self.ops.append((APPEND, seq, record, kind, name, pos))
        self.next_seq = seq + 1
        return seq

    def _gone(self) -> Detached:
        return Detached(f"run {self.run_id!r} is no longer hosted here: its finally blocks may not use ctx")

    def _next(self, kind: str, name: str) -> tuple[Command, list[Event] | None]:
        """The command at the next position, checked against what the journal recorded there."""
        if self.detached:
            raise self._gone()
        pos = self.pos
        self.pos += 1
        cmd = Command(self, pos, kind, name)
        evs = self.recorded.get(pos)
        if evs:
            first = evs[0]
            if FAMILY[first.kind] != kind or first.name != name:
                raise self._nondet(pos, f"{kind} {name!r}", f"{first.kind} {first.name!r}")
        return cmd, evs

    def _nondet(self, pos: int, expected: str, recorded: str) -> NondeterminismError:
        err = NondeterminismError(self.run_id, pos, expected, recorded)
        if self.nondet is None:
            self.nondet = err
        return err

    def _done(self, cmd: Command, value: Any = None, error: BaseException | None = None) -> None:
        cmd.done = True
        cmd.value = value
        cmd.error = error
        self.pending.pop(cmd.pos, None)

    def _resolve(self, cmd: Command, value: Any = None, error: BaseException | None = None) -> None:
        """Resolve a command and, if the workflow awaits it, run the workflow on to its next wait."""
        self._done(cmd, value, error)
        if self.awaiting is cmd and not self.driving:
            self.awaiting = None
            self._drive()

    def _arm(self, due: float, pos: int, tag: Any, durable: bool = False, cmd: Command | None = None) -> None:
        # with `cmd`: not armed if it resolves first (a run woken by this very timer re-arms it on replay)
        self.ops.append((ARM, ArmTimer(due, self.run_id, pos, tag, durable), cmd))

    def _exc_data(self, exc: BaseException) -> dict[str, Any]:
        """An error as journaled: its text always, the exception object only if it loads back (many
        exception classes pickle but fail to unpickle, and an unloadable record would poison replay)."""
        data: dict[str, Any] = {"error": describe_error(exc), "type": type(exc).__name__}
        try:
            self.env.codec.roundtrip(exc)
            data["exc"] = exc
        except PayloadError:
            data["exc"] = None
        return data
