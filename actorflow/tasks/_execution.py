"""A task execution is a durable run of the built-in workflow "task:<name>": a durable delay, a wait
for a dispatch (a limit's slot, or a consumer that takes its queue and requirements), then the handler
as one journaled step with the task's RetryPolicy and timeout - again as a new step after an attempt
was lost (lease ran out, worker process died). Durability, kill -9 recovery, cancellation and
multiproc come from the engine. The handler wrapper runs hooks, holds the lease and counts the
attempt in flight around each live attempt."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._messages import StepProgress
from .._procsteps import StepWorkerDied, cancel_in_workers, lost_in_worker, to_host
from .._retry import RetryPolicy
from .._types import current_step, step_post
from ..errors import Cancelled, StepFailed, StepTimeout
from ._hooks import FailedInfo, HookEvent, RetryInfo, StartedInfo, SucceededInfo, TaskHooks
from ._leases import LEASES, LeaseBeat, LeaseLost, inflight_begin, inflight_end, lost_error
from ._model import _CANCELLED, RetryLater, TaskContext, TaskFailure, TaskResult, TaskSpec, _cancel_lock
from ._routing import DEFAULT_QUEUE

__all__ = ["make_execution_workflow", "HANDLER_STEP", "DISPATCH_SIGNAL", "clean_message", "MAX_LOST"]

MAX_LOST = 3  # lost attempts (lease ran out, worker died) run again; one more and the execution fails

HANDLER_STEP = "handler"
DISPATCH_SIGNAL = "actorflow.dispatch"

# executions whose handler runs in this process now -> how many attempts of it (a lost attempt's
# thread may still run beside its replacement: the cancel mark goes with the last one)
_RUNNING: dict[str, int] = {}


def _mark_cancelled(execution_id: str) -> None:
    with _cancel_lock:
        if execution_id in _RUNNING:
            _CANCELLED.add(execution_id)
    cancel_in_workers(execution_id)  # a handler in a step worker process sees it too


def _outcome(value: Any) -> Any:
    if isinstance(value, TaskResult):
        if value.kind == "failure":
            raise TaskFailure(value.message)
        if value.kind == "retry_later":
            raise RetryLater(value.message)
        return value.data
    return value


def _enter(execution_id: str) -> None:
    with _cancel_lock:
        _RUNNING[execution_id] = _RUNNING.get(execution_id, 0) + 1


def _leave(execution_id: str) -> bool:
    """An attempt ended: the execution's cancel mark (and in-flight note) stays while another
    attempt of it runs here; True if none does."""
    with _cancel_lock:
        left = _RUNNING.get(execution_id, 1) - 1
        if left > 0:
            _RUNNING[execution_id] = left
            return False
        _RUNNING.pop(execution_id, None)
        _CANCELLED.discard(execution_id)
        return True


@dataclass(frozen=True)
class _Attempt:
    """What the handler wrapper needs besides the handler: hooks, queue, lease (picklable)."""

    spec: TaskSpec
    hooks: TaskHooks
    queue: str
    execution_id: str
    timeout: float | None = None  # the step's timeout per attempt: past it the run moved on


class _Deadline:
    """The end hook of one attempt fires once: at its end, or when its timeout passes first (the
    run then records a timeout and retries or fails; the thread may still return later, and what
    it returns is discarded, so it must not report a success)."""

    def __init__(self, a: _Attempt, ctx: TaskContext, started: float, policy: RetryPolicy) -> None:
        self._lock = threading.Lock()
        self._over = False
        self._timer: threading.Timer | None = None
        if a.timeout is not None:
            self._timer = threading.Timer(a.timeout, self._expire, (a, ctx, started, policy))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, a: _Attempt, ctx: TaskContext, started: float, policy: RetryPolicy) -> None:
        with self._lock:
            if self._over:
                return
            self._over = True
        err = StepTimeout(a.execution_id, HANDLER_STEP, ctx.attempt, f"attempt timed out after {a.timeout}s")
        ev = _ended(a, ctx, started, policy, None, err)
        if ev is not None:
            a.hooks.fire(ev)

    def claim(self) -> bool:
        """True if the attempt ended before its timeout (its end hook is the caller's to fire)."""
        with self._lock:
            if self._over:
                return False
            self._over = True
        if self._timer is not None:
            self._timer.cancel()
        return True


def _never() -> bool:
    return False


def _lease_of(a: _Attempt) -> tuple[Callable[[], None], Callable[[], None], Callable[[], bool]]:
    """(heartbeat, release, lost) of this attempt's lease; no-ops when the task has none."""
    lease = a.spec.lease
    if lease is None:
        return (lambda: None), (lambda: None), _never
    info = current_step()
    key = (info.run_id, info.seq, info.attempt)
    pid = os.getpid()
    if to_host(LeaseBeat(*key, lease, pid)):  # in a step worker process: the host holds the lease
        every = lease / 5
        last = [time.monotonic()]

        def beat_remote() -> None:
            now = time.monotonic()
            if now - last[0] >= every:
                last[0] = now
                to_host(LeaseBeat(*key, lease, pid))

        def end_remote() -> None:
            to_host(LeaseBeat(*key, lease, pid, done=True))

        # a lost attempt's worker process is killed; a node is told (StepCancel) and its handler sees it
        return beat_remote, end_remote, functools.partial(lost_in_worker, key)
    LEASES.hold(key, lease, step_post.get(None))
    return (lambda: LEASES.beat(key)), (lambda: LEASES.release(key)), (lambda: key in LEASES.lost)


def _begin(a: _Attempt, input: dict[str, Any], progress: Callable[[float], None]) -> tuple[TaskContext, Callable[[], None], float]:
    _enter(a.execution_id)
    inflight_begin(a.execution_id, a.queue)
    beat, release, lost = _lease_of(a)
    ctx = TaskContext(dict(input), current_step().attempt, a.execution_id, a.spec.name, progress, None, a.queue, beat, lost)
    return ctx, release, time.monotonic()


def _ended(a: _Attempt, ctx: TaskContext, started: float, policy: RetryPolicy, out: Any, exc: BaseException | None) -> HookEvent | None:
    """The hook event of an attempt's end (None: no hook wants it)."""
    took = time.monotonic() - started
    common = (a.execution_id, a.spec.name, a.queue, ctx.attempt)
    if ctx._lost():  # its lease ran out: whatever it returned is discarded and a new attempt runs
        return RetryInfo(*common, "LeaseLost: the attempt lost its lease", took) if a.hooks.wanted("retry") else None
    if exc is None:
        return SucceededInfo(*common, out, took) if a.hooks.wanted("success") else None
    text = f"{type(exc).__name__}: {exc}"
    again = not isinstance(exc, (TaskFailure, Cancelled)) and policy.should_retry(ctx.attempt, exc)
    if again:
        return RetryInfo(*common, text, took) if a.hooks.wanted("retry") else None
    return FailedInfo(*common, text, took) if a.hooks.wanted("failure") else None


def _call_sync(a: _Attempt, policy: RetryPolicy, input: dict[str, Any], progress: Callable[[float], None]) -> Any:
    ctx, release, started = _begin(a, input, progress)
    deadline = _Deadline(a, ctx, started, policy)
    out, exc = None, None
    try:
        if a.hooks.wanted("start"):
            a.hooks.fire(StartedInfo(a.execution_id, a.spec.name, a.queue, ctx.attempt))
        out = _outcome(a.spec.fn(ctx, input))
        return out
    except BaseException as err:
        exc = err
        raise
    finally:
        release()
        if _leave(a.execution_id):
            inflight_end(a.execution_id)
        ev = _ended(a, ctx, started, policy, out, exc) if deadline.claim() else None
        if ev is not None:
            a.hooks.fire(ev)
        exc = None  # else this frame and its exception's traceback hold each other: a cycle only a full GC frees


async def _call_async(a: _Attempt, policy: RetryPolicy, input: dict[str, Any], progress: Callable[[float], None]) -> Any:
    ctx, release, started = _begin(a, input, progress)
    deadline = _Deadline(a, ctx, started, policy)
    out, exc = None, None
    try:
        if a.hooks.wanted("start"):
            await a.hooks.afire(StartedInfo(a.execution_id, a.spec.name, a.queue, ctx.attempt))
        out = _outcome(await a.spec.fn(ctx, input))
        return out
    except BaseException as err:
        exc = err
        raise
    finally:
        release()
        if _leave(a.execution_id):
            inflight_end(a.execution_id)
        ev = _ended(a, ctx, started, policy, out, exc) if deadline.claim() else None
        if ev is not None:
            await a.hooks.afire(ev)
        exc = None  # no frame <-> traceback cycle (see _call_sync)


class _Progress:
    """How a handler reaches its run: a StepProgress message posted to the runtime that hosts the
    run (the embedded engine's, or the shard's under system='multiproc'; from a step worker process
    through its channel to the host). Picklable: it travels with the handler to worker processes."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last = -1.0

    def __call__(self, fraction: float) -> None:
        if fraction == self.last:  # a repeat is not news (a race here only costs one message)
            return
        self.last = fraction
        post = step_post.get(None)  # set by the step pool running this step
        if post is not None:
            post(StepProgress(self.run_id, fraction))


def _progress_sink(ctx: Any) -> Callable[[float], None]:
    return _Progress(ctx.run_id)


def clean_message(error: str | None) -> str:
    """A run's error text as a task failure message ("TaskFailure: x" -> "x")."""
    text = error or ""
    for prefix in ("TaskFailure: ", "WorkflowFailed: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


_NO_RETRY = RetryPolicy.none()
_POLICIES: dict[int, tuple[RetryPolicy, RetryPolicy]] = {}  # id(policy) -> (policy, its task form)


def _task_policy(policy: RetryPolicy) -> RetryPolicy:
    """`policy` that does not retry a TaskFailure or a lost attempt (those have their own rules).

    Memoized by identity (the task's own and the no-retry policy are the same object every time;
    equality would not do: it ignores a custom delay function): building and checking a policy per
    execution cost ~30 µs."""
    hit = _POLICIES.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    task = dataclasses.replace(policy, non_retryable=(*policy.non_retryable, TaskFailure, LeaseLost, StepWorkerDied))
    if len(_POLICIES) >= 256:
        _POLICIES.clear()
    _POLICIES[id(policy)] = (policy, task)  # holding `policy` keeps its id from being reused
    return task


def make_execution_workflow(spec: TaskSpec, hooks: TaskHooks | None = None) -> Callable[..., Any]:
    """The workflow of one task (picklable with cloudpickle when the handler and hooks are).

    Every branch depends only on the journaled options, so a replay takes the same path: the
    dispatch wait when the task is limited or the execution was gated (no consumer took its queue
    or requirements at enqueue), and one handler step per lost attempt (at most MAX_LOST)."""
    is_async = inspect.iscoroutinefunction(spec.fn)
    task_hooks = hooks if hooks is not None else TaskHooks()

    async def execute(ctx: Any, input: dict[str, Any], opts: dict[str, Any]) -> Any:
        delay = opts.get("delay")
        if delay:
            await ctx.sleep("delay", delay)  # durable: a timer in the journal's timer index
        if spec.limited or opts.get("gated"):
            await ctx.wait_signal(DISPATCH_SIGNAL)  # sent by the dispatcher (limits, placement) in the facade
        policy = _task_policy(opts.get("retry") or spec.retry or _NO_RETRY)
        timeout = opts.get("timeout", spec.timeout)
        queue = opts.get("queue", DEFAULT_QUEUE)
        attempt = _Attempt(spec, task_hooks, queue, ctx.run_id, timeout)
        call: Any = functools.partial(_call_async if is_async else _call_sync, attempt, policy, input, _progress_sink(ctx))
        # the placement of this step, as data: a remote dispatcher may place it on a matching node
        call.actorflow_step = {
            "kind": "task", "task": spec.name, "execution_id": ctx.run_id, "queue": queue,
            "requires": dict(opts.get("requires") or {}), "lease": spec.lease, "journal_deaths": True,
        }
        lost = 0
        while True:
            try:
                return await ctx.step(HANDLER_STEP, call, retry=policy, timeout=timeout, requires=opts.get("place"))
            except Cancelled:
                _mark_cancelled(ctx.run_id)  # the handler thread sees ctx.cancelled from now on
                raise
            except StepFailed as exc:
                error = str(exc.evidence.get("error", exc))
                if lost_error(error) and lost < MAX_LOST:
                    lost += 1  # journaled as a failed step; a fresh attempt runs (at-least-once)
                    continue
                if lost_error(error):
                    raise TaskFailure(f"lost {lost + 1} attempts; last: {clean_message(error)}") from None
                raise TaskFailure(clean_message(error)) from None

    execute.__name__ = execute.__qualname__ = f"task_{spec.name}"
    return execute
