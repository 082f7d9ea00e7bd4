"""A host's bound on resident runs: least-recently-active eviction, and admission of the rest.

Passivation by age (`passivate_after`) keeps memory low only when runs arrive slowly enough to age
out: a burst - one `start_many` of a million sleepers, a crowd of timers firing at once, a recovery
with a million runs in flight - would otherwise build every run machine (coroutine, context,
commands: ~3-4 KB each) at the same moment. Memory freed after such a peak is mostly not given
back to the OS (pymalloc frees an arena only when all of it is empty; LMDB keeps the dirty pages
of its largest transaction for reuse), so the peak, not the settled count, sets the process's RSS.

So each host keeps at most `cap` runs in memory. A run that would come in (a start, or a message
that wakes a passivated run) while the host is full first makes room: idle runs (waiting only on
durable things) whose writes are durable leave memory at once, least recently active first. If
none can leave (all have steps in flight, or writes not yet durable), the run waits, in arrival
order, in the host's admission queue: just its id (it is loaded from the journal when admitted)
and the waking messages addressed to it, in order. Room appears when a commit lands or a run
finishes, and the host admits as many as fit, so a burst passes through in cap-sized cohorts
whose memory is reused from one cohort to the next.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._trim import trimmer

if TYPE_CHECKING:
    from ._core import RunMachine
    from ._runtime import Runtime

__all__ = ["Residency", "ResidentCap", "StartGate", "host_cap", "residency_of"]

STALL = 5.0  # seconds start_many waits for hosts that take none of its runs, then goes on regardless
_LOW_WATER = 0.75  # making room evicts down to this share of the cap: one scan frees many places


@dataclass(frozen=True, slots=True)
class Residency:
    """How many runs an engine holds in memory (`Engine.residency()`)."""

    resident: int  # run machines in memory now
    waiting: int  # runs waiting for room (the hosts' admission queues)
    peak_resident: int  # the most held at once since open() (sum of the hosts' high-water marks: an upper bound)
    peak_waiting: int  # the most waiting for room at once since open() (likewise)
    cap: int | None  # Engine(max_resident=...); None: no cap (also with passivate_after=None)
    evicted_early: int  # idle runs that left memory before passivate_after, to make room


def host_cap(cap: int | None, shards: int, shard: int) -> int | None:
    """This shard's share of the engine's cap (the shares add up to it; at least 1 each)."""
    if cap is None:
        return None
    return max(1, cap // shards + (1 if shard < cap % shards else 0))


def residency_of(hosts: Iterable[ResidentCap], cap: int | None) -> Residency:
    hosts = list(hosts)
    return Residency(
        resident=sum(len(h.runs) for h in hosts),
        waiting=sum(len(h.admission) for h in hosts),
        peak_resident=sum(h.peak_resident for h in hosts),
        peak_waiting=sum(h.peak_waiting for h in hosts),
        cap=cap if any(h.cap is not None for h in hosts) else None,
        evicted_early=sum(h.cap_evictions for h in hosts),
    )


class StartGate:
    """Paces a big start_many to the hosts (embedded engines): the next group of runs is committed
    only once the runs posted before, still in the queue or waiting for room, number at most the
    cap. So a burst reaches the hosts as waves do, each run started from its message (no journal
    read), and the waiting room stays small. Hosts that take none for `STALL` seconds (all their
    runs busy, e.g. in steps that wait for these very starts) stop the pacing for that call."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.posted = 0  # runs posted by start_many that no host has taken in yet (started or held)
        self.waiters = 0

    def add(self, n: int) -> None:
        with self._cond:
            self.posted += n

    def taken(self, n: int) -> None:
        with self._cond:
            self.posted -= n
            if self.waiters:
                self._cond.notify_all()

    def progressed(self) -> None:
        """A host admitted waiting runs: wake a paced start_many, if any, to look again."""
        if self.waiters:
            with self._cond:
                self._cond.notify_all()

    def wait_room(self, limit: int, waiting: Any) -> bool:
        """Block while more than `limit` posted runs are not in memory yet (`waiting()`: the hosts'
        admission queues); False if they stalled (the caller stops pacing)."""
        cond = self._cond
        with cond:
            self.waiters += 1
            try:
                last, since = -1, time.monotonic()
                while True:
                    backlog = self.posted + waiting()
                    if backlog <= limit:
                        return True
                    now = time.monotonic()
                    if backlog != last:
                        last, since = backlog, now
                    elif now - since > STALL:
                        return False
                    cond.wait(0.25)
            finally:
                self.waiters -= 1


