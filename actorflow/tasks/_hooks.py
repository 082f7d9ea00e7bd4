"""Lifecycle hooks around a task's enqueue, start, success, failure and retry (metrics, audit).

A hook is a sync or async callable taking one frozen payload. It runs where the event happens:
enqueue hooks in the caller of enqueue(); the others around each handler attempt, in the process
and thread that runs the handler (a shard or a step worker process under multiproc/step_processes:
register hooks before open(), they travel with the task). A hook that raises is logged and never
breaks the task; hooks are called in registration order, and run on live attempts only (never when
a finished step replays from the journal)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import structlog

from ..errors import ConfigError

__all__ = [
    "TaskHooks",
    "HookEvent",
    "EnqueuedInfo",
    "StartedInfo",
    "SucceededInfo",
    "FailedInfo",
    "RetryInfo",
    "HOOK_KINDS",
]

log = structlog.get_logger("actorflow.tasks")


@dataclass(frozen=True, slots=True)
class EnqueuedInfo:
    """An execution is durable and queued."""

    execution_id: str
    task: str
    queue: str
    input: dict[str, Any]
    priority: int
    tags: tuple[str, ...]
    requires: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartedInfo:
    """A handler attempt begins."""

    execution_id: str
    task: str
    queue: str
    attempt: int


@dataclass(frozen=True, slots=True)
class SucceededInfo:
    """A handler attempt returned a value (it is journaled next: at-least-once, as the handler)."""

    execution_id: str
    task: str
    queue: str
    attempt: int
    output: Any
    duration: float


@dataclass(frozen=True, slots=True)
class FailedInfo:
    """A handler attempt failed and no retry follows (the execution becomes a dead letter)."""

    execution_id: str
    task: str
    queue: str
    attempt: int
    error: str
    duration: float


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """A handler attempt failed and the retry policy will try again."""

    execution_id: str
    task: str
    queue: str
    attempt: int
    error: str
    duration: float


HookEvent: TypeAlias = EnqueuedInfo | StartedInfo | SucceededInfo | FailedInfo | RetryInfo
HOOK_KINDS: dict[str, type[Any]] = {
    "enqueue": EnqueuedInfo,
    "start": StartedInfo,
    "success": SucceededInfo,
    "failure": FailedInfo,
    "retry": RetryInfo,
}
_KIND_OF = {cls: kind for kind, cls in HOOK_KINDS.items()}


class TaskHooks:
    """The hooks of one engine, by kind (picklable when the hooks are: shipped with the tasks)."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[Callable[[Any], Any]]] = {k: [] for k in HOOK_KINDS}

    def add(self, kind: str, fn: Callable[[Any], Any]) -> None:
        if kind not in HOOK_KINDS:
            raise ConfigError(f"unknown task hook {kind!r}; use one of {', '.join(HOOK_KINDS)}", hook=kind)
        if not callable(fn):
            raise ConfigError(f"task hook {kind!r} must be a callable taking one payload, got {fn!r:.80}")
        self.hooks[kind].append(fn)

    def remove(self, kind: str, fn: Callable[[Any], Any]) -> bool:
        hooks = self.hooks.get(kind, [])
        if fn in hooks:
            hooks.remove(fn)
            return True
        return False

    def wanted(self, kind: str) -> bool:
        return bool(self.hooks[kind])

    def fire(self, event: HookEvent) -> None:
        """Call each hook of the event's kind from sync code; async hooks run to completion here
        (or are scheduled on this thread's running loop). Errors are logged, never raised."""
        for fn in list(self.hooks[_KIND_OF[type(event)]]):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    try:
                        loop = asyncio.get_running_loop()
                    except RuntimeError:
                        asyncio.run(_awaited(result))
                    else:
                        loop.create_task(_logged(result, fn, event))
            except Exception as exc:  # noqa: BLE001 - a hook never breaks the task
                _log(fn, event, exc)

    async def afire(self, event: HookEvent) -> None:
        """From async code (an async handler's attempt): async hooks are awaited in line."""
        for fn in list(self.hooks[_KIND_OF[type(event)]]):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a hook never breaks the task
                _log(fn, event, exc)


async def _awaited(aw: Any) -> Any:
    return await aw


async def _logged(aw: Any, fn: Any, event: HookEvent) -> None:
    try:
        await aw
    except Exception as exc:  # noqa: BLE001 - a hook never breaks the task
        _log(fn, event, exc)


def _log(fn: Any, event: HookEvent, exc: BaseException) -> None:
    log.warning("task hook raised; ignored", hook=getattr(fn, "__qualname__", repr(fn)), kind=_KIND_OF[type(event)],
                execution_id=event.execution_id, task=event.task, error=f"{type(exc).__name__}: {exc}")
