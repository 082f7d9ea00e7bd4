"""Following a run's status: the current one first, then each change, until it can make no progress."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator

from ._runtime import Notifier
from ._types import STOPPED_STATES, RunStatus

__all__ = ["follow", "afollow"]


def _changed(st: RunStatus, last: RunStatus) -> bool:
    return st.updated_at >= last.updated_at and (st.state, st.progress) != (last.state, last.progress)


def follow(notifier: Notifier, current: Callable[[], RunStatus], run_id: str, timeout: float | None) -> Iterator[RunStatus]:
    """Blocking iterator; subscribes before reading the current status so no change falls between."""
    q: queue.SimpleQueue[RunStatus] = queue.SimpleQueue()
    notifier.add_monitor(run_id, q.put)
    try:
        last = current()
        yield last
        while last.state not in STOPPED_STATES:
            try:
                st = q.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no change of run {run_id!r} within {timeout}s") from None
            if _changed(st, last):
                last = st
                yield st
    finally:
        notifier.remove_monitor(run_id, q.put)


async def afollow(notifier: Notifier, current: Callable[[], RunStatus], run_id: str) -> AsyncIterator[RunStatus]:
    """`follow` for asyncio: changes arrive through the loop's thread-safe queue hand-off."""
    loop = asyncio.get_running_loop()
    aq: asyncio.Queue[RunStatus] = asyncio.Queue()

    def cb(st: RunStatus) -> None:
        loop.call_soon_threadsafe(aq.put_nowait, st)

    notifier.add_monitor(run_id, cb)
    try:
        last = current()
        yield last
        while last.state not in STOPPED_STATES:
            st = await aq.get()
            if _changed(st, last):
                last = st
                yield st
    finally:
        notifier.remove_monitor(run_id, cb)
