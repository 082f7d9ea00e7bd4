"""Live task status streams: one execution (`monitor_execution`) or every execution of a task
(`monitor_task`), sync and async. Both ride the engine's run monitors (status changes pushed by the
run hosts, also across processes); no journal polling except for executions started by a chain
inside a host, which `monitor_task` picks up from the active-run index when idle."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .._types import RunStatus
from ..errors import ConfigError
from ._model import TASK_PREFIX, TaskCancelled, TaskEvent, TaskFailed, TaskSucceeded
from ._status import task_name

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["monitor_execution", "monitor_task", "aiterate", "FINAL_EVENTS"]

FINAL_EVENTS = (TaskSucceeded, TaskFailed, TaskCancelled)
_RESCAN = 0.05  # seconds between monitor_task's looks for executions it was not told about (chain members)


def monitor_execution(q: TaskQueue, execution_id: str, timeout: float | None = None) -> Iterator[TaskEvent]:
    """The current status, then each change, until a final one (TaskSucceeded/Failed/Cancelled)."""
    q._execution(execution_id)  # unknown id / not a task: raised now, not at first next()

    def gen() -> Iterator[TaskEvent]:
        last: TaskEvent | None = None
        for st in q.engine.monitor(execution_id, timeout):
            ev = q.event(st)
            if ev != last:
                last = ev
                yield ev
            if isinstance(ev, FINAL_EVENTS):
                return

    return gen()


class _TaskWatch:
    """One monitor_task subscription: notifier monitors on the executions it follows."""

    def __init__(self, q: TaskQueue, name: str | None) -> None:
        self.q = q
        self.workflow = None if name is None else q.spec(name).workflow
        self.inbox: queue.SimpleQueue[RunStatus] = queue.SimpleQueue()
        self.watched: set[str] = set()
        self.lock = threading.Lock()

    def wants(self, workflow: str) -> bool:
        return workflow == self.workflow if self.workflow is not None else workflow.startswith(TASK_PREFIX)

    def watch(self, run_id: str, rec: Any = None) -> None:
        with self.lock:
            if run_id in self.watched:
                return
            self.watched.add(run_id)
        rt = self.q.engine._runtime()
        rt.notifier.add_monitor(run_id, self.inbox.put)
        # after the monitor is in place: a change before it is in this read, one after comes to the inbox
        rec = rt.journal.get_run(run_id)
        if rec is not None:
            self.inbox.put(RunStatus.from_record(rec))

    def told(self, run_id: str) -> None:
        rec = self.q.engine._runtime().journal.get_run(run_id)
        if rec is not None and self.wants(rec.workflow):
            self.watch(run_id)

    def rescan(self) -> None:
        journal = self.q.engine._runtime().journal
        for rec in journal.get_runs(journal.active_run_ids()):
            if rec is not None and rec.run_id not in self.watched and self.wants(rec.workflow):
                self.watch(rec.run_id)

    def unwatch(self, run_id: str) -> None:
        rt = self.q.engine._rt
        if rt is not None:  # closed engine: its notifier went with it
            rt.notifier.remove_monitor(run_id, self.inbox.put)

    def close(self) -> None:
        for run_id in list(self.watched):
            self.unwatch(run_id)


def monitor_task(q: TaskQueue, name: str | None = None, timeout: float | None = None) -> Iterator[TaskEvent]:
    """Every status event of every execution of task `name` (None: of every task), from now on -
    the current status of unfinished ones first. Endless: break out of it; `timeout`: TimeoutError
    after that many seconds without an event."""
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"monitor_task takes a task name or None, got {name!r}")
    sub = _TaskWatch(q, name)
    # subscribed now, not at the first next(): executions enqueued before iterating are seen too
    q.listeners.append(sub.told)
    sub.rescan()

    def gen() -> Iterator[TaskEvent]:
        last: dict[str, TaskEvent] = {}
        quiet_since = next_scan = time.monotonic()
        try:
            while True:
                try:
                    st = sub.inbox.get(timeout=max(0.0, next_scan - time.monotonic()))
                except queue.Empty:
                    now = time.monotonic()
                    if timeout is not None and now - quiet_since >= timeout:
                        raise TimeoutError(f"no task event within {timeout}s") from None
                    sub.rescan()
                    next_scan = now + _RESCAN
                    continue
                if time.monotonic() >= next_scan:
                    sub.rescan()
                    next_scan = time.monotonic() + _RESCAN
                if task_name(st.workflow) is None:
                    continue
                ev = q.event(st)
                if last.get(st.run_id) == ev or isinstance(last.get(st.run_id), FINAL_EVENTS):
                    continue
                last[st.run_id] = ev
                quiet_since = time.monotonic()
                if isinstance(ev, FINAL_EVENTS):
                    sub.unwatch(st.run_id)
                yield ev
        finally:
            if sub.told in q.listeners:
                q.listeners.remove(sub.told)
            sub.close()

    return gen()


async def aiterate(it: Iterator[TaskEvent]) -> AsyncIterator[TaskEvent]:
    """An async view of a blocking stream: each next() runs in a worker thread."""
    done = object()
    try:
        while True:
            ev = await asyncio.to_thread(next, it, done)
            if ev is done:
                return
            yield ev  # type: ignore[misc]
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
