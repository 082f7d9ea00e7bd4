"""The task queue of one engine: registration, enqueue (unique keys, tags, delay, priority),
cancellation, status, listings, dead letters. Every write is one journal batch with the run's creation."""

from __future__ import annotations

import asyncio
import datetime as _dt
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage import Journal, RunRecord, WriteBatch

from .._aio import LoopBridge
from .._placed import QUEUE_REQUIREMENT, WORKER_CAPABILITY
from .._retry import RetryPolicy
from .._runtime import final_event
from .._types import RunStatus
from ..errors import ConfigError, TaskNotRegistered
from ..telemetry import _hooks as _telemetry
from ._chains import CHAIN_WORKFLOW, Chain, chain_workflow, member_id
from ._coalesce import Coalescer
from ._execution import make_execution_workflow
from ._hooks import EnqueuedInfo, TaskHooks
from ._model import (
    UNIQUE_POLICIES,
    TaskEvent,
    TaskSpec,
    check_input,
    parse_rate_limit,
    seconds,
)
from ._routing import Consumer, Router, check_queue_name, check_requires
from ._status import NS_GATED, TASK_STATES, TaskInfo, event_of, opts_of, state_of, task_name

if TYPE_CHECKING:
    from .._engine import Engine
    from .._runtime import Facade
    from ._control import ControlPlane
    from ._limits import Dispatcher
    from ._schedules import Scheduler

__all__ = ["TaskQueue", "execution_options", "DeadLetter", "read_tasks", "read_dead_letters", "NS_REQUEUED", "NS_GATED"]

NS_REQUEUED = "actorflow.requeued"



