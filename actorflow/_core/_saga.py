"""How a run ends: cancellation, saga compensation in reverse order, completion, and blocking."""

from __future__ import annotations

import traceback
from typing import Any

from .._messages import CancelRun
from ..errors import Cancelled, NondeterminismError, PayloadError
from ._completion import BLOCKED, DEL_TIMER, DISPATCH, FINISHED, SEND
from ._state import RunState, describe_error, failure_text

__all__ = ["Saga"]


class Saga(RunState):
    __slots__ = ()

    def request_cancel(self) -> bool:
        """Journal the cancel request and raise Cancelled at the awaited operation; False if already over."""
        if self.phase != "running":
            return self.phase == "compensating"
        if self.cancelled:
            return True
        pos = self.awaiting.pos if self.awaiting is not None else self.pos
        self._append("cancel_requested", "", pos, None)
        self._deliver_cancel()
        if self.awaiting is not None and self.awaiting.done:
            self.awaiting = None
            self._drive()
        return True

    def _deliver_cancel(self) -> None:
        """Resolve every pending operation with Cancelled (late step results are then discarded)."""
        self.cancelled = True
        for cmd in list(self.pending.values()):
            if cmd.kind == "step" and cmd.inflight:
                cmd.inflight = False
                self.steps_inflight -= 1
            elif cmd.kind in ("sleep", "signal") and cmd.due is not None:
                self.ops.append((DEL_TIMER, cmd.due, cmd.pos))
            elif cmd.kind == "child":
                self.ops.append((SEND, CancelRun(cmd.spec)))
            self._done(cmd, None, Cancelled(self.run_id))
        self.waits.clear()

    def _complete(self, value: Any) -> None:
        """The workflow returned: journal its (serializable) result."""
        try:
            self._append("run_completed", "", -1, value)
        except PayloadError as exc:
            self._fail(exc)
            return
        self._finish("completed", value, None)

    def _fail(self, exc: BaseException, cancelled: bool = False) -> None:
        """The workflow raised or was cancelled: compensate completed steps in reverse order, then end."""
        self.phase = "compensating"
        self.final = ("cancelled" if cancelled else "failed", exc)
        self.record.state = "running"
        self.comp_queue = list(reversed(self.comps))
        self._next_compensation()

    def _next_compensation(self) -> None:
        """Dispatch the next compensation not yet journaled, or journal the run's end."""
        while self.comp_queue:
            seq, pos, name, fn = self.comp_queue.pop(0)
            done = self.comp_done.get(pos)
            if done is not None:
                if done.kind == "compensation_failed":
                    self.comp_errors.append(f"{name}: {done.data['error']}")
                continue
            self.ops.append((DISPATCH, (self.run_id, pos, name, 1, fn, "comp")))
            return
        assert self.final is not None
        state, exc = self.final
        data = self._exc_data(exc)
        if self.comp_errors:
            data["compensation_errors"] = list(self.comp_errors)
        error = failure_text(data)
        self._append("run_cancelled" if state == "cancelled" else "run_failed", "", -1, data)
        self._finish(state, None, error, data)

    def on_comp_result(self, pos: int, ok: bool, error: BaseException | None) -> None:
        """Journal one compensation's outcome (failures are recorded and reported, not swallowed)."""
        if self.phase != "compensating":
            return
        name = next((c[2] for c in self.comps if c[1] == pos), "")
        if ok or error is None:
            self._append("compensation_completed", name, pos, None)
        else:
            tb = "".join(traceback.format_exception(error))[-2000:]
            self._append("compensation_failed", name, pos, {"error": describe_error(error), "tb": tb})
            self.comp_errors.append(f"{name}: {describe_error(error)}")
        self._next_compensation()

    def _finish(self, state: str, value: Any, error: str | None, data: Any = None) -> None:
        """Set the final state and ask the host to report the outcome (released once durable)."""
        self.phase = "finished"
        self.record.state = state
        self.record.error = error
        if state == "completed":
            self.record.progress = 1.0
        self.out.dirty = True
        self.ops.append((FINISHED, state, value, data))
        self.detach()

    def _block(self, err: NondeterminismError) -> None:
        """Replay diverged: hold the run `blocked` with the evidence, running no more of its code."""
        self.phase = "blocked"
        for cmd in self.pending.values():
            cmd.inflight = False
        self.pending.clear()
        self.steps_inflight = 0
        self._append("run_blocked", "", -1, {"error": str(err), "seq": err.seq, "expected": err.expected, "recorded": err.recorded})
        self.record.state = "blocked"
        self.record.error = str(err)
        self.out.dirty = True
        self.ops.append((BLOCKED,))
        self.detach()

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
