"""Services the actors of one engine share in-process: journal, clock, step pool, registry, notifier."""

from __future__ import annotations

import itertools
import queue
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from storage import Codec, Journal, RunRecord

from ._clock import Clock
from ._residency import StartGate
from ._steps import StepPool
from ._types import RunStatus
from .errors import ActorflowError, WorkflowNotRegistered

__all__ = ["Facade", "Runtime", "Notifier"]


class Notifier:
    """Where run hosts report finished runs and status changes to waiting callers (thread-safe)."""

    RECENT = 50_000  # outcomes of recently finished runs kept for result() without a journal read

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.recent: OrderedDict[str, tuple[str, Any, Any]] = OrderedDict()
        self.evictions = 0  # outcomes dropped from `recent` so far
        self._waiters: dict[str, list[Callable[[tuple[str, Any, Any]], None]]] = {}
        self._monitors: dict[str, list[Callable[[RunStatus], None]]] = {}
        self._requests: dict[int, Future[Any]] = {}
        self._next_request = itertools.count(1)

    def request(self) -> tuple[int, Future[Any]]:
        """A request id for a message that wants a `Reply`, and the future its reply settles."""
        fut: Future[Any] = Future()
        rid = next(self._next_request)
        with self._lock:
            self._requests[rid] = fut
        return rid, fut

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None) -> None:
        """Settle request `request_id` (a reply to a request nobody waits for any more is dropped)."""
        with self._lock:
            fut = self._requests.pop(request_id, None)
        if fut is None or fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    def forget(self, request_id: int) -> None:
        """The requester gave up waiting (timeout)."""
        with self._lock:
            self._requests.pop(request_id, None)

    def watching(self, run_id: str) -> bool:
        return run_id in self._monitors

    def wait(
        self, run_id: str, cb: Callable[[tuple[str, Any, Any]], None], fresh: tuple[Facade, int] | None
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
            requests, self._requests = self._requests, {}
        for cbs in waiters.values():
            for w in cbs:
                w((state, None, data))
        for fut in requests.values():
            if not fut.done():
                fut.set_exception(ActorflowError(str(data.get("error") if isinstance(data, dict) else data)))

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


class Facade(Protocol):
    """What the Engine facade needs of its actor system, embedded (`Runtime`) or multiprocess."""

    journal: Journal
    clock: Clock
    notifier: Notifier
    names: dict[Callable[..., Any], str]
    fatal: str | None

    @property
    def codec(self) -> Codec: ...

    def post(self, item: Any) -> None: ...

    def shard_of(self, run_id: str) -> int: ...

    def post_and_help(self, item: Any) -> None: ...

    def quiet(self) -> bool:
        """No step runs here: a caller waiting for what it posted may run the actors itself."""
        ...

    def final_event(self, run_id: str) -> Any: ...


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
        step_processes: int = 0,
        max_resident: int | None = None,
    ) -> None:
        self.journal = journal
        self._codec = journal.codec
        self.clock = clock
        self.workflows = workflows
        self.shards = shards
        self.passivate_after = passivate_after
        self.max_resident = max_resident  # runs in memory at most, over all hosts (see _residency)
        # start_many's pace (_residency.StartGate): runs it posted that no host has taken yet
        self.start_gate = StartGate()
        self.timer_horizon = timer_horizon
        # items for the actors; only the holder of pump_lock takes them out (so they are handled in order)
        self.queue: deque[Any] = deque()
        self.pump_lock = threading.Lock()
        self.wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()  # wakes the pump thread
        self.helper: Callable[[], None] | None = None  # set while the actor runtime runs (see post_and_help)
        self.notifier = Notifier()
        self.steps = StepPool(self, step_threads, step_processes)
        self.addresses: dict[str, Any] = {}
        self.local_hosts: dict[int, Any] = {}  # shard -> its host actor in this process (direct delivery)
        self.timer_next_due = 0.0  # when the pump must tick the timer actor (embedded; see on_timer_due)
        self.timer_heap_due: float | None = None
        # set by a multiprocess shard: the timer actor reports its next due time here (any thread)
        # and the shard's actor ticks it on a Thespian wakeup, instead of the pump reading timer_next_due
        self.on_timer_due: Callable[[float], None] | None = None
        self.commits_pending = 0
        self.closing = False
        self.names: dict[Callable[..., Any], str] = {}
        self.fatal: str | None = None
        # the shards whose hosts live in this process (all of them when embedded), and where items
        # for the others go (set by a multiprocess shard: out to their processes)
        self.local_shards: tuple[int, ...] = tuple(range(shards))
        # shards whose runs this runtime's journal holds (None: all); set when member nodes own shards
        # (a child run of another shard is then asked of its owner: _elsewhere)
        self.env_shards: frozenset[int] | None = None
        self.remote: Callable[[int, list[Any]], None] | None = None
        # called on the pump thread at every housekeeping tick (about once a second); each must be cheap
        self.housekeepers: list[Callable[[], None]] = []

    def owns(self, run_id: str) -> bool:
        """Whether the run's host lives in this process."""
        return self.remote is None or self.shard_of(run_id) in self.local_shards

    @property
    def codec(self) -> Codec:
        return self._codec

    def quiet(self) -> bool:
        return not self.steps.inflight

    def post(self, item: Any) -> None:
        """Hand an item to the actors (any thread may call this)."""
        self.queue.append(item)
        self.wake()

    def wake(self) -> None:
        """Make sure queued items are taken: wake the pump thread unless a holder of the lock will."""
        if not self.pump_lock.locked():  # else its holder looks at the queue again after letting go
            self.wakeups.put(None)

    def post_and_help(self, item: Any) -> None:
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
        return final_outcome(self.journal, run_id, rec)

    def final_event(self, run_id: str) -> Any:
        return final_event(self.journal, run_id)


def final_outcome(journal: Journal, run_id: str, rec: RunRecord) -> tuple[str, Any]:
    """The outcome of a finished run as a child-done message carries it."""
    ev = final_event(journal, run_id)
    if rec.state == "completed":
        return ("child_completed", ev.data if ev is not None else None)
    data = dict(ev.data) if ev is not None and isinstance(ev.data, dict) else {"error": rec.error}
    data["run_id"] = run_id
    data["cancelled"] = rec.state == "cancelled"
    return ("child_failed", data)


def final_event(journal: Journal, run_id: str) -> Any:
    """A finished run's final event: its last one (nothing is journaled after a run ends)."""
    last = journal.last_seq(run_id)
    if last < 0:
        return None
    ev = journal.events(run_id, last)[0]
    return ev if ev.kind in ("run_completed", "run_failed", "run_cancelled") else None
