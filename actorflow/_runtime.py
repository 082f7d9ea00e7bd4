"""Services the actors of one engine share in-process: journal, clock, step pool, registry, notifier."""

from __future__ import annotations

import queue
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from storage import Journal, RunRecord

from ._clock import Clock
from ._steps import StepPool
from ._types import RunStatus
from .errors import WorkflowNotRegistered

__all__ = ["Runtime", "Notifier"]


class Notifier:
    """Where run hosts report finished runs and status changes to waiting callers (thread-safe)."""

    RECENT = 50_000  # outcomes of recently finished runs kept for result() without a journal read

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.recent: OrderedDict[str, tuple[str, Any, Any]] = OrderedDict()
        self.evictions = 0  # outcomes dropped from `recent` so far
        self._waiters: dict[str, list[Callable[[tuple[str, Any, Any]], None]]] = {}
        self._monitors: dict[str, list[Callable[[RunStatus], None]]] = {}

    def watching(self, run_id: str) -> bool:
        return run_id in self._monitors

    def wait(
        self, run_id: str, cb: Callable[[tuple[str, Any, Any]], None], fresh: tuple[Runtime, int] | None
    ) -> tuple[tuple[str, Any, Any] | None, bool]:
        """(outcome if already in `recent`, else None with `cb` registered; whether the run is known
        to be unfinished). `fresh`, from a handle of a run this runtime created: if no outcome left
        `recent` since, a run not in it has not finished, and no journal read is needed to know."""
        with self._lock:
            outcome = self.recent.get(run_id)
            if outcome is not None:
                return outcome, False
            self._waiters.setdefault(run_id, []).append(cb)
            return None, fresh is not None and fresh[0].notifier is self and fresh[1] == self.evictions

    def remove_waiter(self, run_id: str, cb: Callable[[tuple[str, Any, Any]], None]) -> None:
        with self._lock:
            cbs = self._waiters.get(run_id)
            if cbs and cb in cbs:
                cbs.remove(cb)
                if not cbs:
                    del self._waiters[run_id]

    def add_monitor(self, run_id: str, cb: Callable[[RunStatus], None]) -> None:
        with self._lock:
            self._monitors.setdefault(run_id, []).append(cb)

    def remove_monitor(self, run_id: str, cb: Callable[[RunStatus], None]) -> None:
        with self._lock:
            cbs = self._monitors.get(run_id)
            if cbs and cb in cbs:
                cbs.remove(cb)
                if not cbs:
                    del self._monitors[run_id]

    def fail_all(self, state: str, data: Any) -> None:
        """The runtime cannot go on: wake every waiter with a failure instead of letting it hang."""
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for cbs in waiters.values():
            for w in cbs:
                w((state, None, data))

    def status_changed(self, status: RunStatus) -> None:
        for cb in list(self._monitors.get(status.run_id, ())):
            cb(status)

    def finished(self, run_id: str, record: RunRecord, state: str, value: Any, data: Any) -> None:
        outcome = (state, value, data)
        with self._lock:
            recent = self.recent
            recent[run_id] = outcome
            if len(recent) > self.RECENT:
                recent.popitem(last=False)
                self.evictions += 1
            waiters = self._waiters.pop(run_id, None)
            monitors = list(self._monitors.get(run_id, ()))
        if monitors:
            status = RunStatus.from_record(record)
            for cb in monitors:
                cb(status)
        if waiters:
            for w in waiters:
                w(outcome)


class Runtime:
    """Everything an engine's actors share; in embedded mode they reach it directly."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        workflows: dict[str, Callable[..., Any]],
        *,
        shards: int = 2,
        passivate_after: float | None = 60.0,
        step_threads: int = 32,
        timer_horizon: float = 30.0,
    ) -> None:
        self.journal = journal
        self.codec = journal.codec
        self.clock = clock
        self.workflows = workflows
        self.shards = shards
        self.passivate_after = passivate_after
        self.timer_horizon = timer_horizon
        # items for the actors; only the holder of pump_lock takes them out (so they are handled in order)
        self.queue: deque[tuple[Any, ...]] = deque()
        self.pump_lock = threading.Lock()
        self.wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()  # wakes the pump thread
        self.helper: Callable[[], None] | None = None  # set while the actor runtime runs (see post_and_help)
        self.notifier = Notifier()
        self.steps = StepPool(self, step_threads)
        self.addresses: dict[str, Any] = {}
        self.local_hosts: dict[int, Any] = {}  # shard -> its host actor in this process (direct delivery)
        self.timer_next_due = 0.0
        self.timer_heap_due: float | None = None
        self.commits_pending = 0
        self.closing = False
        self.names: dict[Callable[..., Any], str] = {}
        self.fatal: str | None = None
        # called on the pump thread at every housekeeping tick (about once a second); each must be cheap
        self.housekeepers: list[Callable[[], None]] = []

    def post(self, item: tuple[Any, ...]) -> None:
        """Hand an item to the actors (any thread may call this)."""
        self.queue.append(item)
        self.wake()

    def wake(self) -> None:
        """Make sure queued items are taken: wake the pump thread unless a holder of the lock will."""
        if not self.pump_lock.locked():  # else its holder looks at the queue again after letting go
            self.wakeups.put(None)

    def post_and_help(self, item: tuple[Any, ...]) -> None:
        """Hand an item to the actors and, if no other thread is running them, run them here."""
        self.queue.append(item)
        self.help()

    def help(self) -> None:
        """Run the actors on this thread for a round if no other thread is (else its holder takes
        what is queued). For threads that would otherwise wait for what their item causes - a
        step worker, a caller of start(): doing the actors' work here saves waking the pump
        thread and, for a step worker, the next step's hand-off too (see ActorRuntime)."""
        helper = self.helper
        if helper is not None:
            helper()
        else:
            self.wake()

    def shard_of(self, run_id: str) -> int:
        return zlib.crc32(run_id.encode()) % self.shards if self.shards > 1 else 0

    def workflow_name(self, wf: Any) -> str:
        name = wf if isinstance(wf, str) else self.names.get(wf, getattr(wf, "__qualname__", repr(wf)))
        if name not in self.workflows:
            raise WorkflowNotRegistered(str(name), list(self.workflows))
        return str(name)

    # only the pump thread changes the count (hosts run there); other threads just read it
    def commit_started(self) -> None:
        self.commits_pending += 1

    def commit_finished(self) -> None:
        self.commits_pending -= 1

    def busy(self) -> bool:
        return bool(self.commits_pending or self.steps.inflight or self.queue)

    def final_outcome(self, run_id: str, rec: RunRecord) -> tuple[str, Any]:
        """The outcome of a finished run as a child-done message carries it."""
        ev = self.final_event(run_id)
        if rec.state == "completed":
            return ("child_completed", ev.data if ev is not None else None)
        data = dict(ev.data) if ev is not None and isinstance(ev.data, dict) else {"error": rec.error}
        data["run_id"] = run_id
        data["cancelled"] = rec.state == "cancelled"
        return ("child_failed", data)

    def final_event(self, run_id: str) -> Any:
        """A finished run's final event: its last one (nothing is journaled after a run ends)."""
        last = self.journal.last_seq(run_id)
        if last < 0:
            return None
        ev = self.journal.events(run_id, last)[0]
        return ev if ev.kind in ("run_completed", "run_failed", "run_cancelled") else None
