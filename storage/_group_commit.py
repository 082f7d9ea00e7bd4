"""Group commit: many writers' batches merged into one transaction and one sync, futures settled in order."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import _base as _fb
from typing import Any, Callable

from actorflow.errors import StorageError

from ._journal import WriteBatch

__all__ = ["CommitFuture", "GroupCommitter"]

_PENDING = _fb.PENDING
_RUNNING = _fb.RUNNING
_CANCELLED = _fb.CANCELLED
_CANCELLED_AND_NOTIFIED = _fb.CANCELLED_AND_NOTIFIED
_FINISHED = _fb.FINISHED
_LOGGER = _fb.LOGGER
_OVERLAP_MIN = 8  # futures: a round with fewer settles them inline, whatever they cost
# every CommitFuture's state changes under this one lock (held for a few bytecodes, never while waiting
# or running callbacks), so a round settles all its futures with one acquisition
_STATE_LOCK = threading.Lock()


class CommitFuture(Future):  # type: ignore[type-arg]
    """The `concurrent.futures.Future` that `submit()` returns, made cheap for one-event commits.

    A plain Future builds a `threading.Condition` (an RLock, a deque, bound methods) per instance
    and takes it for every state change, callback registration and `done()`. Here state changes
    and callback registration take one shared lock for a few bytecodes, reads of a final state take
    none, and the Condition is built only for a thread that has to block on the future
    (`result()`/`exception()` before it is done, `concurrent.futures.wait`, `as_completed`).
    Everything else behaves as the base class: asyncio.wrap_future, cancel(), callbacks in
    registration order (run at once if already done), InvalidStateError on a second set.

    Why the lazy Condition is safe: it is created under the state lock, and a setter looks for it
    after changing the state under that lock. So either the Condition existed before the change
    (the setter notifies under it) or it was created after (its creator then sees the final state
    before it would wait).
    """

    def __init__(self) -> None:  # noqa: D107 - no Condition yet, see the class docstring
        self._state = _PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self._cond: threading.Condition | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _STATE_LOCK:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    def _announce(self) -> None:
        """After the state became final: wake blocked threads (if any made a Condition), call back."""
        cond = self._cond
        if cond is not None:
            with cond:
                if self._state == _FINISHED:
                    ok = self._exception is None
                    for waiter in self._waiters:
                        waiter.add_result(self) if ok else waiter.add_exception(self)
                cond.notify_all()
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)

    def _settle(self, ok: bool, value: Any) -> bool:
        with _STATE_LOCK:
            if self._state != _PENDING and self._state != _RUNNING:
                return False
            if ok:
                self._result = value
            else:
                self._exception = value
            self._state = _FINISHED
        self._announce()
        return True

    def set_result(self, result: Any) -> None:
        if not self._settle(True, result):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._settle(False, exception):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        with _STATE_LOCK:
            if self._state == _PENDING or self._state == _RUNNING:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def cancel(self) -> bool:
        with _STATE_LOCK:
            state = self._state
            if state == _RUNNING or state == _FINISHED:
                return False
            if state == _CANCELLED or state == _CANCELLED_AND_NOTIFIED:
                return True
            self._state = _CANCELLED
        self._announce()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with _STATE_LOCK:
            state = self._state
            if state == _PENDING:
                self._state = _RUNNING
                return True
            if state == _CANCELLED:
                self._state = _CANCELLED_AND_NOTIFIED
        if state == _CANCELLED:
            with self._condition:
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
            return False
        raise RuntimeError("Future in unexpected state")

    # reads: a final state never changes again, so reading one needs no lock (a torn read is
    # impossible: the result is stored before the state that publishes it)
    def done(self) -> bool:
        state = self._state
        return state == _FINISHED or state == _CANCELLED or state == _CANCELLED_AND_NOTIFIED

    def cancelled(self) -> bool:
        state = self._state
        return state == _CANCELLED or state == _CANCELLED_AND_NOTIFIED

    def running(self) -> bool:
        return self._state == _RUNNING

    def result(self, timeout: float | None = None) -> Any:
        if self._state == _FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        return super().exception(timeout)


def _settle_all(futures: list[CommitFuture], values: list[Any], oks: list[bool] | None) -> None:
    """Resolve `futures` in order - every state change under one lock acquisition - then, in the
    same order, wake their blocked threads and run their callbacks. A future its caller cancelled
    stays cancelled (its batch is committed anyway)."""
    settled: list[CommitFuture] = []
    add = settled.append
    with _STATE_LOCK:
        if oks is None:
            for f, v in zip(futures, values):
                if f._state == _PENDING or f._state == _RUNNING:
                    f._result = v
                    f._state = _FINISHED
                    add(f)
        else:
            for f, v, ok in zip(futures, values, oks):
                if f._state == _PENDING or f._state == _RUNNING:
                    if ok:
                        f._result = v
                    else:
                        f._exception = v
                    f._state = _FINISHED
                    add(f)
    for f in settled:
        if f._cond is not None:
            f._announce()
        else:  # nobody blocks on it (the usual case): its callbacks, without a call to _announce
            for callback in f._done_callbacks:
                try:
                    callback(f)
                except Exception:
                    _LOGGER.exception("exception calling callback for %r", f)


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

    Futures are `CommitFuture`s, resolved in submission order by the committing thread (which so
    runs their callbacks) before it starts the next round. Callbacks may `submit()` but not
    `commit()`.

    Measured and left out (benchmarks/journal.py, 2 cores, ext4): resolving futures on a completer
    thread while the next round is applied and synced, and an adaptive linger that waits for the
    last round's writers to come back before taking the queue. Neither moved any writer model
    beyond run-to-run noise. Only the sync runs without the GIL, so the one overlap on offer is a
    sync with callbacks; with writers that each keep one commit outstanding that overlap splits
    them into smaller rounds, and a sync costs nearly as much for 32 events as for 64.
    """

    def __init__(
        self,
        apply: Callable[[list[WriteBatch]], list[list[Any]]],
        name: str,
        max_ops: int = 20000,
        overlap: bool = True,
        linger: float = 0.005,
    ) -> None:
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
        self._sync_time = 0.0  # how long the last round's sync took, without the GIL
        self._cb_cost = 0.0  # moving average: seconds of callbacks per settled future
        self._linger = linger
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._name = name
        self._overlap = overlap and os.environ.get("ACTORFLOW_COMMIT_OVERLAP", "1") != "0"
        self._c_thread: threading.Thread | None = None  # started at the first round it is worth it for

    # --- entry points ---------------------------------------------------------------------------
    def submit(self, batch: WriteBatch) -> "Future[list[Any]]":
        fut = CommitFuture()
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
            self._open_gate()
        if w.exc is not None:
            raise w.exc
        return w.result  # type: ignore[no-any-return]

    # --- the rounds -----------------------------------------------------------------------------
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
        the rest of the round as it is, without retrying into whatever was interrupted."""
        if len(batches) == 1 or not isinstance(exc, Exception):
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
            try:
                values = self._apply([b for b, _ in taken])
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                values, oks = self._one_by_one([b for b, _ in taken], exc)
            finally:
                self._c_gate = False  # shut again: this thread will hand over and build the next round
                began = self._sync_began
                if began:
                    self._sync_time = time.perf_counter() - began
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
            if futures:
                n = len(futures)
                if not (
                    self._overlap
                    and (
                        self._c_done != self._c_handed
                        or (n >= _OVERLAP_MIN and (n + len(self._queue)) * self._cb_cost > self._sync_time > 0.0)
                    )
                    and self._hand_over(futures, fvalues, foks)
                ):
                    t0 = time.perf_counter()
                    _settle_all(futures, fvalues, foks)
                    self._cb_cost += ((time.perf_counter() - t0) / n - self._cb_cost) * 0.25
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
                deadline = None
                with self._c_cond:
                    while self._lingering():
                        if deadline is None:
                            deadline = time.monotonic() + self._linger
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

    def _hand_over(self, futures: list[CommitFuture], values: list[Any], oks: list[bool] | None) -> bool:
        """Queue a round's futures for the completer (False once it is closed: settle them here).

        Worth it when the writers' callbacks (this round's, and those that queued the next) take longer
        than a sync: these then run during the next round's sync, and the writers settle into two
        cohorts, one's callbacks running while the other's batches sync."""
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
        if self._overlap:
            self._sync_began = time.perf_counter()
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
            t0 = time.perf_counter()
            half = len(futures) // 2
            if half:
                _settle_all(futures[:half], values[:half], None if oks is None else oks[:half])
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
            _settle_all(futures[half:], values[half:], None if oks is None else oks[half:])
            self._cb_cost += ((time.perf_counter() - t0) / len(futures) - self._cb_cost) * 0.25
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
