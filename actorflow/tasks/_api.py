"""The Engine's task methods (a mixin, so `_engine.py` gains one base class and two hooks): each
delegates to the engine's TaskQueue, Dispatcher (limits) and Scheduler."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .._retry import RetryPolicy
from ..errors import ConfigError
from ._chains import Chain
from ._control import PingReply, QueueStats, WorkerInfo, node_workers, read_queue_stats, read_workers
from ._hooks import HOOK_KINDS
from ._model import TaskEvent
from ._queue import DeadLetter, TaskQueue
from ._routing import Consumer, QueueSpec, Route
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
        from ._control import ControlPlane
        from ._schedules import Scheduler
        from ._status import NS_GATED

        tq = self.__tq
        if any(s.limited for s in tq.specs.values()) or tq.engine._runtime().journal.kv_scan(NS_GATED):
            tq.start_dispatcher()
        tq.scheduler = Scheduler(tq)
        tq.scheduler.start()
        tq.control = ControlPlane(tq)
        tq.control.start()

    def _tasks_closing(self) -> None:
        tq = self.__tq
        if tq is None:
            return
        if tq.control is not None:
            tq.control.stop()
            tq.control = None
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
        queue: str | None = None,
        lease: float | _dt.timedelta | None = None,
    ) -> Callable[[F], F]:
        """Register `fn(ctx: TaskContext, input: dict)` (sync or async) as a task; returns it unchanged.

        `concurrency`/`rate_limit` ("100/m") hold across every process of the engine: this engine's
        facade is their one owner. `queue`: its executions' queue unless enqueue() names one (else
        the routing rules decide). `lease`: seconds an attempt may go without `ctx.heartbeat()`
        before it is lost and run again. Register before open() (required with system='multiproc')."""
        if callable(name):
            raise ConfigError("use @engine.task() with parentheses")

        def register(fn: F) -> F:
            self._tasks.register(fn, name, retry, timeout, concurrency, rate_limit, queue, lease)
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
        queue: str | None = None,
        headers: dict[str, Any] | None = None,
        requires: dict[str, Any] | None = None,
    ) -> str:
        """Queue an execution; durable when this returns. Returns its execution id.

        Concurrent callers (threads) share one journal commit and one hand-over to the run hosts per
        round (tasks/_coalesce.py); each still gets its own id or error.

        `delay`: a durable timer. `unique_key` + "keep": while an execution with that key is
        unfinished, return its id instead; "replace": cancel it and queue this one (with `delay`,
        a debounce: only the last of a burst runs, `delay` after it). `queue`: overrides the task's
        queue and the routing rules (which match task names and `headers`). `requires`: capabilities
        a consumer must have ({"gpu": True}); until one does, the execution stays queued."""
        return self._tasks.enqueue(name, input, retry=retry, priority=priority, tags=tags, delay=delay,
                                   unique_key=unique_key, unique_policy=unique_policy, timeout=timeout,
                                   queue=queue, headers=headers, requires=requires)

    async def aenqueue(
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
        queue: str | None = None,
        headers: dict[str, Any] | None = None,
        requires: dict[str, Any] | None = None,
    ) -> str:
        """`enqueue()` for asyncio callers: durable when it returns, without blocking the event loop
        (the aenqueues of one event-loop iteration share one journal batch, whose commit is awaited
        as a future). Bad input raises here, before anything is written."""
        return await self._tasks.aenqueue(name, input, retry=retry, priority=priority, tags=tags, delay=delay,
                                          unique_key=unique_key, unique_policy=unique_policy, timeout=timeout,
                                          queue=queue, headers=headers, requires=requires)

    def enqueue_many(self, name: str, inputs: Iterable[dict[str, Any] | None], *, priority: int = 0,
                     tags: Iterable[str] = (), queue: str | None = None, headers: dict[str, Any] | None = None,
                     requires: dict[str, Any] | None = None) -> list[str]:
        """Queue many executions of one task in one durable commit."""
        return self._tasks.enqueue_many(name, inputs, priority=priority, tags=tags, queue=queue, headers=headers,
                                        requires=requires)

    # --- queues, routing, consumers (actorflow/tasks/_routing.py) -------------------------------
    @staticmethod
    def _consumer_of(queues: Iterable[str] | None, capabilities: Mapping[str, Any] | None) -> Consumer:
        return Consumer.of(queues, capabilities or {})

    def declare_queue(self, name: str, *, priority: tuple[int, int] | None = None) -> QueueSpec:
        """Declare a queue; `priority=(low, high)`: enqueue refuses priorities outside the range."""
        return self._tasks.router.declare(name, priority=priority)

    def route(self, queue: str, *, task: str = "*", headers: Mapping[str, Any] | None = None) -> Route:
        """Add a routing rule: executions of tasks matching the glob `task` whose headers match go to
        `queue` (rules are tried in order; the task's own queue and enqueue(queue=) come first)."""
        return self._tasks.router.add(queue, task=task, headers=headers)

    def load_routes(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Load queues and rules from a dict or a JSON/YAML file (`{default_queue, queues, routes}`);
        a bad entry raises ConfigError naming it, and nothing of the file is applied."""
        self._tasks.router.load(source)

    @property
    def default_queue(self) -> str:
        return self._tasks.router.default_queue

    # --- lifecycle hooks (actorflow/tasks/_hooks.py) ---------------------------------------------
    def add_task_hook(self, kind: str, fn: Callable[[Any], Any]) -> None:
        """Call `fn(payload)` (sync or async) on each `kind` event: enqueue, start, success, failure,
        retry. A hook that raises is logged and ignored. Add hooks before open() under multiproc."""
        if self.is_open and self.system == "multiproc" and kind != "enqueue":  # type: ignore[attr-defined]
            raise ConfigError(f"task hook {kind!r}: add it before engine.open() (system='multiproc' ships hooks then)")
        self._tasks.hooks.add(kind, fn)

    def remove_task_hook(self, kind: str, fn: Callable[[Any], Any]) -> bool:
        return self._tasks.hooks.remove(kind, fn)

    def on_task(self, kind: str) -> Callable[[F], F]:
        """Decorator form of add_task_hook: `@engine.on_task("failure")`."""
        if kind not in HOOK_KINDS:
            raise ConfigError(f"unknown task hook {kind!r}; use one of {', '.join(HOOK_KINDS)}", hook=kind)

        def register(fn: F) -> F:
            self.add_task_hook(kind, fn)
            return fn

        return register

    # --- control plane (actorflow/tasks/_control.py) ---------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        """The consumers known to this data directory: this engine first, then others (up or down)."""
        rt = self._runtime()  # type: ignore[attr-defined]
        control = self._tasks.control
        if control is None:
            return []
        now = time.time()
        known = read_workers(rt.journal, control.entries(), now, control.worker_id)
        members = getattr(rt, "convention_members", None)  # system="multiproc": the convention's nodes
        return known if members is None else known + node_workers(members(), now)

    def ping(self, timeout: float = 5.0) -> list[PingReply]:
        """Ask each run host (shard) of this engine to answer: one PingReply each, with its latency
        (under multiproc a round trip to each shard process)."""
        control = self._tasks.control
        if control is None:
            raise ConfigError("engine.ping(): the engine is not open, or has no tasks registered")
        return control.ping(timeout)

    def queue_stats(self) -> list[QueueStats]:
        """Per queue: depth, unplaceable, delayed, in flight, rate (finished/s, last minute), oldest age."""
        rt = self._runtime()  # type: ignore[attr-defined]
        control = self._tasks.control
        return read_queue_stats(rt.journal, [] if control is None else control.entries(), time.time())

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
