"""`FakeTasks`: the task half of an Engine for a service's unit tests (Stem's FakeStem). It records
every enqueue and, unless told not to, runs the handler inline with its retry policy (no waiting:
delays and backoffs are recorded, not slept), so a test asserts "this request enqueued that task"
and sees the task's outcome without an engine, a data directory or a thread.

Enqueue takes the engine's arguments and refuses what the engine would (unknown task, bad input,
bad options, a priority outside its queue's range) with the same errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import inspect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .._retry import RetryPolicy
from .._types import StepInfo, _current_step
from ..errors import Cancelled, ConfigError, TaskNotRegistered
from ._hooks import EnqueuedInfo, FailedInfo, RetryInfo, StartedInfo, SucceededInfo, TaskHooks
from ._model import (
    RetryLater,
    TaskCancelled,
    TaskContext,
    TaskEvent,
    TaskFailed,
    TaskFailure,
    TaskQueued,
    TaskResult,
    TaskSpec,
    TaskSucceeded,
    check_input,
    parse_rate_limit,
    seconds,
)
from ._queue import execution_options
from ._routing import Consumer, Router, check_queue_name

if TYPE_CHECKING:
    from .._engine import Engine

__all__ = ["FakeTasks", "Enqueued"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One recorded enqueue: what the code under test asked for."""

    execution_id: str
    task: str
    input: dict[str, Any]
    queue: str
    priority: int = 0
    tags: tuple[str, ...] = ()
    delay: float | None = None
    requires: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    unique_key: str | None = None


