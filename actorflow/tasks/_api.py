"""The Engine's task methods (a mixin, so `_engine.py` gains one base class and two hooks): each
delegates to the engine's TaskQueue, Dispatcher (limits) and Scheduler."""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .._retry import RetryPolicy
from ..errors import ConfigError
from ._chains import Chain
from ._model import TaskEvent
from ._queue import DeadLetter, TaskQueue
from ._status import TaskInfo
from ._streams import aiterate, monitor_execution, monitor_task

__all__ = ["TaskMethods"]

F = TypeVar("F", bound=Callable[..., Any])


class TaskMethods:
    """Task queue API of `Engine` (see README "Tasks")."""

    __tq: TaskQueue | None = None

    @property
    def _tasks(self) -> TaskQueue:
        if self.__tq is None:
            self.__tq = TaskQueue(self)  # type: ignore[arg-type]
        return self.__tq

    # hooks the Engine calls: after open (the limit dispatcher and the scheduler start) and before close
    def _tasks_opened(self) -> None:
        if self.__tq is None:
            return
        from ._limits import Dispatcher
        from ._schedules import Scheduler

        tq = self.__tq
        if any(s.limited for s in tq.specs.values()):
            tq.dispatcher = Dispatcher(tq)
            tq.dispatcher.start()
        tq.scheduler = Scheduler(tq)
        tq.scheduler.start()

    def _tasks_closing(self) -> None:
        tq = self.__tq
        if tq is None:
            return
        if tq.scheduler is not None:
            tq.scheduler.stop()
            tq.scheduler = None
        if tq.dispatcher is not None:
            tq.dispatcher.stop()
            tq.dispatcher = None

    # --- registration and enqueue ------------------------------------------------------------
    def task(
        self,
        name: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | _dt.timedelta | None = None,
        concurrency: int | None = None,
        rate_limit: str | None = None,
    ) -> Callable[[F], F]:
        """Register `fn(ctx: TaskContext, input: dict)` (sync or async) as a task; returns it unchanged.

        `concurrency`/`rate_limit` ("100/m") hold across every process of the engine: this engine's
        facade is their one owner. Register before open() (required with system='multiproc')."""
        if callable(name):
            raise ConfigError("use @engine.task() with parentheses")

        def register(fn: F) -> F:
            self._tasks.register(fn, name, retry, timeout, concurrency, rate_limit)
            return fn

        return register

    def enqueue(
        self,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        priority: int = 0,
        tags: Iterable[str] = (),
        delay: float | _dt.timedelta | None = None,
        unique_key: str | None = None,
        unique_policy: str = "keep",
        timeout: float | _dt.timedelta | None = None,
    ) -> str:
        """Queue an execution; durable when this returns. Returns its execution id.

        `delay`: a durable timer. `unique_key` + "keep": while an execution with that key is
        unfinished, return its id instead; "replace": cancel it and queue this one (with `delay`,
        a debounce: only the last of a burst runs, `delay` after it)."""
        return self._tasks.enqueue(name, input, retry=retry, priority=priority, tags=tags, delay=delay,
                                   unique_key=unique_key, unique_policy=unique_policy, timeout=timeout)

    def enqueue_many(self, name: str, inputs: Iterable[dict[str, Any] | None], *, priority: int = 0,
                     tags: Iterable[str] = ()) -> list[str]:
        """Queue many executions of one task in one durable commit."""
        return self._tasks.enqueue_many(name, inputs, priority=priority, tags=tags)

    # --- chains, groups, chords --------------------------------------------------------------
    def chain(self, name: str) -> Chain:
        return self._tasks.chain(name)

    def group(self, tasks: Sequence[str | tuple[str, dict[str, Any] | None]], *, name: str = "group") -> Chain:
        """Tasks in parallel; `.enqueue(input)` -> id; its result: outputs keyed by task name."""
        return self._tasks.chain(name).then_all(tasks)

    def chord(self, tasks: Sequence[str | tuple[str, dict[str, Any] | None]], callback: str, *,
              name: str = "chord") -> Chain:
        """A group, then `callback` once with the group's merged outputs (also after a crash)."""
        return self._tasks.chain(name).then_all(tasks).then(callback)

    # --- schedules ---------------------------------------------------------------------------
    def schedule(self, name: str, *, every: float | _dt.timedelta | None = None, cron: str | None = None,
                 input: dict[str, Any] | None = None, catch_up: bool = True) -> None:
        """Run task `name` every `every` seconds or on a cron expression, durably (one slot, one
        execution, ever). `catch_up`: slots missed while no engine ran fire once on open; False skips them."""
        from ._schedules import put_schedule

        put_schedule(self._tasks, name, every=every, cron=cron, input=input, catch_up=catch_up, replace=False)

    def reschedule(self, name: str, *, every: float | _dt.timedelta | None = None, cron: str | None = None,
                   input: dict[str, Any] | None = None, catch_up: bool = True) -> None:
        """Replace an existing schedule's timing/input (no slot fires twice across the change)."""
        from ._schedules import put_schedule

        put_schedule(self._tasks, name, every=every, cron=cron, input=input, catch_up=catch_up, replace=True)

    def unschedule(self, name: str) -> bool:
        """Remove the schedule; False if there was none. Executions already started go on."""
        from ._schedules import del_schedule

        return del_schedule(self._tasks, name)

    def schedules(self) -> list[dict[str, Any]]:
        from ._schedules import list_schedules

        return list_schedules(self._tasks)

    # --- cancellation ------------------------------------------------------------------------
    def cancel_execution(self, execution_id: str) -> bool:
        return self._tasks.cancel_execution(execution_id)

    def cancel_by_name(self, name: str) -> int:
        return self._tasks.cancel_by_name(name)

    def cancel_by_tag(self, tag: str) -> int:
        return self._tasks.cancel_by_tag(tag)

    def cancel_chain(self, chain_id: str) -> bool:
        return self._tasks.cancel_chain(chain_id)

    def cancel_all(self) -> int:
        return self._tasks.cancel_all()

    # --- status ------------------------------------------------------------------------------
    def task_status(self, execution_id: str) -> TaskEvent:
        return self._tasks.task_status(execution_id)

    def tasks(self, name: str | None = None, tag: str | None = None, state: str | None = None) -> list[TaskInfo]:
        return self._tasks.tasks(name, tag, state)

    def monitor_execution(self, execution_id: str, timeout: float | None = None) -> Iterator[TaskEvent]:
        return monitor_execution(self._tasks, execution_id, timeout)

    def amonitor_execution(self, execution_id: str) -> AsyncIterator[TaskEvent]:
        return aiterate(monitor_execution(self._tasks, execution_id))

    def monitor_task(self, name: str | None = None, timeout: float | None = None) -> Iterator[TaskEvent]:
        return monitor_task(self._tasks, name, timeout)

    def amonitor_task(self, name: str | None = None, timeout: float | None = None) -> AsyncIterator[TaskEvent]:
        return aiterate(monitor_task(self._tasks, name, timeout))

    # --- dead letters ------------------------------------------------------------------------
    def dead_letters(self) -> list[DeadLetter]:
        return self._tasks.dead_letters()

    def requeue(self, execution_id: str) -> str:
        return self._tasks.requeue(execution_id)