class ResidentCap:
    """The residency half of RunHost (which sets up `runs`, `dirty`, `touched` and `rt`)."""

    rt: Runtime
    runs: dict[str, RunMachine]
    dirty: dict[str, RunMachine]
    touched: dict[str, RunMachine]
    commits_in_flight: int

    def _init_residency(self, cap: int | None) -> None:
        self.cap = cap
        self.admission: deque[str] = deque()  # run ids waiting for room, in arrival order
        self.held: dict[str, list[Any] | None] = {}  # run id -> waking messages held for it (None: none)
        self.peak_resident = 0  # the most runs this host held at once
        self.peak_waiting = 0  # the most runs waiting for room at once
        self.cap_evictions = 0  # runs that left memory early to make room
        self._changes = 0  # commits landed and runs gone: a full host with nothing to evict looks again then
        self._next_scan = 0  # ... once _changes reaches this
        self._backoff = 1

    # --- asked by the host before a run comes into memory ---------------------------------------
    def full(self) -> bool:
        """Whether a run coming in now must wait (after making room if any can be made)."""
        cap = self.cap
        if cap is None:
            return False
        if self.admission:
            return True  # runs waiting already go first (arrival order)
        return len(self.runs) >= cap and not self.make_room()

    def hold(self, run_id: str, msg: Any) -> None:
        """Queue `msg` (None: a start, loaded from the journal) for a run that waits for room."""
        if run_id in self.held:
            msgs = self.held[run_id]
            if msg is not None:
                if msgs is None:
                    self.held[run_id] = [msg]
                else:
                    msgs.append(msg)
            return
        self.held[run_id] = None if msg is None else [msg]
        self.admission.append(run_id)
        if len(self.admission) > self.peak_waiting:
            self.peak_waiting = len(self.admission)

    def entered(self) -> None:
        """A run came into memory (the high-water mark is the bound the tests check)."""
        n = len(self.runs)
        if n > self.peak_resident:
            self.peak_resident = n

    def changed(self) -> None:
        """A commit landed or a run left memory: a full host may find room again."""
        self._changes += 1

    # --- making room ----------------------------------------------------------------------------
    def make_room(self) -> bool:
        """Evict idle, durable runs, least recently active first, down to the low-water mark.

        One scan frees a quarter of the cap, so the cost per admitted run stays constant; a scan that
        found too little is repeated only after more commits landed or runs left (twice as many
        each time, up to a tenth of the cap): a host full of busy runs does not scan per message."""
        cap = self.cap
        if cap is None:
            return True
        if self._changes < self._next_scan:
            return len(self.runs) < cap
        runs, dirty, touched = self.runs, self.dirty, self.touched
        target = len(runs) - int(cap * _LOW_WATER)
        if target > 0:
            idle = [
                (run.last_active, run_id)
                for run_id, run in runs.items()
                if not run.pending_commits and run_id not in dirty and run_id not in touched and run.idle()
            ]
            gone = [run_id for _, run_id in (heapq.nsmallest(target, idle) if target < len(idle) else idle)]
            for run_id in gone:
                runs.pop(run_id).detach()
            self.rt.journal.forget(gone)  # its cache entries would outlive the burst (Journal.forget)
            self.cap_evictions += min(target, len(idle))
            trimmer.passivated(min(target, len(idle)))  # an eviction wave: give its memory back (_trim)
            if len(idle) * 8 < target:  # (nearly) fruitless: back off
                self._next_scan = self._changes + self._backoff
                self._backoff = min(2 * self._backoff, max(1, cap // 10))
                return len(runs) < cap
        self._backoff = 1
        self._next_scan = self._changes
        return len(runs) < cap

    def admit(self) -> int:
        """Bring waiting runs into memory while there is room; returns how many came in."""
        cap, admission = self.cap, self.admission
        if cap is None or not admission:
            return 0
        if len(self.runs) >= cap and not self.make_room():
            return 0
        room = cap - len(self.runs)
        taken: list[str] = []
        while admission and len(taken) < room:
            taken.append(admission.popleft())
        held = self.held
        self.bring_in(taken)
        if not admission and len(held) == 0 and held is self.held:
            self.held = {}  # a dict keeps its largest table when emptied: a burst's would stay
        return len(taken)

    def bring_in(self, run_ids: list[str]) -> None:  # pragma: no cover - RunHost provides it
        raise NotImplementedError
