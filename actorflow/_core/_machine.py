"""RunMachine: one workflow run as a pure state machine; `activate(message) -> Completion`.

The shape is temporalio's `WorkflowInstance.activate(activation) -> completion`: the host feeds a
run the messages addressed to it and carries out what the completion lists; the machine itself
never touches the journal, a host, a thread or a clock object (time and the codec come in through
`Env`). So a run can be driven from a test with hand-made messages, and replay, saga, waits and
children are all here, in one place.
"""

from __future__ import annotations

from typing import Any

from .._context import Command, WorkflowContext
from .._messages import (
    ArmTimer,
    CancelRun,
    ChildCreated,
    ChildDone,
    CompDone,
    LoadRun,
    Rearm,
    SignalArrived,
    StartRun,
    StepDone,
    StepProgress,
    TimerFired,
)
from ..errors import Cancelled, ConfigError
from ._completion import ARM, REPLY, Completion
from ._saga import Saga
from ._steps import Steps
from ._waits import Waits

__all__ = ["RunMachine"]


class RunMachine(Steps, Waits, Saga):
    """A workflow run: its replayed coroutine, pending commands, inbox and saga, driven by messages.

    Built from the run's record and journal history (`events`, plus undelivered `signals`), it
    replays on its first activation (`StartRun` or `LoadRun`): operations already recorded resolve
    from the journal without effects; the first new one issues its effects.
    """

    __slots__ = ()

    def activate(self, msg: Any) -> Completion:
        """Apply one message; the returned Completion (reused: read it before the next call) lists,
        in order, the journal writes and the effects to release once they are durable. Its ops can
        refer back to this machine (an armed timer's Command): a host clears them once consumed, so
        a machine that leaves memory is in no reference cycle."""
        out = self.out
        self.ops.clear()
        out.dirty = False
        out.rederivable = 0
        out.first_seq = self.next_seq
        t = type(msg)
        if t is StepDone:
            self.on_step_result(msg.pos, msg.attempt, msg.ok, msg.payload)
        elif t is TimerFired:
            self.on_timer(msg.pos, msg.tag)
        elif t is SignalArrived:
            self.on_signal(msg.name, msg.seq, msg.payload)
        elif t is CompDone:
            self.on_comp_result(msg.pos, msg.ok, msg.error)
        elif t is ChildDone:
            self.on_child_done(msg.pos, msg.kind, msg.data)
        elif t is ChildCreated:
            self.on_child_created(msg.pos, msg.child_id, msg.conflict)
        elif t is CancelRun:
            ok = self.request_cancel()
            if msg.reply is not None:
                self.ops.append((REPLY, msg.reply, ok))
        elif t is StartRun or t is LoadRun:
            if self.phase == "new":
                self._start()
        elif t is Rearm:
            self._rearm()
        elif t is StepProgress:
            if self.phase == "running" and not self.cancelled:
                self.set_progress(msg.fraction)
        else:
            raise TypeError(f"run {self.run_id!r} cannot take a {t.__name__} message")
        return out

    def _start(self) -> None:
        """Create the coroutine and run it to its first pending operation (replaying what is known)."""
        self.phase = "running"
        if self.record.state == "pending" or self.record.state == "blocked":
            self.record.state = "running"
            self.record.error = None
            self.out.dirty = True
        try:
            self.coro = self.fn(WorkflowContext(self), *self.args)
        except Exception as exc:  # bad arguments for the workflow signature
            self._fail(exc)
            return
        self._drive()

    def _drive(self, throw: BaseException | None = None) -> None:
        """Run the workflow's code until it awaits an operation that is not resolved yet."""
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
                        self._block(self.nondet)
                    elif isinstance(exc, StopIteration):
                        self._complete(exc.value)
                    else:
                        self._fail(exc, cancelled=isinstance(exc, Cancelled))
                    return
                if self.nondet is not None:
                    self.coro.close()
                    self._block(self.nondet)
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
                    self._deliver_cancel()
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
        # a child being created elsewhere counts as running (nothing journaled says it waits yet: a
        # recovery must load the run, whose replay asks the child's owner again)
        if aw is None or aw.kind == "step" or any(c.kind == "step" or (c.kind == "child" and c.inflight)
                                                  for c in self.pending.values()):
            state = "running"
        elif aw.kind == "sleep":
            state = "sleeping"
        else:
            state = "waiting"
        if state != self.record.state:
            self.record.state = state
            self.out.dirty = True

    def _rearm(self) -> None:
        """The timer service lost its memory: arm again every timer this run waits on."""
        now = self.env.now()
        for cmd in self.pending.values():
            if cmd.kind in ("sleep", "signal") and cmd.due is not None:
                tag = "sleep" if cmd.kind == "sleep" else "wait"
                self.ops.append((ARM, ArmTimer(cmd.due, self.run_id, cmd.pos, tag, True), None))
            elif cmd.kind == "step" and not cmd.inflight:
                self.ops.append((ARM, ArmTimer(now, self.run_id, cmd.pos, ("retry", cmd.attempt + 1)), None))
            elif cmd.kind == "step" and cmd.spec.timeout is not None:
                self.ops.append((ARM, ArmTimer(now + cmd.spec.timeout, self.run_id, cmd.pos, ("timeout", cmd.attempt)), None))

    def idle(self) -> bool:
        """Waiting only on durable things (timers, signals, children): safe to passivate (the host
        also keeps a run whose journal writes are not yet durable)."""
        if self.phase != "running" or self.steps_inflight or self.awaiting is None:
            return False
        return all(c.kind in ("sleep", "signal") or (c.kind == "child" and not c.inflight) for c in self.pending.values())