@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A failed execution (retries exhausted or TaskResult.failure), until requeued."""

    execution_id: str
    task: str
    error: str
    attempts: int
    input: dict[str, Any]
    failed_at: float


def execution_options(
    router: Router,
    consumer: Consumer,
    spec: TaskSpec,
    *,
    retry: RetryPolicy | None,
    priority: int,
    tags: Iterable[str],
    delay: float | _dt.timedelta | None,
    unique_policy: str,
    timeout: float | _dt.timedelta | None,
    queue: str | None = None,
    headers: dict[str, Any] | None = None,
    requires: dict[str, Any] | None = None,
    remote: bool = False,
) -> dict[str, Any]:
    """The execution's options, checked before anything is written; the queue is decided here
    (and journaled with the execution: a later routing change never moves it)."""
    what = f"enqueue({spec.name!r})"
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigError(f"{what}: retry must be a RetryPolicy, got {retry!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{what}: priority must be an int (higher runs first), got {priority!r}")
    if isinstance(tags, str):
        raise ConfigError(f"{what}: tags must be a list of strings, got the string {tags!r}")
    tag_list = list(tags)
    for tag in tag_list:
        if not isinstance(tag, str) or not tag or "\x00" in tag:
            raise ConfigError(f"{what}: each tag must be a non-empty str, got {tag!r}")
    if unique_policy not in UNIQUE_POLICIES:
        raise ConfigError(f"{what}: unknown unique_policy {unique_policy!r}; use 'keep' or 'replace'")
    if queue is not None:
        check_queue_name(queue, what)
    if headers is not None and (not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers)):
        raise ConfigError(f"{what}: headers must be a dict of str -> value, got {headers!r:.80}")
    needs = check_requires(requires, what)
    q = router.resolve(spec.name, spec.queue, queue, headers or {})
    router.check_priority(q, priority, what)
    opts: dict[str, Any] = {"priority": priority, "tags": tag_list}
    if q != "default":  # the default queue is implied: the common case's options stay as they were
        opts["queue"] = q
    if headers:
        opts["headers"] = dict(headers)
    if needs:
        opts["requires"] = needs
    if not consumer.takes(q, needs):
        if remote:  # a worker node consuming its queue, with its capabilities, runs the handler
            opts["place"] = {WORKER_CAPABILITY: True, QUEUE_REQUIREMENT: q, **needs}
        else:
            opts["gated"] = True  # no consumer here takes it: it waits (queued, visible) for one that does
    if delay is not None:
        opts["delay"] = seconds(delay, f"{what} delay")
    if retry is not None:
        opts["retry"] = retry
    if timeout is not None:
        opts["timeout"] = seconds(timeout, f"{what} timeout", positive=True)
    return opts



class TaskQueue:
    """Held by the Engine (`engine._tasks`); the Engine's task methods delegate here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.specs: dict[str, TaskSpec] = {}
        self._unique_lock = threading.Lock()
        self._dispatcher_lock = threading.Lock()
        self.dispatcher: Dispatcher | None = None
        self.scheduler: Scheduler | None = None
        self.control: ControlPlane | None = None
        self.listeners: list[Callable[[str], None]] = []  # monitor_task subscriptions: told each new execution
        self.router = Router()
        self.hooks = TaskHooks()
        self.consumer: Consumer = getattr(engine, "consumer", None) or Consumer()
        self.coalescer = Coalescer(self._hand_over)
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge] = weakref.WeakKeyDictionary()

    # --- registration ------------------------------------------------------------------------
    def register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        retry: RetryPolicy | None,
        timeout: float | _dt.timedelta | None,
        concurrency: int | None,
        rate_limit: str | None,
        queue: str | None = None,
        lease: float | _dt.timedelta | None = None,
    ) -> TaskSpec:
        if not callable(fn):
            raise ConfigError(f"@engine.task decorates a function fn(ctx, input), got {fn!r}")
        task = name or getattr(fn, "__qualname__", None) or repr(fn)
        if not isinstance(task, str) or not task or "\x00" in task:
            raise ConfigError(f"task name must be a non-empty str, got {task!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"task {task!r}: retry must be a RetryPolicy, got {retry!r}")
        t = None if timeout is None else seconds(timeout, f"task {task!r} timeout", positive=True)
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigError(f"task {task!r}: concurrency must be an int >= 1, got {concurrency!r}")
        limit = None if rate_limit is None else parse_rate_limit(rate_limit)
        q = None if queue is None else check_queue_name(queue, f"task {task!r}")
        held = None if lease is None else seconds(lease, f"task {task!r} lease", positive=True)
        if self.engine.is_open and self.engine.system != "embedded":  # "multiproc" or "HOST:PORT"
            raise ConfigError(f"task {task!r}: register tasks before engine.open() (system='multiproc' ships them then)")
        other = self.specs.get(task)
        if other is not None and other.fn is not fn and getattr(other.fn, "__code__", None) is not getattr(fn, "__code__", None):
            raise ConfigError(f"task name {task!r} is already registered to {other.fn!r}")
        spec = TaskSpec(task, fn, retry, t, concurrency, limit, q, held)
        self.specs[task] = spec
        self.engine.workflow(spec.workflow)(make_execution_workflow(spec, self.hooks))
        self.engine.workflow(CHAIN_WORKFLOW)(chain_workflow)
        return spec

    def spec(self, name: str) -> TaskSpec:
        spec = self.specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise TaskNotRegistered(name, sorted(self.specs))
        return spec

    # --- enqueue -----------------------------------------------------------------------------
    def options(self, spec: TaskSpec, **kw: Any) -> dict[str, Any]:
        """The execution's options, checked before anything is written (see execution_options)."""
        return execution_options(self.router, self.consumer, spec, remote=self.engine.remote_tasks, **kw)

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
        execution_id: str | None = None,
        queue: str | None = None,
        headers: dict[str, Any] | None = None,
        requires: dict[str, Any] | None = None,
    ) -> str:
        spec = self.spec(name)
        data = check_input(input, f"enqueue({name!r})")
        opts = self.options(spec, retry=retry, priority=priority, tags=tags, delay=delay,
                            unique_policy=unique_policy, timeout=timeout, queue=queue, headers=headers, requires=requires)
        if unique_key is None:  # concurrent callers share one commit and hand-over (tasks/_coalesce.py)
            run_id = self.coalescer.commit(*self._build(spec, data, opts, execution_id))
            self.announce(run_id, spec, data, opts)
            return run_id
        if not isinstance(unique_key, str) or not unique_key:
            raise ConfigError(f"enqueue({name!r}): unique_key must be a non-empty str, got {unique_key!r}")
        key = f"{spec.name}\x00{unique_key}"
        with self._unique_lock:  # this process is the only writer of task starts (the data dir lock)
            rt = self.engine._runtime()
            holder = rt.journal.unique_holder(key)
            rec = None if holder is None else rt.journal.get_run(holder)
            live = rec is not None and not rec.finished
            if live and unique_policy == "keep":
                assert holder is not None
                return holder
            if live and unique_policy == "replace":
                assert holder is not None
                self.engine.cancel(holder)

            def claim(batch: WriteBatch, run_id: str) -> None:
                if holder is not None:
                    batch.release_unique(key, holder)
                batch.claim_unique(key, run_id)

            return self.create(spec, data, opts, execution_id, claim)

    def create(
        self,
        spec: TaskSpec,
        data: dict[str, Any],
        opts: dict[str, Any],
        execution_id: str | None = None,
        also: Callable[[WriteBatch, str], None] | None = None,
    ) -> str:
        """One durable batch: the run, its tags, and `also`'s writes (unique key, requeue mark)."""
        rt, batch, idx, rec, copy = self._build(spec, data, opts, execution_id, also)
        return self._started(rt, spec, data, opts, rec, copy, rt.journal.commit(batch)[idx])

    def _build(
        self,
        spec: TaskSpec,
        data: dict[str, Any],
        opts: dict[str, Any],
        execution_id: str | None = None,
        also: Callable[[WriteBatch, str], None] | None = None,
    ) -> tuple[Facade, WriteBatch, int, RunRecord, tuple[Any, ...]]:
        """The execution's batch, checked (arguments read back) before anything is written."""
        rt = self.engine._runtime()
        batch = rt.journal.batch()
        idx, rec, copy = self.engine._start_batch(rt, spec.workflow, (data, opts), execution_id, batch)
        if _telemetry.current is not None:  # the run's span, its traceparent in this commit (as engine.start)
            _telemetry.current.start_run(batch, rec.run_id, spec.workflow)
        self._index(batch, rec.run_id, opts)
        if also is not None:
            also(batch, rec.run_id)
        return rt, batch, idx, rec, copy

    def _hand_over(self, rt: Facade, rec: RunRecord, copy: tuple[Any, ...], existing: RunRecord | None) -> str:
        """After the commit: hand the execution to its host (a start that found it existing drops its span)."""
        if existing is not None and _telemetry.current is not None:
            _telemetry.current.start_failed(rec.run_id)
        self.engine._after_start(rt, rec, copy, existing)
        return rec.run_id

    @staticmethod
    def _index(batch: WriteBatch, run_id: str, opts: dict[str, Any]) -> None:
        """The execution's tags, and its gate mark when no consumer here takes it."""
        for tag in opts["tags"]:
            batch.add_tag(tag, run_id)
        if opts.get("gated"):
            batch.kv_put(NS_GATED, run_id, (opts.get("queue", "default"), opts.get("requires", {})))

    def _started(self, rt: Facade, spec: TaskSpec, data: dict[str, Any], opts: dict[str, Any], rec: RunRecord,
                 copy: tuple[Any, ...], existing: RunRecord | None) -> str:
        """After the commit: hand the execution to its host and tell the listeners."""
        self._hand_over(rt, rec, copy, existing)
        self.announce(rec.run_id, spec, data, opts)
        return rec.run_id

    async def aenqueue(self, name: str, input: dict[str, Any] | None = None, *,
                       execution_id: str | None = None, **kw: Any) -> str:
        """`enqueue` for coroutines: checks run here; the executions created in one loop iteration share
        one journal batch (the loop's LoopBridge, as `astart`), whose commit is awaited as a future, so
        the event loop is never blocked on the sync (durable when this returns)."""
        if kw.get("unique_key") is not None:  # the unique-key check and claim hold a thread lock: off the loop
            return await asyncio.to_thread(self.enqueue, name, input, execution_id=execution_id, **kw)
        kw.pop("unique_key", None)
        spec = self.spec(name)
        data = check_input(input, f"aenqueue({name!r})")
        known = {"retry", "priority", "tags", "delay", "unique_policy", "timeout", "queue", "headers", "requires"}
        if set(kw) - known:
            raise ConfigError(f"aenqueue({name!r}): unknown arguments {sorted(set(kw) - known)}")
        opts = self.options(spec, **{"retry": None, "priority": 0, "tags": (), "delay": None, "unique_policy": "keep",
                                     "timeout": None, **kw})
        rt = self.engine._runtime()
        eng = self.engine

        def add(batch: WriteBatch) -> tuple[int, RunRecord, tuple[Any, ...]]:
            start = len(batch)
            idx, rec, copy = eng._start_batch(rt, spec.workflow, (data, opts), execution_id, batch)
            try:
                if _telemetry.current is not None:  # as in _build
                    _telemetry.current.start_run(batch, rec.run_id, spec.workflow)
                self._index(batch, rec.run_id, opts)
            except BaseException:
                batch.truncate(start)
                raise
            return idx, rec, copy

        def finish(rec: RunRecord, copy: tuple[Any, ...], existing: Any) -> str:
            return self._hand_over(rt, rec, copy, existing)

        run_id: str = await self._bridge().start(rt, add, finish)
        self.announce(run_id, spec, data, opts)
        return run_id

    def _bridge(self) -> LoopBridge:
        """This event loop's batcher of aenqueues: those of one loop iteration share one journal batch
        and one commit (a failed commit fails each of them; bad input fails before, alone)."""
        loop = asyncio.get_running_loop()
        with self._dispatcher_lock:
            bridge = self._bridges.get(loop)
            if bridge is None:
                bridge = self._bridges[loop] = LoopBridge(loop)
            return bridge

    def enqueue_many(self, name: str, inputs: Iterable[dict[str, Any] | None], *, priority: int = 0,
                     tags: Iterable[str] = (), queue: str | None = None, headers: dict[str, Any] | None = None,
                     requires: dict[str, Any] | None = None) -> list[str]:
        """Enqueue many executions of one task in one durable commit."""
        spec = self.spec(name)
        opts = self.options(spec, retry=None, priority=priority, tags=tags, delay=None, unique_policy="keep", timeout=None,
                            queue=queue, headers=headers, requires=requires)
        datas = [check_input(i, f"enqueue_many({name!r})") for i in inputs]
        eng = self.engine
        rt = eng._runtime()
        batch = rt.journal.batch()
        made = []
        for data in datas:
            idx, rec, copy = eng._start_batch(rt, spec.workflow, (data, opts), None, batch)
            if _telemetry.current is not None:
                _telemetry.current.start_run(batch, rec.run_id, spec.workflow)
            for tag in opts["tags"]:
                batch.add_tag(tag, rec.run_id)
            if opts.get("gated"):
                batch.kv_put(NS_GATED, rec.run_id, (opts.get("queue", "default"), opts.get("requires", {})))
            made.append((idx, rec, copy, data))
        results = rt.journal.commit(batch)
        for idx, rec, copy, data in made:
            if results[idx] is not None and _telemetry.current is not None:
                _telemetry.current.start_failed(rec.run_id)
            eng._after_start(rt, rec, copy, results[idx])
            self.announce(rec.run_id, spec, data, opts)
        return [rec.run_id for _, rec, _, _ in made]

    def announce(self, run_id: str, spec: TaskSpec, data: dict[str, Any] | None = None,
                 opts: dict[str, Any] | None = None) -> None:
        gated = bool(opts and opts.get("gated"))
        if gated and self.dispatcher is None and self.engine.is_open:
            self.start_dispatcher()
        if (spec.limited or gated) and self.dispatcher is not None:
            self.dispatcher.wake()
        for listener in list(self.listeners):
            listener(run_id)
        if opts is not None and self.hooks.wanted("enqueue"):
            self.hooks.fire(EnqueuedInfo(run_id, spec.name, opts.get("queue", "default"), dict(data or {}),
                                         int(opts.get("priority", 0)), tuple(opts.get("tags", ())), dict(opts.get("requires", {}))))

    def start_dispatcher(self) -> None:
        """The limits and placement owner of this engine (one per data directory)."""
        from ._limits import Dispatcher

        with self._dispatcher_lock:
            if self.dispatcher is None:
                self.dispatcher = Dispatcher(self)
                self.dispatcher.start()

    def start_chain(self, plan: dict[str, Any], data: dict[str, Any], chain_id: str | None) -> str:
        """One durable batch: the chain's run and the gate entries of its members that no consumer
        here takes (their ids are fixed by position: see member_id), so none can be lost to a crash."""
        eng = self.engine
        rt = eng._runtime()
        batch = rt.journal.batch()
        idx, rec, copy = eng._start_batch(rt, CHAIN_WORKFLOW, (plan, data), chain_id, batch)
        tel = _telemetry.current
        if tel is not None:
            tel.start_run(batch, rec.run_id, CHAIN_WORKFLOW)
        gated = False
        for stage, members in enumerate(plan.get("member_opts") or ()):
            for index, opts in enumerate(members):
                if opts.get("gated"):
                    gated = True
                    batch.kv_put(NS_GATED, member_id(rec.run_id, stage, index),
                                 (opts.get("queue", "default"), opts.get("requires", {})))
        existing = rt.journal.commit(batch)[idx]
        if tel is not None and existing is not None:
            tel.start_failed(rec.run_id)
        eng._after_start(rt, rec, copy, existing, helps=rt.quiet())
        if gated and self.dispatcher is None and eng.is_open:
            self.start_dispatcher()
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return rec.run_id

    def chain(self, name: str) -> Chain:
        return Chain(self, name)

    # --- cancellation ------------------------------------------------------------------------
    def _execution(self, execution_id: str) -> RunRecord:
        rec = self.engine._record(execution_id)
        if task_name(rec.workflow) is None and rec.workflow != CHAIN_WORKFLOW:
            raise ConfigError(f"run {execution_id!r} is a run of workflow {rec.workflow!r}, not a task execution")
        return rec

    def cancel_execution(self, execution_id: str) -> bool:
        """Cancel a delayed, queued or running execution (journaled); False if it had ended."""
        self._execution(execution_id)
        return self.engine.cancel(execution_id)

    def _cancel_where(self, keep: Callable[[RunRecord], bool], ids: Iterable[str] | None = None) -> int:
        rt = self.engine._runtime()
        recs = rt.journal.get_runs(list(ids) if ids is not None else rt.journal.active_run_ids())
        n = 0
        for rec in recs:
            if rec is not None and not rec.finished and keep(rec) and self.engine.cancel(rec.run_id):
                n += 1
        return n

    def cancel_by_name(self, name: str) -> int:
        spec = self.spec(name)
        return self._cancel_where(lambda r: r.workflow == spec.workflow)

    def cancel_by_tag(self, tag: str) -> int:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"cancel_by_tag needs a non-empty tag, got {tag!r}")
        return self._cancel_where(lambda r: True, self.engine._runtime().journal.tagged(tag))

    def cancel_chain(self, chain_id: str) -> bool:
        rec = self.engine._record(chain_id)
        if rec.workflow != CHAIN_WORKFLOW:
            raise ConfigError(f"run {chain_id!r} is not a chain, group or chord (workflow {rec.workflow!r})")
        return self.engine.cancel(chain_id)

    def cancel_all(self) -> int:
        """Every unfinished execution, chain, group and chord."""
        return self._cancel_where(lambda r: task_name(r.workflow) is not None or r.workflow == CHAIN_WORKFLOW)

    # --- status ------------------------------------------------------------------------------
    def event(self, st: RunStatus) -> TaskEvent:
        rt = self.engine._runtime()
        return event_of(rt.journal, rt.final_event, st, rt.clock.now())

    def task_status(self, execution_id: str) -> TaskEvent:
        rec = self._execution(execution_id)
        return self.event(RunStatus.from_record(rec))

    def tasks(self, name: str | None = None, tag: str | None = None, state: str | None = None) -> list[TaskInfo]:
        wf = None if name is None else self.spec(name).workflow
        rt = self.engine._runtime()
        return read_tasks(rt.journal, rt.clock.now(), wf, tag, state)

    # --- dead letters ------------------------------------------------------------------------
    def dead_letters(self) -> list[DeadLetter]:
        rt = self.engine._runtime()
        return read_dead_letters(rt.journal, rt.clock.now())

    def requeue(self, execution_id: str) -> str:
        """Enqueue a dead letter again (same task, input and options); returns the new execution id."""
        rec = self._execution(execution_id)
        task = task_name(rec.workflow)
        if task is None or rec.state != "failed":
            raise ConfigError(f"execution {execution_id!r} is {rec.state}, not a dead letter (only failed executions requeue)")
        journal = self.engine._runtime().journal
        if journal.kv_get(NS_REQUEUED, execution_id) is not None:
            raise ConfigError(f"execution {execution_id!r} was already requeued as {journal.kv_get(NS_REQUEUED, execution_id)!r}")
        events = journal.events(execution_id)
        data, opts = events[0].data["args"]
        spec = self.spec(task)

        def mark(batch: WriteBatch, run_id: str) -> None:
            batch.kv_put(NS_REQUEUED, execution_id, run_id)

        return self.create(spec, dict(data), dict(opts), None, mark)



