"""CommitFuture: the concurrent.futures.Future a journal commit returns, cheap enough for one per event."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import _base as _fb
from typing import Any

from actorflow.errors import StorageError

__all__ = ["CommitFuture", "settle_all"]

_PENDING = _fb.PENDING
_RUNNING = _fb.RUNNING
_CANCELLED = _fb.CANCELLED
_CANCELLED_AND_NOTIFIED = _fb.CANCELLED_AND_NOTIFIED
_FINISHED = _fb.FINISHED
_LOGGER = _fb.LOGGER
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

    # the committer's thread-local state: set by GroupCommitter.submit, so that a wait from one of its
    # own commit callbacks fails at once instead of hanging (class default: not checked)
    _committing: Any = None

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
        self._refuse_deadlock()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        self._refuse_deadlock()
        return super().exception(timeout)

    def _refuse_deadlock(self) -> None:
        tls = self._committing
        if tls is not None and not self.done() and getattr(tls, "committing", False):
            raise StorageError(
                "waiting for a journal commit inside one of the same journal's commit callbacks would "
                "deadlock (this thread is the one that commits or settles it); chain the work with "
                "add_done_callback instead"
            )


def settle_all(futures: list[CommitFuture], values: list[Any], oks: list[bool] | None) -> None:
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
