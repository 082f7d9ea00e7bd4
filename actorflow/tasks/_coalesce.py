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

    __slots__ = ("rt", "batch", "idx", "rec", "copy", "lock", "done", "lead", "abandoned", "next", "run_id", "exc")

    def __init__(self, rt: Facade, batch: WriteBatch, idx: int, rec: RunRecord, copy: tuple[Any, ...]) -> None:
        self.rt = rt
        self.batch = batch
        self.idx = idx
        self.rec = rec
        self.copy = copy
        self.lock = threading.Lock()  # held until the caller is woken (done, or handed the lead)
        self.done = False
        self.lead = False
        self.abandoned = False
        self.next: _Call | None = None  # the caller it wakes when woken (a relay)
        self.run_id = ""
        self.exc: BaseException | None = None


class Coalescer:
    """Leader/follower rounds of threaded enqueues (one per TaskQueue).

    Callers of a round are woken as a relay (each wakes the next as its first act, as the journal's
    group commit does), so they take the GIL one after another instead of all at once."""

    def __init__(self, start: Starter) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._relay = threading.Lock()
        self._pending: list[_Call] = []
        self._busy = False

    def commit(self, rt: Facade, batch: WriteBatch, idx: int, rec: RunRecord, copy: tuple[Any, ...]) -> str:
        """Commit an execution's batch with whatever other callers queued; its run id once durable."""
        call = _Call(rt, batch, idx, rec, copy)
        call.lock.acquire()
        with self._lock:
            self._pending.append(call)
            if not self._busy:
                self._busy = call.lead = True
        if not call.lead:
            try:
                call.lock.acquire()
            except BaseException:
                self._abandon(call)
                raise
            if call.next is not None:
                self._wake(call.next)
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
                if call.exc is None and not call.run_id:
                    call.exc = exc
        relay = [call for call in taken if not call.lead]  # a leader (we, or one handed the lead) is awake
        for call in taken:
            call.done = True
        for a, b in zip(relay, relay[1:]):
            a.next = b
        if relay:
            self._wake(relay[0])

    def _wake(self, call: _Call | None) -> None:
        """Wake `call`, or the first caller after it in the relay that still waits."""
        while call is not None:
            with self._relay:
                if not call.abandoned:
                    call.lock.release()
                    return
            call = call.next

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
        """Our call is done: the next waiting caller leads the next round, else nobody does."""
        while True:
            with self._lock:
                nxt = next((c for c in self._pending if not c.abandoned), None)
                if nxt is None:
                    self._pending = []  # only interrupted callers' batches: nobody waits for them
                    self._busy = False
                    return
                nxt.lead = True
            with self._relay:
                if not nxt.abandoned:
                    nxt.lock.release()
                    return

    def _abandon(self, call: _Call) -> None:
        """A waiting caller was interrupted: its batch may still commit; neither the relay nor the lead
        may stop with it."""
        with self._relay:
            woken = call.lock.acquire(False)
            if not woken:
                call.abandoned = True  # nobody wakes it now; its wakers skip it
        if woken:
            if call.done:
                self._wake(call.next)
            elif call.lead:
                self._pass_lead()
