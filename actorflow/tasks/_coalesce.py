"""Concurrent threaded `enqueue` calls coalesced into one journal commit and one hand-over to the
run hosts (leader/follower), because a commit wait, a wakeup and a start message per call cost
about four times the CPU of the same executions started as a batch.

Each caller builds (encodes, reads back) its own execution's batch in its own thread, so a bad
payload fails there, before it joins. The first caller to find no round in progress leads: it takes
every batch queued so far, commits them as one batch (the group committer may merge that with
other writers' rounds: one sync), posts the started runs to their hosts back to back (the host
takes them in one round), wakes the callers it carried and hands the lead to a caller that queued
meanwhile. A caller returns once its own execution is durable, with its own run id or error: if the
merged commit fails, each batch is committed alone so one bad batch fails alone (unless the failure
came after the commit, evidence `committed`: then every batch of it reports it, as the journal's
group commit does)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import RunRecord, WriteBatch

if TYPE_CHECKING:
    from .._runtime import Facade

__all__ = ["Coalescer"]

# (runtime, record, journaled argument copy, the create's result: None or the existing record) -> run id
Starter = Callable[["Facade", RunRecord, tuple[Any, ...], "RunRecord | None"], str]


class _Call:
    """One blocked enqueue: its batch, and once its round is over, its outcome."""

    __slots__ = ("rt", "batch", "idx", "rec", "copy", "lock", "done", "lead", "abandoned", "run_id", "exc")

    def __init__(self, rt: Facade, batch: WriteBatch, idx: int, rec: RunRecord, copy: tuple[Any, ...]) -> None:
        self.rt = rt
        self.batch = batch
        self.idx = idx
        self.rec = rec
        self.copy = copy
        self.lock: threading.Lock | None = None  # held until woken; made only for a caller that waits
        self.done = False
        self.lead = False
        self.abandoned = False
        self.run_id = ""
        self.exc: BaseException | None = None


class Coalescer:
    """Leader/follower rounds of threaded enqueues (one per TaskQueue)."""

    def __init__(self, start: Starter) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._busy = False

    def commit(self, rt: Facade, batch: WriteBatch, idx: int, rec: RunRecord, copy: tuple[Any, ...]) -> str:
        """Commit an execution's batch with whatever other callers queued; its run id once durable."""
        call = _Call(rt, batch, idx, rec, copy)
        with self._lock:
            self._pending.append(call)
            lead = not self._busy
            if lead:
                self._busy = True
                call.lead = True
            else:
                call.lock = threading.Lock()
                call.lock.acquire()
        if not lead:
            assert call.lock is not None
            try:
                call.lock.acquire()
            except BaseException:
                self._abandon(call)
                raise
        while not call.done:  # the lead is ours: rounds until our own call is in one
            with self._lock:
                taken, self._pending = self._pending, []
            self._round(taken)
        if call.lead:
            self._pass_lead()
        if call.exc is not None:
            raise call.exc
        return call.run_id

    def _round(self, taken: list[_Call]) -> None:
        """Commit `taken` as one batch, start its runs, wake its callers (not ourselves)."""
        try:
            results = self._commit_all(taken)
            for call, res in zip(taken, results):
                if isinstance(res, BaseException):
                    call.exc = res
                    continue
                try:
                    call.run_id = self._start(call.rt, call.rec, call.copy, res)
                except Exception as exc:  # noqa: BLE001 - RunConflict and friends go to that caller
                    call.exc = exc
        except BaseException as exc:  # noqa: BLE001 - every caller of the round must hear about it
            for call in taken:
                if not call.done and call.exc is None and not call.run_id:
                    call.exc = exc
        for call in taken:
            call.done = True
            if call.lock is not None:
                call.lock.release()  # a caller we carried (never ourselves: the leader has no lock)

    @staticmethod
    def _commit_all(taken: list[_Call]) -> list[Any]:
        """Per call: its create's result, or the exception that failed its batch."""
        rt = taken[0].rt
        if len(taken) == 1:
            call = taken[0]
            try:
                return [rt.journal.commit(call.batch)[call.idx]]
            except Exception as exc:  # noqa: BLE001 - that caller's error
                return [exc]
        merged = rt.journal.batch()
        at = []
        for call in taken:
            at.append(len(merged.ops) + call.idx)
            merged.ops.extend(call.batch.ops)
            merged.creates += call.batch.creates
        try:
            results = rt.journal.commit(merged)
            return [results[i] for i in at]
        except Exception as exc:  # noqa: BLE001 - find the bad batch: each alone
            if getattr(exc, "evidence", {}).get("committed"):
                return [exc] * len(taken)
        out: list[Any] = []
        for call in taken:
            try:
                out.append(rt.journal.commit(call.batch)[call.idx])
            except Exception as exc1:  # noqa: BLE001 - that caller's error
                out.append(exc1)
        return out

    def _pass_lead(self) -> None:
        """Our call is done: the next live waiter leads the next round, else nobody does."""
        with self._lock:
            nxt = next((c for c in self._pending if not c.abandoned), None)
            if nxt is None:
                self._pending = []  # only interrupted callers' batches: nobody waits for them
                self._busy = False
                return
            nxt.lead = True
            lock, nxt.lock = nxt.lock, None  # a round that carries it later has nobody to wake
        assert lock is not None
        lock.release()

    def _abandon(self, call: _Call) -> None:
        """A waiting caller was interrupted: its batch may still commit; the lead must not stop here."""
        with self._lock:
            call.abandoned = True
            handed = call.lead and not call.done
        if handed:
            self._pass_lead()
