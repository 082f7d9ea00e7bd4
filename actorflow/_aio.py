"""asyncio bridging: per event loop, astarts committed in chunks and one wakeup per burst of results."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from storage import RunRecord, WriteBatch

if TYPE_CHECKING:
    from ._runtime import Facade

__all__ = ["LoopBridge"]

Outcome = tuple[str, Any, Any]
Added = tuple[int, RunRecord, tuple[Any, ...]]  # a start's op index, record and the journaled copy of its args
Finish = Callable[[RunRecord, tuple[Any, ...], Any], Any]  # (record, args copy, existing record or None)

START_CHUNK = 256
"""Starts per journal batch: a gathered burst of astarts is committed (and its runs handed to their
hosts) chunk by chunk, so the writer thread and the hosts work while the loop is still creating the
rest, instead of everything waiting for one batch of the whole burst."""


class LoopBridge:
    """Coalesces one event loop's traffic with the engine's threads.

    The `astart`s issued in one loop iteration share journal batches of up to `START_CHUNK` starts
    (a chunk is submitted as soon as it is full, the rest at the end of the iteration; the writer
    group-commits what is queued with one fsync), and finished-run outcomes for `aresult` waiters are handed over in bursts with a
    single `call_soon_threadsafe`, instead of one thread crossing per run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._starts: list[tuple[Callable[[WriteBatch], Added], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Outcome], Outcome]] = []
        self._drain_scheduled = False

    # --- starts --------------------------------------------------------------------------------
    def start(
        self,
        rt: Facade,
        add: Callable[[WriteBatch], Added],
        finish: Finish,
    ) -> asyncio.Future[Any]:
        """Queue a start for a shared commit; resolves to `finish(...)` once it is durable."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._starts.append((add, fut))
        if len(self._starts) >= START_CHUNK:
            self._submit(rt, finish)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush, rt, finish)
        return fut

    def _flush(self, rt: Facade, finish: Finish) -> None:
        self._flush_scheduled = False
        if self._starts:
            self._submit(rt, finish)

    def _submit(self, rt: Facade, finish: Finish) -> None:
        starts, self._starts = self._starts, []
        batch = rt.journal.batch()
        added: list[tuple[int, RunRecord, tuple[Any, ...], asyncio.Future[Any]]] = []
        for add, fut in starts:
            try:
                idx, rec, args = add(batch)  # encodes first: a bad payload fails alone, before any write
            except Exception as exc:  # noqa: BLE001 - handed to that caller
                fut.set_exception(exc)
                continue
            added.append((idx, rec, args, fut))
        if not added:
            return
        try:
            commit = rt.journal.submit(batch)
        except Exception as exc:  # noqa: BLE001 - the journal is closed or broken
            for *_, fut in added:
                fut.set_exception(exc)
            return

        def committed(f: Future[list[Any]]) -> None:
            # On the journal's thread, right after the commit: the runs go to their hosts now, not
            # when the loop next gets round to it (it may still be creating a burst's other starts);
            # a run whose caller was cancelled meanwhile is durable, so it is handed over all the same.
            exc = f.exception()
            done: list[tuple[asyncio.Future[Any], bool, Any]] = []
            if exc is not None:
                done = [(fut, False, exc) for *_, fut in added]
            else:
                results = f.result()
                for idx, rec, args, fut in added:
                    try:
                        done.append((fut, True, finish(rec, args, results[idx])))
                    except Exception as err:  # noqa: BLE001 - RunConflict and friends go to that caller
                        done.append((fut, False, err))
            self.loop.call_soon_threadsafe(self._started, done)

        commit.add_done_callback(committed)

    @staticmethod
    def _started(done: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        for fut, ok, value in done:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    # --- results -------------------------------------------------------------------------------
    def waiter(self, fut: asyncio.Future[Outcome]) -> Callable[[Outcome], None]:
        """A notifier callback (called on engine threads) that resolves `fut` on this loop."""

        def deliver(outcome: Outcome) -> None:
            with self._lock:
                self._ready.append((fut, outcome))
                if self._drain_scheduled:
                    return
                self._drain_scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

        return deliver

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._drain_scheduled = False
        for fut, outcome in ready:
            if not fut.done():
                fut.set_result(outcome)
