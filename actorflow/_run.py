"""One workflow run: its replayed coroutine, pending commands, inbox and saga, driven by messages."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import Event, RunRecord

from . import _saga
from ._context import Command, StepSpec, WorkflowContext
from ._messages import ArmTimer
from ._saga import describe_error
from .errors import (
    Cancelled,
    ConfigError,
    NondeterminismError,
    PayloadError,
    StepFailed,
    StepTimeout,
    WaitTimeout,
)

if TYPE_CHECKING:
    from ._host import RunHost

__all__ = ["Run", "FAMILY"]

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


class _Detached(BaseException):
    """Raised into workflow code that runs after its run left memory (a finally block on close)."""


class Run:
    """A workflow run hosted in memory; all facts go through the host's journal batch first."""

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
        "final",
        "fn",
        "host",
        "inbox",
        "last_active",
        "max_pos",
        "next_seq",
        "nondet",
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

    def __init__(self, host: RunHost, record: RunRecord, fn: Callable[..., Any], args: tuple[Any, ...], events: list[Event]) -> None:
        self.host = host
        self.record = record
        self.run_id = record.run_id
        self.workflow = record.workflow
        self.fn = fn
        self.args = args
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
        self.pending_commits = 0
        self.last_active = host.rt.clock.now()

    # --- helpers ------------------------------------------------------------------------------
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
        return self.host.rt.clock.now()

    def _append(self, kind: str, name: str, pos: int, data: Any) -> int:
        if self.detached:
            raise self._gone()
        return self.host.append(self, kind, name, pos, data)

    def _gone(self) -> _Detached:
        return _Detached(f"run {self.run_id!r} is no longer hosted here: its finally blocks may not use ctx")

    def _next(self, kind: str, name: str) -> tuple[Command, list[Event] | None]:
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
        self._done(cmd, value, error)
        if self.awaiting is cmd and not self.driving:
            self.awaiting = None
            self._drive()

    def _arm(self, due: float, pos: int, tag: Any, durable: bool = False, cmd: Command | None = None) -> None:
        # with `cmd`: not armed if it resolves first (a run woken by this very timer re-arms it on replay)
        self.host.send_timer(ArmTimer(due, self.run_id, pos, tag, durable), cmd)

    def _exc_data(self, exc: BaseException) -> dict[str, Any]:
        """An error as journaled: its text always, the exception object only if it loads back (many
        exception classes pickle but fail to unpickle, and an unloadable record would poison replay)."""
        data: dict[str, Any] = {"error": describe_error(exc), "type": type(exc).__name__}
        try:
            self.host.rt.codec.roundtrip(exc)
            data["exc"] = exc
        except PayloadError:
            data["exc"] = None
        return data

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Create the coroutine and run it to its first pending operation (replaying what is known)."""
        self.phase = "running"
        if self.record.state == "pending" or self.record.state == "blocked":
            self.record.state = "running"
            self.record.error = None
            self.host.mark_dirty(self)
        try:
            self.coro = self.fn(WorkflowContext(self), *self.args)
        except Exception as exc:  # bad arguments for the workflow signature
            _saga.fail(self, exc)
            return
        self._drive()

    def _drive(self, throw: BaseException | None = None) -> None:
        if self.coro is None:
            return  # detached: this run left memory (finished, blocked or passivated)
        self.driving = True
        try:
            while True:
                try:
                    cmd = self.coro.throw(throw) if throw is not None else self.coro.send(None)
                    throw = None
                except BaseException as exc:  # noqa: BLE001 - the workflow returned, raised or was cancelled
                    if isinstance(exc, StopIteration) and self.nondet is None and self.pos <= self.max_pos:
                        ev = self.recorded.get(self.pos) or self.recorded[min(p for p in self.recorded if p >= self.pos)]
                        self._nondet(self.pos, "workflow return", f"{ev[0].kind} {ev[0].name!r}")
                    if self.nondet is not None:
                        _saga.block(self, self.nondet)
                    elif isinstance(exc, StopIteration):
                        _saga.complete(self, exc.value)
                    else:
                        _saga.fail(self, exc, cancelled=isinstance(exc, Cancelled))
                    return
                if self.nondet is not None:
                    self.coro.close()
                    _saga.block(self, self.nondet)
                    return
                if not isinstance(cmd, Command) or cmd.run is not self:
                    throw = ConfigError(
                        f"workflow {self.workflow!r} awaited {cmd!r}; workflow code may only await "
                        "ctx.step/sleep/wait_signal/child/gather (no asyncio primitives)"
                    )
                    continue
                if cmd.done:
                    continue
                if self.cancel_pos == cmd.pos and not self.cancelled:
                    _saga.deliver_cancel(self)
                    continue
                self.awaiting = cmd
                self._update_state()
                return
        finally:
            self.driving = False

    def _update_state(self) -> None:
        if self.phase != "running":
            return
        aw = self.awaiting
        if aw is None or aw.kind == "step" or any(c.kind == "step" for c in self.pending.values()):
            state = "running"
        elif aw.kind == "sleep":
            state = "sleeping"
        else:
            state = "waiting"
        if state != self.record.state:
            self.record.state = state
            self.host.mark_dirty(self)

    def detach(self) -> None:
        """Let go of a run leaving memory: freed at once by reference counting, not by a later GC pass.

        Closing a suspended coroutine runs the workflow's finally blocks, as garbage collection
        would; a ctx operation there raises instead of journaling for a run no longer hosted here.
        """
        self.detached = True
        coro, self.coro = self.coro, None
        self.awaiting = None
        self.pending.clear()
        self.waits.clear()
        if coro is not None:
            try:
                coro.close()
            except BaseException:  # noqa: BLE001 - a finally block that awaited or raised while let go
                pass

    def idle(self) -> bool:
        """Waiting only on durable things (timers, signals, children): safe to passivate."""
        if self.phase != "running" or self.steps_inflight or self.pending_commits or self.awaiting is None:
            return False
        return all(c.kind in ("sleep", "signal", "child") for c in self.pending.values())

    # --- commands -----------------------------------------------------------------------------
    def cmd_step(self, name: str, spec: StepSpec) -> Command:
        cmd, evs = self._next("step", name)
        cmd.spec = spec
        failures = 0
        retry_at: float | None = None
        for ev in evs or ():
            if ev.kind == "step_completed":
                self._done(cmd, ev.data)
                self._add_comp(ev.seq, cmd)
                return cmd
            if ev.kind == "step_failed":
                self._done(cmd, None, self._step_error(cmd, ev.data))
                return cmd
            failures += 1
            retry_at = ev.data.get("retry_at")
        cmd.attempt = failures
        self.pending[cmd.pos] = cmd
        if retry_at is not None and retry_at > self.clock_now():
            self._arm(retry_at, cmd.pos, ("retry", failures + 1))
        else:
            self._dispatch(cmd)
        return cmd

    def _dispatch(self, cmd: Command) -> None:
        cmd.attempt += 1
        cmd.inflight = True
        self.steps_inflight += 1
        spec: StepSpec = cmd.spec
        self.host.dispatch_step(self, cmd.pos, cmd.name, cmd.attempt, spec.fn, "step")
        if spec.timeout is not None:
            self._arm(self.clock_now() + spec.timeout, cmd.pos, ("timeout", cmd.attempt))

    def _add_comp(self, seq: int, cmd: Command) -> None:
        if cmd.spec.compensate is not None:
            bisect.insort(self.comps, (seq, cmd.pos, cmd.name, cmd.spec.compensate), key=lambda c: c[0])

    def _step_error(self, cmd: Command, data: dict[str, Any]) -> StepFailed:
        cls = StepTimeout if data.get("timeout") else StepFailed
        err = cls(self.run_id, cmd.name, data.get("attempts", 1), data.get("error", "?"))
        if data.get("exc") is not None:
            err.__cause__ = data["exc"]
        return err

    def on_step_result(self, pos: int, attempt: int, ok: bool, payload: Any) -> None:
        cmd = self.pending.get(pos)
        if cmd is None or cmd.kind != "step" or not cmd.inflight or cmd.attempt != attempt:
            return  # a late result of an abandoned attempt: discarded
        cmd.inflight = False
        self.steps_inflight -= 1
        if ok:
            record, value = payload
            seq = self.host.append_encoded(self, record)
            self._add_comp(seq, cmd)
            self._resolve(cmd, value)
        else:
            self._attempt_failed(cmd, payload)
        self._update_state()

    def _attempt_failed(self, cmd: Command, exc: BaseException) -> None:
        spec: StepSpec = cmd.spec
        retry_at: float | None = None
        try:
            if not isinstance(exc, Cancelled) and spec.retry.should_retry(cmd.attempt, exc):
                retry_at = self.clock_now() + spec.retry.delay(cmd.attempt)
        except BaseException as policy_exc:  # noqa: BLE001 - user code in a custom policy: fails the step
            policy_err = policy_exc if isinstance(policy_exc, ConfigError) else ConfigError(
                f"retry policy's delay_for_attempt({cmd.attempt}) raised {describe_error(policy_exc)}",
                argument="delay_for_attempt",
            )
            policy_err.__context__ = exc
            data = self._exc_data(policy_err)
            data["error"] = f"{describe_error(exc)}; and its {data['error']}"
            self._give_up(cmd, data)
            return
        if retry_at is not None:
            self._append(
                "step_attempt_failed",
                cmd.name,
                cmd.pos,
                {"attempt": cmd.attempt, "error": describe_error(exc), "retry_at": retry_at},
            )
            self._arm(retry_at, cmd.pos, ("retry", cmd.attempt + 1))
            return
        data = self._exc_data(exc)
        data["timeout"] = isinstance(exc, StepTimeout)
        self._give_up(cmd, data)

    def _give_up(self, cmd: Command, data: dict[str, Any]) -> None:
        data["attempts"] = cmd.attempt
        self._append("step_failed", cmd.name, cmd.pos, data)
        self._resolve(cmd, None, self._step_error(cmd, data))

    def on_timer(self, pos: int, tag: Any) -> None:
        cmd = self.pending.get(pos)
        if cmd is None:
            return
        if tag == "sleep" and cmd.kind == "sleep":
            self._append("timer_fired", cmd.name, pos, None)
            self.host.batch.del_timer(cmd.due, self.run_id, pos)  # type: ignore[arg-type]
            self.host.rederivable += 2
            self._resolve(cmd)
        elif tag == "wait" and cmd.kind == "signal":
            self._append("wait_timeout", cmd.name, pos, None)
            self.host.batch.del_timer(cmd.due, self.run_id, pos)  # type: ignore[arg-type]
            self.waits[cmd.name].remove(cmd)
            self._resolve(cmd, None, WaitTimeout(self.run_id, cmd.name, cmd.spec or 0.0))
        elif isinstance(tag, tuple) and cmd.kind == "step":
            what, attempt = tag
            if what == "retry" and not cmd.inflight and cmd.attempt + 1 == attempt:
                self._dispatch(cmd)
            elif what == "timeout" and cmd.inflight and cmd.attempt == attempt:
                spec: StepSpec = cmd.spec
                err = StepTimeout(self.run_id, cmd.name, attempt, f"attempt timed out after {spec.timeout}s")
                self.on_step_result(pos, attempt, False, err)
        self._update_state()

    def cmd_value(self, kind: str, gen: Callable[[], Any]) -> Any:
        cmd, evs = self._next(kind, kind)
        if evs:
            return evs[0].data
        value = gen()
        self._append(kind, kind, cmd.pos, value)
        return value

    def cmd_patched(self, change_id: str) -> bool:
        pos = self.pos
        if pos <= self.max_pos:
            evs = self.recorded.get(pos)
            if evs and evs[0].kind == "patch" and evs[0].name == change_id:
                self.pos += 1
                return True
            return False
        self.pos += 1
        self._append("patch", change_id, pos, None)
        return True

    def set_progress(self, fraction: float) -> None:
        # progress events carry no position: the n-th call matches the n-th recorded one (also when it
        # comes after the last positioned event, where `replaying` is already False)
        if self.progress_replayed < self.progress_recorded:
            self.progress_replayed += 1
            return
        self.record.progress = fraction
        self._append("progress", "", -1, fraction)
        self.host.mark_dirty(self)
