"""Concurrency and rate limits across every process of an engine, with one owner: this dispatcher in
the engine facade (one per data directory). An execution of a limited task waits (durably, passivated
if long) for the dispatch signal; the dispatcher grants slots in (priority desc, enqueue order).

Grants are journaled with the signal (`actorflow.granted`), so after a restart the dispatcher recounts
the executions holding a slot from the journal instead of trusting memory. The rate limit's window
of recent grants is rebuilt from the same records' grant times."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from storage import WriteBatch

from ._execution import DISPATCH_SIGNAL
from ._model import TaskSpec

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
        waiting: dict[str, list[tuple[tuple[int, float], str]]] = {}
        for rec in journal.get_runs(journal.active_run_ids()):
            if rec is None or rec.workflow not in self.limited or rec.run_id in self.granted:
                continue
            if rec.state == "waiting" and self._waits_for_dispatch(rec.run_id):
                waiting.setdefault(rec.workflow, []).append((self._order(rec.run_id, rec.created_at), rec.run_id))
        for workflow, queue in waiting.items():
            spec = self.limited[workflow]
            queue.sort()
            for _, run_id in queue[: self._free(spec, now)]:
                self._grant(run_id, workflow, now)
        return bool(waiting) or bool(self.granted)

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

    def _grant(self, run_id: str, workflow: str, now: float) -> None:
        def also(batch: WriteBatch) -> None:
            batch.kv_put(NS_GRANTED, run_id, (workflow, now))

        try:
            self.tq.engine._signal(run_id, DISPATCH_SIGNAL, None, also)
        except Exception:  # noqa: BLE001 - finished (e.g. cancelled) meanwhile: nothing to grant
            return
        self.granted[run_id] = (workflow, now)
        self.windows[workflow].append(now)
