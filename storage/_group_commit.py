"""Group commit: many writers' batches merged into one transaction and one sync, futures settled in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Literal

from actorflow.errors import ConfigError, StorageError

from ._commit_future import CommitFuture, settle_all
from ._journal import WriteBatch

__all__ = ["CommitFuture", "GroupCommitter"]

_OVERLAP_MIN = 8  # futures: a round with fewer settles them inline, whatever they cost
# callbacks worth handing over: CPU time over half a sync's (benchmarks/journal.py, 64 actor writers,
# callbacks / sync: 8 appends outstanding each 1.4 -> 141k events/s against 98k inline; 4 each 0.7 ->
# 100k against 75k; 2 each 0.37 -> +5%; 1 each 0.3 -> -25%)
_OVERLAP_CALLBACKS_PER_SYNC = 0.5


# telemetry's hook: called after each group commit with (seconds, batches, ops); set by actorflow.telemetry
commit_observer: Callable[[float, int, int], None] | None = None


def check_overlap(overlap: object) -> None:
    """ConfigError unless `overlap` is True (adaptive), False (off) or "always"."""
    if not (isinstance(overlap, bool) or overlap == "always"):
        raise ConfigError(
            f"commit overlap must be True (adaptive), False (off) or 'always', not {overlap!r}",
            overlap=repr(overlap),
        )


class _SyncWaiter:
    """A thread blocked in `GroupCommitter.commit`: woken exactly once, with its outcome or to lead a commit.

    Woken waiters form a relay: each wakes the next as its first act, so the threads of one commit get
    the GIL one after another instead of all at once (a thundering herd costs several context
    switches per thread; the relay costs about one).
    """

    __slots__ = ("lock", "result", "exc", "done", "next", "lead", "abandoned")

    lock: threading.Lock  # held until woken; made only for a caller that has to wait (not the leader)

    def __init__(self) -> None:
        self.result: Any = None
        self.exc: BaseException | None = None
        self.done = False
        self.next: _SyncWaiter | None = None
        self.lead = False
        self.abandoned = False


class GroupCommitter:
    """Merges queued batches into one transaction and one sync (group commit).

    Backends provide `apply(batches) -> list[results per batch]` (runs in one transaction,
    durable on return). If a merged transaction fails, its batches are retried one by one, so one
    bad batch fails alone. Batches are committed in submission order.

    Two ways in, one queue:
    - `submit(batch) -> Future`: never blocks; a writer thread commits what only futures wait for.
    - `commit(batch)`: blocks the caller, which may itself do the commit (leader/follower): the
      first caller to find no commit in progress leads one round (takes the queue, applies it,
      hands the lead to the next blocked caller, wakes the others as a relay). This spares the
      writer-thread hand-off per commit and the herd of wakeups per event.

    Futures are `CommitFuture`s, resolved in submission order. Their callbacks may `submit()` but not
    `commit()`. They run on the committing thread before the lead passes on, unless they take more
    than about half a sync (see below).

    Overlap. Only the sync runs without the GIL, and writers that resubmit from done callbacks
    (run hosts, actor-style writers) cannot queue their next batches before their callbacks run. If
    those callbacks take more than about half a sync, the round's futures go to a completer thread
    instead, which runs them while the next round syncs:
    - the completer starts a round's callbacks only while no round is being built (`syncing()`
      opens that gate, so two threads do not fight over the GIL while the writer builds a
      transaction);
    - the writer waits (`linger`, bounded) for the callbacks it will carry, and takes half of all
      outstanding batches, so the writers settle into two even cohorts: one's callbacks run while
      the other's batches sync. A sync costs about as much for 50 events as for 500, so uneven
      cohorts waste syncs, and much cheaper callbacks gain nothing: those stay inline;
    - a completer holding the GIL keeps it for the whole switch interval (5 ms, longer than a
      round's callbacks), so when it sees the writer woken for what it submitted, it steps aside at
      the round's midpoint until that round is built: this is what splits one cohort into two.
    Measured (`python -m benchmarks.journal`, 64 actor-style writers, 8 appends outstanding each, 2
    cores, ext4): 101k -> 140k acknowledged events/s. `overlap=False` turns it off; `overlap="always"`
    hands every round over whatever its callbacks cost (tests use it to show that a writer does not
    depend on the thread its callbacks run on).
    """

    # slots: past 30 attributes an instance dict stops sharing its keys and every attribute read on the
    # commit path slows down (measured: ~1 us per one-event commit)
    __slots__ = (
        "_apply", "_max_ops", "_lock", "_cond", "_relay", "_queue", "_queued_ops", "_queued_sync", "_busy",
        "_closed", "_writer_idle", "_tls", "_c_cond", "_c_queue", "_c_gate", "_c_handed", "_c_done",
        "_c_started", "_c_half", "_c_pending", "_c_closed", "_sync_began", "_timing", "_sync_time",
        "_cb_cost", "_linger", "_thread", "_name", "_overlap", "_always", "_c_thread",
    )

    def __init__(
        self,
        apply: Callable[[list[WriteBatch]], list[list[Any]]],
        name: str,
        max_ops: int = 20000,
        overlap: bool | Literal["always"] = True,
        linger: float = 0.005,
    ) -> None:
        check_overlap(overlap)
        self._apply = apply
        self._max_ops = max_ops
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._relay = threading.Lock()
        self._queue: list[tuple[WriteBatch, Any]] = []
        self._queued_ops = 0
        self._queued_sync = 0  # blocked callers (_SyncWaiter) in the queue: a round without any takes the fast path
        self._busy = False  # a round is in progress, or the lead has been handed to a waiter
        self._closed = False
        self._writer_idle = False  # the writer thread sleeps on _cond until a submit wakes it
        self._tls = threading.local()
        # the completer settles big rounds' futures (runs their callbacks) while the next round syncs
        self._c_cond = threading.Condition(threading.Lock())
        self._c_queue: list[tuple[list[CommitFuture], list[Any], list[bool] | None]] = []
        self._c_gate = True  # False while a round's transaction is being built (Python that must not wait for the GIL)
        self._c_handed = 0  # rounds handed to the completer ...
        self._c_done = 0  # ... and settled by it
        self._c_started = 0  # ... and begun by it
        self._c_half = False  # the round it is on has had the first half of its callbacks run
        self._c_pending = 0  # futures handed to it and not settled yet
        self._c_closed = False
        self._sync_began = 0.0  # when the round being committed started its sync (0: none yet)
        self._timing = False  # ... and whether that is timed
        self._sync_time = 0.0  # how long a sync takes: recent minimum, rising slowly (see _note_sync)
        self._cb_cost = 0.0  # moving average: seconds of callbacks per settled future
        self._linger = linger
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._name = name
        self._overlap = overlap is not False
        self._always = overlap == "always"  # every round's futures, whatever their callbacks cost
        self._c_thread: threading.Thread | None = None  # started at the first round it is worth it for

    # --- entry points ---------------------------------------------------------------------------
    def submit(self, batch: WriteBatch) -> Future[list[Any]]:
        fut = CommitFuture()
        fut._committing = self._tls
        with self._lock:
            if self._closed:
                raise StorageError("journal is closed")
            q = self._queue
            q.append((batch, fut))
            self._queued_ops += len(batch.ops)
            if self._writer_idle and not self._busy:
                self._writer_idle = False
                self._cond.notify()
        return fut

    def commit(self, batch: WriteBatch, timeout: float | None = None) -> list[Any]:
        """Commit `batch` and return its per-op results once durable."""
        if timeout is not None:
            return self.submit(batch).result(timeout)
        if getattr(self._tls, "committing", False):
            raise StorageError("journal commit() called from a commit callback would deadlock; use submit()")
        with self._lock:
            if self._closed:
                raise StorageError("journal is closed")
            solo = not self._busy and not self._queue
            if solo:
                self._busy = True
        if solo:
            return self._solo(batch)
        w = _SyncWaiter()
        with self._lock:
            if self._closed:
                raise StorageError("journal is closed")
            q = self._queue
            q.append((batch, w))
            self._queued_ops += len(batch.ops)
            self._queued_sync += 1
            lead = not self._busy
            if lead:
                self._busy = True
            else:  # before anyone can take it from the queue and wake it
                w.lock = threading.Lock()
                w.lock.acquire()
        if not lead:
            try:
                w.lock.acquire()
            except BaseException:
                self._abandon(w)
                raise
            if w.next is not None:
                self._wake(w.next)
            if not w.lead:
                if w.exc is not None:
                    raise w.exc
                return w.result  # type: ignore[no-any-return]
        try:
            while not w.done:
                with self._lock:
                    taken, sync = self._take()
                self._round(taken, sync, w)
        finally:
            if self._c_thread is not None and not self._c_gate:
                self._open_gate()
        if w.exc is not None:
            raise w.exc
        return w.result  # type: ignore[no-any-return]

    # --- the rounds -----------------------------------------------------------------------------
    def _solo(self, batch: WriteBatch) -> list[Any]:
        """A round of one blocked caller that found nothing queued and no round in progress (caller
        holds the lead): the usual case of a lone sequential writer, such as a run host committing
        a step's result inline. The same as `_round` for that queue, without its bookkeeping (no
        waiter, no futures, nothing to time); the lead passes on as there."""
        tls = self._tls
        tls.committing = True
        try:
            self._c_gate = False
            self._timing = False
            observer = commit_observer
            t_obs = time.perf_counter() if observer is not None else 0.0
            try:
                return self._apply([batch])[0]
            finally:
                if observer is not None:
                    observer(time.perf_counter() - t_obs, 1, len(batch.ops))
                with self._lock:
                    nxt = self._next_leader()
                    if nxt is None:
                        self._busy = False
                        if self._queue or self._closed:
                            self._writer_idle = False
                            self._cond.notify_all()
                if nxt is not None:
                    nxt.lead = True
                    self._wake(nxt)
        finally:
            tls.committing = False
            if self._c_thread is not None and not self._c_gate:
                self._open_gate()

    def _take(self, max_batches: int = 0) -> tuple[list[tuple[WriteBatch, Any]], bool]:
        """The longest queue head within max_ops (at least one batch), and whether it holds a blocked
        caller; caller holds the lock.

        `_queued_ops` and `_queued_sync` (counted at submit) let the usual case - everything fits -
        take the whole queue without looking at each batch."""
        q = self._queue
        if self._queued_ops <= self._max_ops and (not max_batches or len(q) <= max_batches):
            self._queue = []
            self._queued_ops = 0
            sync = self._queued_sync != 0
            self._queued_sync = 0
            return q, sync
        n = 0
        i = 0
        while i < len(q):
            size = len(q[i][0])
            if i and (n + size > self._max_ops or i == max_batches):
                break
            n += size
            i += 1
        taken = q[:i]
        del q[:i]
        self._queued_ops = sum(len(b) for b, _ in q)  # recounted: a batch may have grown after its submit
        self._queued_sync = sum(type(x) is _SyncWaiter for _, x in q)
        return taken, any(type(x) is _SyncWaiter for _, x in taken)

    def _one_by_one(self, batches: list[WriteBatch], exc: BaseException) -> tuple[list[Any], list[bool]]:
        """The merged transaction failed: retry each batch alone so one bad batch fails alone.

        An interrupt (KeyboardInterrupt, SystemExit: not an Exception) is no bad batch: it fails
        the rest of the round as it is, without retrying into whatever was interrupted; nor is a
        failure after the transaction committed (evidence `committed`: its sync failed)."""
        if len(batches) == 1 or not isinstance(exc, Exception) or getattr(exc, "evidence", {}).get("committed"):
            return [exc] * len(batches), [False] * len(batches)
        values: list[Any] = []
        oks: list[bool] = []
        for i, b in enumerate(batches):
            try:
                values.append(self._apply([b])[0])
                oks.append(True)
            except Exception as exc1:  # noqa: BLE001 - its waiter must hear about it
                values.append(exc1)
                oks.append(False)
            except BaseException as stop:  # noqa: BLE001 - every remaining waiter must hear about it
                rest = len(batches) - i
                values += [stop] * rest
                oks += [False] * rest
                break
        return values, oks

    def _round(self, taken: list[tuple[WriteBatch, Any]], sync: bool, own: _SyncWaiter | None) -> None:
        """Commit `taken`, pass the lead on, deliver outcomes (caller holds the lead, not the lock)."""
        tls = self._tls
        tls.committing = True
        try:
            oks: list[bool] | None = None
            values: list[Any]
            self._c_gate = False
            # time the sync only where futures may follow (a lone blocked caller's round has none)
            timed = self._timing = self._overlap and (not sync or len(taken) > 1)
            observer = commit_observer  # telemetry (actorflow.telemetry); None: not a cycle spent
            t_obs = time.perf_counter() if observer is not None else 0.0
            try:
                values = self._apply([b for b, _ in taken])
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                values, oks = self._one_by_one([b for b, _ in taken], exc)
            if observer is not None:
                observer(time.perf_counter() - t_obs, len(taken), sum(len(b) for b, _ in taken))
            if self._c_thread is not None:
                self._c_gate = False  # shut again: this thread will hand over and build the next round
            if timed and self._sync_began:
                self._note_sync(time.perf_counter() - self._sync_began)
                self._sync_began = 0.0
            futures: list[CommitFuture] = []
            fvalues: list[Any] = values
            foks: list[bool] | None = oks
            relay: list[_SyncWaiter] = []
            if not sync:
                futures = [x for _, x in taken]
            else:
                fvalues = []
                foks = None if oks is None else []
                for i, (_, x) in enumerate(taken):
                    ok = True if oks is None else oks[i]
                    v: Any = values[i]
                    if type(x) is _SyncWaiter:
                        if ok:
                            x.result = v
                        else:
                            x.exc = v
                        x.done = True
                        if x is not own:
                            relay.append(x)
                    else:
                        futures.append(x)
                        fvalues.append(v)
                        if foks is not None:
                            foks.append(ok)
            # futures first, before the lead passes on: a round committed by another thread next must
            # not get its callbacks run (or handed over) before this round's
            if futures:
                n = len(futures)
                if not (
                    self._overlap
                    and (
                        self._c_done != self._c_handed
                        or self._always
                        or (
                            n >= _OVERLAP_MIN
                            and (n + len(self._queue)) * self._cb_cost > _OVERLAP_CALLBACKS_PER_SYNC * self._sync_time > 0
                        )
                    )
                    and self._hand_over(futures, fvalues, foks)
                ):
                    if n < _OVERLAP_MIN:  # cannot go over whatever they cost: not worth a clock syscall
                        settle_all(futures, fvalues, foks)
                    else:
                        t0 = time.thread_time()
                        settle_all(futures, fvalues, foks)
                        self._note_cb_cost(time.thread_time() - t0, n)
            with self._lock:
                nxt = self._next_leader() if own is None or own.done else own
                if nxt is None:
                    self._busy = False
                    if self._queue or self._closed:
                        self._writer_idle = False
                        self._cond.notify_all()
            if nxt is not None and nxt is not own:
                nxt.lead = True
                relay.insert(0, nxt)  # first, so the next commit's sync overlaps this relay
            if relay:
                for a, b in zip(relay, relay[1:]):
                    a.next = b
                self._wake(relay[0])
        finally:
            tls.committing = False

    def _next_leader(self) -> _SyncWaiter | None:
        """The first blocked caller whose batch the next round will take (lock held)."""
        n = 0
        for i, (b, x) in enumerate(self._queue):
            n += len(b)
            if i and n > self._max_ops:
                return None
            if type(x) is _SyncWaiter and not x.abandoned:
                return x
        return None

    def _wake(self, w: _SyncWaiter | None) -> None:
        while w is not None:
            with self._relay:
                if not w.abandoned:
                    w.lock.release()
                    return
            if w.lead:  # it gave up waiting: its lead goes back to the writer thread
                self._resign()
            w = w.next

    def _abandon(self, w: _SyncWaiter) -> None:
        """A blocked caller was interrupted: make sure the relay and the lead do not stop with it."""
        with self._relay:
            if not w.lock.acquire(False):
                w.abandoned = True
                return
        if w.next is not None:
            self._wake(w.next)
        if w.lead:
            self._resign()

    def _resign(self) -> None:
        with self._lock:
            self._busy = False
            self._writer_idle = False
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._busy or (not self._queue and not self._closed):
                    self._writer_idle = True
                    self._open_gate()
                    self._cond.wait()
                self._writer_idle = False
                if not self._queue:
                    return
                self._busy = True
                lingering = self._lingering()
                if not lingering:
                    taken, sync = self._take(self._cohort())
            if lingering:
                # the completer is running callbacks, which resubmit: wait for (half of) them, so this
                # round takes a cohort of batches instead of a sliver, and each sync carries as many
                self._open_gate()
                deadline = time.monotonic() + self._linger
                with self._c_cond:
                    while self._lingering():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._c_cond.wait(left)
                self._c_gate = False
                with self._lock:
                    taken, sync = self._take(self._cohort())
            self._round(taken, sync, None)

    def _cohort(self) -> int:
        """How many queued batches the next round takes: with futures at the completer, half of all the
        writers' (theirs and the queue's), so the two cohorts even out - a sync costs about the same for
        50 events as for 500, and uneven cohorts waste syncs; 0 (no limit) otherwise."""
        pending = self._c_pending
        return (len(self._queue) + pending + 1) // 2 if pending else 0

    def _note_sync(self, seconds: float) -> None:
        """Track what a sync costs, not what it waited for: with the completer running, the wall time from
        `syncing()` to the writer's next bytecode includes waiting for the GIL, so a lower reading wins at
        once and a higher one moves the estimate only a little."""
        st = self._sync_time
        self._sync_time = seconds if (not st or seconds < st) else st + (seconds - st) * 0.05

    def _note_cb_cost(self, seconds: float, n: int) -> None:
        """Average CPU seconds of callbacks per future (thread CPU time: waiting for the GIL is not cost)."""
        cost = self._cb_cost
        self._cb_cost = seconds / n if not cost else cost + (seconds / n - cost) * 0.25

    def _hand_over(self, futures: list[CommitFuture], values: list[Any], oks: list[bool] | None) -> bool:
        """Queue a round's futures for the completer (False once it is closed: settle them here).

        Worth it when the writers' callbacks (this round's, and those that queued the next) take more
        than about half a sync: these then run during the next round's sync, and the writers settle
        into two cohorts, one's callbacks running while the other's batches sync."""
        with self._c_cond:  # in order behind whatever the completer has not settled yet
            if self._c_closed:
                return False
            if self._c_thread is None:
                self._c_thread = threading.Thread(target=self._complete, name=self._name + "-completer", daemon=True)
                self._c_thread.start()
            self._c_queue.append((futures, values, oks))
            self._c_handed += 1
            self._c_pending += len(futures)
            if self._c_gate:
                self._c_cond.notify_all()
        return True

    def _lingering(self) -> bool:
        """Whether the completer is partway through a round whose callbacks the next round should carry."""
        done = self._c_done
        if done < self._c_handed - 1:
            return True  # a round before the last one handed over is not settled yet
        return done < self._c_started and not self._c_half  # on the last one, before its midpoint

    def _open_gate(self) -> None:
        if not self._c_gate:
            self._c_gate = True
            if self._c_done != self._c_handed:
                with self._c_cond:
                    self._c_cond.notify_all()

    def syncing(self) -> None:
        """The round's transaction is built and about to be synced (without the GIL): let the completer run."""
        if self._timing:
            self._sync_began = time.perf_counter()
            if not self._c_gate:
                self._open_gate()

    def _complete(self) -> None:
        """Completer thread: settle handed-over rounds in order, starting one only while no round is being built."""
        self._tls.committing = True
        cond = self._c_cond
        while True:
            with cond:
                while not self._c_queue or not self._c_gate:
                    if self._c_closed and not self._c_queue:
                        return
                    cond.wait()
                futures, values, oks = self._c_queue.pop(0)
                self._c_started += 1
                self._c_half = False
            t0 = time.thread_time()
            half = len(futures) // 2
            if half:
                settle_all(futures[:half], values[:half], None if oks is None else oks[:half])
                with cond:
                    self._c_half = True
                    self._c_pending -= half
                    cond.notify_all()
                    if not self._busy and self._queue and not self._closed:
                        # the writer was woken for what these callbacks submitted but cannot get the
                        # GIL from this thread: step aside until it has built its round and syncs it
                        self._c_gate = False
                        while not self._c_gate:
                            cond.wait()
            settle_all(futures[half:], values[half:], None if oks is None else oks[half:])
            self._note_cb_cost(time.thread_time() - t0, len(futures))
            with cond:
                self._c_done += 1
                self._c_pending -= len(futures) - half
                cond.notify_all()

    def close(self) -> None:
        """Refuse new batches, commit every queued one, stop the writer thread."""
        with self._cond:
            self._closed = True
            self._writer_idle = False
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._c_cond:
            self._c_closed = True
            self._c_gate = True
            self._c_cond.notify_all()
            completer = self._c_thread
        if completer is not None and threading.current_thread() is not completer:
            completer.join()
