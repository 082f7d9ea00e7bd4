"""Interacting with runs and waiting for them: the Engine's signal, cancel, status, result and
monitor methods (a mixin of `Engine`).

A result is taken from the notifier's memory of recent outcomes when it is there, else a waiter is
put in place *before* the one journal read, so no finish can fall between the read and the wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import Event, Journal, RunRecord, SignalResult, WriteBatch
from storage._journal import check_run_id

from ._aio import LoopBridge
from ._core import failure_text
from ._messages import CancelRun, SignalArrived
from ._runtime import Facade
from ._types import RunState, RunStatus
from .errors import Cancelled, ConfigError, JournalCorrupt, RunFinished, RunNotFound, WorkflowFailed

__all__ = ["RunMethods"]


def _expire(fut: asyncio.Future[tuple[str, Any, Any]], run_id: str, timeout: float) -> None:
    """aresult's deadline passed: fail its wait (the run itself goes on)."""
    if not fut.done():
        fut.set_exception(TimeoutError(f"run {run_id!r} did not finish within {timeout}s"))


class RunMethods:
    """`signal`, `cancel`, `status`, `runs`, `history`, `result`, `aresult`, `monitor`, `amonitor` of `Engine`."""

    if TYPE_CHECKING:
        _rt: Facade | None
        journal: Journal | None

        def _runtime(self) -> Facade: ...
        def _bridge(self) -> LoopBridge: ...

    # --- interacting with runs -----------------------------------------------------------------
    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Queue a signal for the run; durable when this returns, delivered in order per name."""
        self._signal(run_id, name, payload)

    def _signal(self, run_id: str, name: str, payload: Any, also: Callable[[WriteBatch], None] | None = None) -> None:
        """`signal`, with `also` adding writes that must commit with it (the control inbox's)."""
        check_run_id(run_id)
        rt = self._runtime()
        batch = rt.journal.batch()
        batch.put_signal(run_id, str(name), payload)
        if also is not None:
            also(batch)
        copy = rt.codec.readback(batch.ops[0][3], f"payload of signal {name!r}", payload)  # before durable
        res = rt.journal.commit(batch)[0]
        if res == SignalResult.NOT_FOUND:
            raise RunNotFound(run_id)
        if isinstance(res, str):
            raise RunFinished(run_id, res)
        rt.post(SignalArrived(run_id, str(name), res, copy))

    def cancel(self, run_id: str, timeout: float | None = 30.0) -> bool:
        """Cancel a run: its pending operation raises Cancelled, compensations run. False if it had ended."""
        rt = self._runtime()
        rec = self._record(run_id)
        if rec.finished:
            return False
        request, fut = rt.notifier.request()
        rt.post(CancelRun(run_id, request))
        try:
            return bool(fut.result(timeout))
        finally:
            rt.notifier.forget(request)

    def _record(self, run_id: str) -> RunRecord:
        check_run_id(run_id)
        journal = self._rt.journal if self._rt is not None else self.journal
        if journal is None:
            raise ConfigError("the engine is not open")
        rec = journal.get_run(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        return rec

    def status(self, run_id: str) -> RunStatus:
        return RunStatus.from_record(self._record(run_id))

    def runs(self, state: RunState | str | None = None, workflow: str | None = None) -> list[RunStatus]:
        journal = self._runtime().journal
        st = None if state is None else RunState(state).value
        return [RunStatus.from_record(r) for r in journal.runs(st, workflow)]

    def history(self, run_id: str) -> list[Event]:
        """The run's journal, decoded; a record that cannot be decoded shows as an `undecodable`
        event with the error, so a damaged run's history is still readable up to and past it."""
        self._record(run_id)
        return self._runtime().journal.events(run_id, strict=False)

    # --- results -------------------------------------------------------------------------------
    def _final(self, run_id: str, rec: RunRecord) -> tuple[str, Any, Any]:
        try:
            ev = self._runtime().final_event(run_id)
        except JournalCorrupt as exc:  # the outcome's record is damaged: the run record still says how it ended
            return (rec.state, None, {"error": f"{rec.error} (final event unreadable: {exc})"})
        if ev is None:
            return (rec.state, None, {"error": rec.error})
        if ev.kind == "run_completed":
            return ("completed", ev.data, None)
        return ("cancelled" if ev.kind == "run_cancelled" else "failed", None, ev.data)

    def _outcome(self, run_id: str, outcome: tuple[str, Any, Any]) -> Any:
        state, value, data = outcome
        if state == "completed":
            return value
        data = data or {}
        if state == "cancelled":
            comp = data.get("compensation_errors")
            raise Cancelled(run_id, f"cancelled (compensation failed: {'; '.join(comp)})" if comp else "cancelled")
        raise WorkflowFailed(run_id, failure_text(data), data.get("exc"))

    def _settled(self, rt: Facade, run_id: str) -> tuple[str, Any, Any] | None:
        """The outcome if the run has finished (from memory, else the journal); RunNotFound if unknown."""
        recent = rt.notifier.recent.get(run_id)
        if recent is not None:
            return recent
        rec = self._record(run_id)
        return self._final(run_id, rec) if rec.finished else None

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's return value; raises WorkflowFailed, Cancelled or TimeoutError."""
        return self._result(run_id, timeout, None)

    def _result(self, run_id: str, timeout: float | None, fresh: tuple[Facade, int] | None) -> Any:
        check_run_id(run_id)
        rt = self._runtime()
        outcome = rt.notifier.recent.get(run_id)
        if outcome is None:
            box: list[tuple[str, Any, Any]] = []
            done = threading.Event()

            def cb(o: tuple[str, Any, Any]) -> None:
                box.append(o)
                done.set()

            outcome, known_live = rt.notifier.wait(run_id, cb, fresh)
            try:
                if outcome is None and not known_live:
                    # one journal read, after the waiter is in place: no finish can fall in between
                    outcome = self._settled(rt, run_id)
                if outcome is None:
                    if not done.wait(timeout):
                        raise TimeoutError(f"run {run_id!r} did not finish within {timeout}s")
                    outcome = box[0]
            finally:
                rt.notifier.remove_waiter(run_id, cb)
        return self._outcome(run_id, outcome)

    async def aresult(self, run_id: str, timeout: float | None = None) -> Any:
        """`result()` for asyncio callers."""
        return await self._aresult(run_id, timeout, None)

    async def _aresult(self, run_id: str, timeout: float | None, fresh: tuple[Facade, int] | None) -> Any:
        check_run_id(run_id)
        rt = self._runtime()
        outcome = rt.notifier.recent.get(run_id)
        if outcome is None:
            bridge = self._bridge()
            fut: asyncio.Future[tuple[str, Any, Any]] = bridge.loop.create_future()
            cb = bridge.waiter(fut)
            outcome, known_live = rt.notifier.wait(run_id, cb, fresh)
            try:
                if outcome is None and not known_live:
                    outcome = self._settled(rt, run_id)
                if outcome is None:
                    # a timer on the future rather than asyncio.wait_for, which wraps it in a task of its own
                    expiry = None if timeout is None else bridge.loop.call_later(timeout, _expire, fut, run_id, timeout)
                    try:
                        outcome = await fut
                    finally:
                        if expiry is not None:
                            expiry.cancel()
            finally:
                rt.notifier.remove_waiter(run_id, cb)
        return self._outcome(run_id, outcome)