# --- reads on a bare journal: the engine's listings, and the CLI's beside a live engine -------------
def read_tasks(journal: Journal, now: float, workflow: str | None = None, tag: str | None = None,
               state: str | None = None) -> list[TaskInfo]:
    """Executions (of one task's workflow, with a tag, in a state), in run id order."""
    if state is not None and state not in TASK_STATES:
        raise ConfigError(f"unknown task state {state!r}; use one of {', '.join(TASK_STATES)}")
    if tag is not None:
        recs = [r for r in journal.get_runs(journal.tagged(tag)) if r is not None]
    elif state in ("queued", "running", "retrying"):
        recs = [r for r in journal.get_runs(journal.active_run_ids()) if r is not None]
    else:
        recs = journal.runs(None, workflow)
    out = []
    for rec in recs:
        task = task_name(rec.workflow)
        if task is None or (workflow is not None and rec.workflow != workflow):
            continue
        ev = event_of(journal, lambda rid: final_event(journal, rid), RunStatus.from_record(rec), now)
        st = state_of(ev)
        if state is None or st == state:
            queue = opts_of(journal, rec.run_id).get("queue", "default")
            out.append(TaskInfo(rec.run_id, task, st, ev, rec.created_at, rec.updated_at, queue))
    return out


def read_dead_letters(journal: Journal, now: float) -> list[DeadLetter]:
    """Failed executions not requeued yet, in run id order."""
    out = []
    for rec in journal.runs("failed"):
        task = task_name(rec.workflow)
        if task is None or journal.kv_get(NS_REQUEUED, rec.run_id) is not None:
            continue
        events = journal.events(rec.run_id, strict=False)
        attempts = sum(1 for e in events if e.kind in ("step_attempt_failed", "step_failed"))
        args = events[0].data.get("args", ({}, {})) if events and isinstance(events[0].data, dict) else ({}, {})
        ev = event_of(journal, lambda rid: final_event(journal, rid), RunStatus.from_record(rec), now)
        message = getattr(ev, "message", rec.error or "")
        out.append(DeadLetter(rec.run_id, task, message, attempts, dict(args[0]), rec.updated_at))
    return out
