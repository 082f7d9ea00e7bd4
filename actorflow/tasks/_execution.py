"""A task execution is a durable run of the built-in workflow "task:<name>": a durable delay, a wait
for a dispatch slot when the task is limited, then the handler as one journaled step with the task's
RetryPolicy and timeout. Durability, kill -9 recovery, cancellation and multiproc come from the engine."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

from .._messages import StepProgress
from .._retry import RetryPolicy
from .._types import current_step, step_post
from ..errors import Cancelled, StepFailed
from ._model import _CANCELLED, RetryLater, TaskContext, TaskFailure, TaskResult, TaskSpec, _cancel_lock

__all__ = ["make_execution_workflow", "HANDLER_STEP", "DISPATCH_SIGNAL", "clean_message"]

HANDLER_STEP = "handler"
DISPATCH_SIGNAL = "actorflow.dispatch"

_RUNNING: set[str] = set()  # executions whose handler runs in this process now


def _mark_cancelled(execution_id: str) -> None:
    with _cancel_lock:
        if execution_id in _RUNNING:
            _CANCELLED.add(execution_id)


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
        _RUNNING.add(execution_id)


def _leave(execution_id: str) -> None:
    with _cancel_lock:
        _RUNNING.discard(execution_id)
        _CANCELLED.discard(execution_id)


def _context(spec: TaskSpec, execution_id: str, input: dict[str, Any], progress: Callable[[float], None]) -> TaskContext:
    return TaskContext(dict(input), current_step().attempt, execution_id, spec.name, progress)


def _call_sync(spec: TaskSpec, execution_id: str, input: dict[str, Any], progress: Callable[[float], None]) -> Any:
    _enter(execution_id)
    try:
        return _outcome(spec.fn(_context(spec, execution_id, input, progress), input))
    finally:
        _leave(execution_id)


async def _call_async(spec: TaskSpec, execution_id: str, input: dict[str, Any], progress: Callable[[float], None]) -> Any:
    _enter(execution_id)
    try:
        return _outcome(await spec.fn(_context(spec, execution_id, input, progress), input))
    finally:
        _leave(execution_id)


def _progress_sink(ctx: Any) -> Callable[[float], None]:
    """How a handler thread reaches its run: a StepProgress message posted to the runtime that hosts
    the run (in this process: the embedded engine's, or the shard's under system='multiproc')."""
    run_id = ctx.run_id
    lock = threading.Lock()
    last = [-1.0]

    def report(fraction: float) -> None:
        with lock:
            if fraction == last[0]:
                return
            last[0] = fraction
        post = step_post.get(None)  # set by the step pool running this step (None in a worker process)
        if post is not None:
            post(StepProgress(run_id, fraction))

    return report


def clean_message(error: str | None) -> str:
    """A run's error text as a task failure message ("TaskFailure: x" -> "x")."""
    text = error or ""
    for prefix in ("TaskFailure: ", "WorkflowFailed: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def make_execution_workflow(spec: TaskSpec) -> Callable[..., Any]:
    """The workflow of one task (picklable with cloudpickle when the handler is)."""
    is_async = inspect.iscoroutinefunction(spec.fn)

    async def execute(ctx: Any, input: dict[str, Any], opts: dict[str, Any]) -> Any:
        delay = opts.get("delay")
        if delay:
            await ctx.sleep("delay", delay)  # durable: a timer in the journal's timer index
        if spec.limited:
            await ctx.wait_signal(DISPATCH_SIGNAL)  # sent by the limit's owner (the engine facade)
        policy: RetryPolicy = opts.get("retry") or spec.retry or RetryPolicy.none()
        policy = dataclasses.replace(policy, non_retryable=(*policy.non_retryable, TaskFailure))
        timeout = opts.get("timeout", spec.timeout)
        call = functools.partial(_call_async if is_async else _call_sync, spec, ctx.run_id, input, _progress_sink(ctx))
        try:
            return await ctx.step(HANDLER_STEP, call, retry=policy, timeout=timeout)
        except Cancelled:
            _mark_cancelled(ctx.run_id)  # the handler thread sees ctx.cancelled from now on
            raise
        except StepFailed as exc:
            raise TaskFailure(clean_message(str(exc.evidence.get("error", exc)))) from None

    execute.__name__ = execute.__qualname__ = f"task_{spec.name}"
    return execute