class FakeTasks:
    """Stands in for `engine` where code enqueues tasks: `task`, `enqueue`, `enqueue_many`,
    `task_status`, `result`, `cancel_execution`, hooks and routing behave as on an Engine.

    `run=False` only records (run them later with `run_pending()`). `FakeTasks.of(engine)` takes
    the tasks, routing rules and hooks registered on a real (unopened) engine."""

    def __init__(self, *, run: bool = True) -> None:
        self.run = run
        self.specs: dict[str, TaskSpec] = {}
        self.router = Router()
        self.hooks = TaskHooks()
        self.enqueued: list[Enqueued] = []
        self.attempts: dict[str, int] = {}
        self._status: dict[str, TaskEvent] = {}
        self._pending: list[tuple[Enqueued, dict[str, Any]]] = []
        self._unique: dict[str, str] = {}
        self._ids = itertools.count(1)

    @classmethod
    def of(cls, engine: Engine, *, run: bool = True) -> FakeTasks:
        fake = cls(run=run)
        tq = engine._tasks
        fake.specs = dict(tq.specs)
        fake.router = Router(tq.router.default_queue, dict(tq.router.queues), list(tq.router.routes))
        fake.hooks = tq.hooks
        return fake

    # --- the Engine's task API ---------------------------------------------------------------
    def task(self, name: str | None = None, *, retry: RetryPolicy | None = None, timeout: float | _dt.timedelta | None = None,
             concurrency: int | None = None, rate_limit: str | None = None, queue: str | None = None,
             lease: float | _dt.timedelta | None = None) -> Callable[[F], F]:
        if callable(name):
            raise ConfigError("use @fake.task() with parentheses")

        def register(fn: F) -> F:
            task = name or getattr(fn, "__qualname__", None) or repr(fn)
            if retry is not None and not isinstance(retry, RetryPolicy):
                raise ConfigError(f"task {task!r}: retry must be a RetryPolicy, got {retry!r}")
            self.specs[task] = TaskSpec(
                task, fn, retry, None if timeout is None else seconds(timeout, f"task {task!r} timeout", positive=True),
                concurrency, None if rate_limit is None else parse_rate_limit(rate_limit),
                None if queue is None else check_queue_name(queue, f"task {task!r}"),
                None if lease is None else seconds(lease, f"task {task!r} lease", positive=True),
            )
            return fn

        return register

    def route(self, queue: str, *, task: str = "*", headers: dict[str, Any] | None = None) -> None:
        self.router.add(queue, task=task, headers=headers)

    def declare_queue(self, name: str, *, priority: tuple[int, int] | None = None) -> None:
        self.router.declare(name, priority=priority)

    def add_task_hook(self, kind: str, fn: Callable[[Any], Any]) -> None:
        self.hooks.add(kind, fn)

    def enqueue(self, name: str, input: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None,
                priority: int = 0, tags: Iterable[str] = (), delay: float | _dt.timedelta | None = None,
                unique_key: str | None = None, unique_policy: str = "keep", timeout: float | _dt.timedelta | None = None,
                queue: str | None = None, headers: dict[str, Any] | None = None, requires: dict[str, Any] | None = None) -> str:
        spec = self.specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise TaskNotRegistered(name, sorted(self.specs))
        data = check_input(input, f"enqueue({name!r})")
        opts = execution_options(self.router, Consumer(), spec, retry=retry, priority=priority, tags=tags, delay=delay,
                                 unique_policy=unique_policy, timeout=timeout, queue=queue, headers=headers, requires=requires)
        if unique_key is not None:
            held = self._unique.get(f"{name}\x00{unique_key}")
            if held is not None and isinstance(self._status.get(held), TaskQueued):
                if unique_policy == "keep":
                    return held
                self.cancel_execution(held)
        eid = f"fake-{next(self._ids):06d}"
        rec = Enqueued(eid, name, dict(data), opts.get("queue", "default"), priority, tuple(opts["tags"]), opts.get("delay"),
                       dict(opts.get("requires", {})), dict(opts.get("headers", {})), unique_key)
        self.enqueued.append(rec)
        if unique_key is not None:
            self._unique[f"{name}\x00{unique_key}"] = eid
        self._status[eid] = TaskQueued(eid)
        self.hooks.fire(EnqueuedInfo(eid, name, rec.queue, dict(data), priority, rec.tags, rec.requires))
        if self.run:
            self._execute(rec, opts)
        else:
            self._pending.append((rec, opts))
        return eid

    def enqueue_many(self, name: str, inputs: Iterable[dict[str, Any] | None], **kw: Any) -> list[str]:
        return [self.enqueue(name, i, **kw) for i in list(inputs)]

    def task_status(self, execution_id: str) -> TaskEvent:
        try:
            return self._status[execution_id]
        except KeyError:
            raise ConfigError(f"no execution {execution_id!r} was enqueued on this FakeTasks") from None

    def result(self, execution_id: str, timeout: float | None = None) -> Any:
        """The output of a succeeded execution; TaskFailure / Cancelled / ConfigError (not run yet) otherwise."""
        ev = self.task_status(execution_id)
        if isinstance(ev, TaskSucceeded):
            return ev.output
        if isinstance(ev, TaskFailed):
            raise TaskFailure(ev.message)
        if isinstance(ev, TaskCancelled):
            raise Cancelled(execution_id, "cancelled")
        raise ConfigError(f"execution {execution_id!r} has not run (FakeTasks(run=False): call run_pending())")

    def cancel_execution(self, execution_id: str) -> bool:
        if not isinstance(self.task_status(execution_id), TaskQueued):
            return False
        self._status[execution_id] = TaskCancelled(execution_id)
        self._pending = [p for p in self._pending if p[0].execution_id != execution_id]
        return True

    # --- what tests use ------------------------------------------------------------------------
    def run_pending(self) -> list[str]:
        """Run every recorded, not yet run execution (in enqueue order); returns their ids."""
        done = []
        while self._pending:
            rec, opts = self._pending.pop(0)
            self._execute(rec, opts)
            done.append(rec.execution_id)
        return done

    def enqueued_for(self, task: str) -> list[Enqueued]:
        return [e for e in self.enqueued if e.task == task]

    def assert_enqueued(self, task: str, input: dict[str, Any] | None = None, **fields: Any) -> Enqueued:
        """The one recorded enqueue of `task` whose input contains `input`'s items and whose fields
        equal `fields` (queue=, priority=, tags= ...); AssertionError listing what was enqueued."""
        def fits(e: Enqueued) -> bool:
            return all(e.input.get(k, _NO) == v for k, v in (input or {}).items()) and all(getattr(e, k) == v for k, v in fields.items())

        found = [e for e in self.enqueued_for(task) if fits(e)]
        if len(found) != 1:
            seen = "\n  ".join(f"{e.task}({e.input!r}) queue={e.queue!r} priority={e.priority}" for e in self.enqueued) or "nothing"
            also = f" and {fields!r}" if fields else ""
            raise AssertionError(f"expected one enqueue of {task!r} with input {input or {}!r}{also}, "
                                 f"found {len(found)}; enqueued:\n  {seen}")
        return found[0]

    def clear(self) -> None:
        self.enqueued.clear()
        self._pending.clear()

    # --- inline execution ----------------------------------------------------------------------
    def _execute(self, rec: Enqueued, opts: dict[str, Any]) -> None:
        spec = self.specs[rec.task]
        policy: RetryPolicy = opts.get("retry") or spec.retry or RetryPolicy.none()
        eid = rec.execution_id
        attempt = 0
        while True:
            attempt += 1
            self.attempts[eid] = attempt
            self.hooks.fire(StartedInfo(eid, rec.task, rec.queue, attempt))
            ctx = TaskContext(dict(rec.input), attempt, eid, rec.task, lambda f: None, None, rec.queue)
            token = _current_step.set(StepInfo(eid, "handler", 1, attempt, f"{eid}#1:handler"))
            try:
                out = _unwrap(_call(spec.fn, ctx, dict(rec.input)))
            except Cancelled:
                self._status[eid] = TaskCancelled(eid)
                return
            except Exception as exc:  # noqa: BLE001 - the handler's failure is the execution's outcome
                text = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, TaskFailure) and policy.should_retry(attempt, exc):
                    self.hooks.fire(RetryInfo(eid, rec.task, rec.queue, attempt, text, 0.0))
                    continue
                self.hooks.fire(FailedInfo(eid, rec.task, rec.queue, attempt, text, 0.0))
                self._status[eid] = TaskFailed(eid, str(exc) if isinstance(exc, (TaskFailure, RetryLater)) else text)
                return
            finally:
                _current_step.reset(token)
            self.hooks.fire(SucceededInfo(eid, rec.task, rec.queue, attempt, out, 0.0))
            self._status[eid] = TaskSucceeded(eid, out)
            return


_NO = object()


def _call(fn: Callable[..., Any], ctx: TaskContext, input: dict[str, Any]) -> Any:
    result = fn(ctx, input)
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(result))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code: its own loop
        return pool.submit(asyncio.run, _await(result)).result()


async def _await(aw: Any) -> Any:
    return await aw


def _unwrap(value: Any) -> Any:
    if isinstance(value, TaskResult):
        if value.kind == "failure":
            raise TaskFailure(value.message)
        if value.kind == "retry_later":
            raise RetryLater(value.message)
        return value.data
    return value
