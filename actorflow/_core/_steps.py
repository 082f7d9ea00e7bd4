"""Steps: dispatch, journaled results, retries on a timer, attempt timeouts; and the journaled values
(now/random/uuid4), patches and progress that need no outside answer."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from .._context import Command, StepSpec
from ..errors import Cancelled, ConfigError, StepFailed, StepTimeout, WaitTimeout
from ._completion import ABANDON, APPEND, DEL_TIMER, DISPATCH
from ._state import RunState, describe_error

__all__ = ["Steps"]


class Steps(RunState):
    __slots__ = ()

    def cmd_step(self, name: str, spec: StepSpec) -> Command:
        """Replay a recorded outcome, or dispatch the step (or wait for its recorded retry time)."""
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
        if retry_at is not None and retry_at > self.env.now():
            self._arm(retry_at, cmd.pos, ("retry", failures + 1))
        else:
            self._dispatch(cmd)
        return cmd

    def _dispatch(self, cmd: Command) -> None:
        cmd.attempt += 1
        cmd.inflight = True
        self.steps_inflight += 1
        spec: StepSpec = cmd.spec
        self.ops.append((DISPATCH, (self.run_id, cmd.pos, cmd.name, cmd.attempt, spec.fn, "step")))
        if spec.timeout is not None:
            self._arm(self.env.now() + spec.timeout, cmd.pos, ("timeout", cmd.attempt))

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
        """A step attempt ended: ok with (encoded step_completed record, value), else its error."""
        cmd = self.pending.get(pos)
        if cmd is None or cmd.kind != "step" or not cmd.inflight or cmd.attempt != attempt:
            return  # a late result of an abandoned attempt: discarded
        cmd.inflight = False
        self.steps_inflight -= 1
        if ok:
            record, value = payload
            seq = self.next_seq
            self.ops.append((APPEND, seq, record, "step_completed", cmd.name, pos))
            self.next_seq = seq + 1
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
                retry_at = self.env.now() + spec.retry.delay(cmd.attempt)
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
        """A timer fell due: a sleep ends, a wait times out, a step retries or its attempt times out."""
        cmd = self.pending.get(pos)
        if cmd is None:
            return
        if tag == "sleep" and cmd.kind == "sleep":
            self._append("timer_fired", cmd.name, pos, None)
            self.ops.append((DEL_TIMER, cmd.due, pos))
            self.out.rederivable += 2
            self._resolve(cmd)
        elif tag == "wait" and cmd.kind == "signal":
            self._append("wait_timeout", cmd.name, pos, None)
            self.ops.append((DEL_TIMER, cmd.due, pos))
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
                # a step worker process still inside it would hold its worker for good: stop it
                self.ops.append((ABANDON, (self.run_id, pos, attempt)))
        self._update_state()

    # --- values journaled on first run, read back on replay ---------------------------------------
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
        self.out.dirty = True
