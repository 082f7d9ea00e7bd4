"""Concurrency and rate limits across every process of an engine, with one owner: this dispatcher in
the engine facade (one per data directory). An execution of a limited task waits (durably, passivated
if long) for the dispatch signal; the dispatcher grants slots in (priority desc, enqueue order).

Grants are journaled with the signal (`actorflow.granted`), so after a restart the dispatcher recounts
the executions holding a slot from the journal instead of trusting memory. The rate limit's window
of recent grants is rebuilt from the same records' grant times.

It also places executions that were *gated* at enqueue (no consumer took their queue or
requirements, `actorflow.gated`): each is granted, and its gate entry dropped in the same commit,
once this engine's consumer takes it (e.g. an engine reopened with that queue or capability)."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from storage import WriteBatch

from ._execution import DISPATCH_SIGNAL
from ._model import TaskSpec
from ._status import NS_GATED

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["Dispatcher", "NS_GRANTED"]

NS_GRANTED = "actorflow.granted"
_TICK = 0.01  # seconds between looks while executions wait or hold slots


class Dispatcher:
    def __init__(self, tq: TaskQueue) -> None:
        self.tq = tq
        self.limited = {s.workflow: s for s in tq.specs.values() if s.limited}
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="actorflow-dispatcher", daemon=True)
        self.granted: dict[str, tuple[str, float]] = {}  # run id -> (workflow, grant time)
        self.windows: dict[str, deque[float]] = {w: deque() for w in self.limited}
        self._priority: dict[str, tuple[int, float]] = {}
        self.error: BaseException | None = None

    def start(self) -> None:
        journal = self.tq.engine._runtime().journal
        for run_id, (workflow, at) in journal.kv_scan(NS_GRANTED):
            self.granted[run_id] = (workflow, at)
            if workflow in self.windows:
                self.windows[workflow].append(at)
        for workflow, window in self.windows.items():
            self.windows[workflow] = deque(sorted(window))
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(10.0)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.clear()
            try:
                busy = self.tick()
            except Exception as exc:  # noqa: BLE001 - kept for inspection; the loop goes on
                self.error = exc
                busy = True
            if self._stop:
                return
            self._wake.wait(_TICK if busy else 0.5)

    def _order(self, run_id: str, created: float) -> tuple[int, float]:
        key = self._priority.get(run_id)
        if key is None:
            events = self.tq.engine._runtime().journal.events(run_id, 0, strict=False)[:1]
            opts: dict[str, Any] = {}
            if events and isinstance(events[0].data, dict):
                args: Any = events[0].data.get("args") or ()
                opts = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
            key = self._priority[run_id] = (-int(opts.get("priority", 0)), created)
        return key

    def tick(self) -> bool:
        """Release finished holders, grant free slots; True while anything waits or holds a slot."""
        eng = self.tq.engine
        rt = eng._runtime()
        journal = rt.journal
        now = rt.clock.now()
        done = [rid for rid, rec in zip(self.granted, journal.get_runs(list(self.granted))) if rec is None or rec.finished]
        if done:
            batch = journal.batch()
            for rid in done:
                del self.granted[rid]
                self._priority.pop(rid, None)
                batch.kv_del(NS_GRANTED, rid)
            journal.commit(batch)
        gates = dict(journal.kv_scan(NS_GATED))
        consumer = self.tq.consumer
        known = {s.workflow for s in self.tq.specs.values()}
        waiting: dict[str, list[tuple[tuple[int, float], str]]] = {}
        stale = []
        ids = journal.active_run_ids()
        if gates:
            stale = [rid for rid, rec in zip(gates, journal.get_runs(list(gates))) if self._stale(journal, rid, rec)]
        for rec in journal.get_runs(ids) if (self.limited or gates) else ():
            if rec is None or rec.run_id in self.granted:
                continue
            gate = gates.get(rec.run_id)
            if rec.workflow not in self.limited and (gate is None or rec.workflow not in known):
                continue
            if gate is not None and not consumer.takes(gate[0], gate[1]):
                continue  # stays queued (visible as such) until a consumer that takes it opens
            if rec.state == "waiting" and self._waits_for_dispatch(rec.run_id):
                waiting.setdefault(rec.workflow, []).append((self._order(rec.run_id, rec.created_at), rec.run_id))
        if stale:
            batch = journal.batch()
            for rid in stale:
                batch.kv_del(NS_GATED, rid)
            journal.commit(batch)
        for workflow, queue in waiting.items():
            queue.sort()
            spec = self.limited.get(workflow)
            free = len(queue) if spec is None else self._free(spec, now)
            for _, run_id in queue[:free]:
                self._grant(run_id, workflow, now, run_id in gates, spec is not None)
        return bool(waiting) or bool(self.granted)

    @staticmethod
    def _stale(journal: Any, run_id: str, rec: Any) -> bool:
        """A gate whose execution finished; or, for a chain member not started yet, whose chain did."""
        if rec is not None:
            return bool(rec.finished)
        parent, sep, _ = run_id.rpartition("/m")
        if not sep:
            return True
        chain = journal.get_run(parent)
        return chain is None or bool(chain.finished)

    def _waits_for_dispatch(self, run_id: str) -> bool:
        """Waiting on the dispatch signal (not on another wait of the workflow) and not signalled yet."""
        journal = self.tq.engine._runtime().journal
        return not journal.signals(run_id, DISPATCH_SIGNAL)

    def _free(self, spec: TaskSpec, now: float) -> int:
        free = 1 << 30
        if spec.concurrency is not None:
            holding = sum(1 for w, _ in self.granted.values() if w == spec.workflow)
            free = min(free, spec.concurrency - holding)
        if spec.rate_limit is not None:
            window = self.windows[spec.workflow]
            while window and window[0] <= now - spec.rate_limit.per:
                window.popleft()
            free = min(free, spec.rate_limit.count - len(window))
        return max(0, free)

    def _grant(self, run_id: str, workflow: str, now: float, gated: bool = False, limited: bool = True) -> None:
        def also(batch: WriteBatch) -> None:
            if limited:
                batch.kv_put(NS_GRANTED, run_id, (workflow, now))
            if gated:
                batch.kv_del(NS_GATED, run_id)

        try:  # the grant time travels in the signal: the run's journal keeps it after the slot is released
            self.tq.engine._signal(run_id, DISPATCH_SIGNAL, {"granted_at": now}, also)
        except Exception:  # noqa: BLE001 - finished (e.g. cancelled) meanwhile: nothing to grant
            return
        if limited:
            self.granted[run_id] = (workflow, now)
            self.windows[workflow].append(now)
