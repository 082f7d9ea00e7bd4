"""Executors: `TaskExecutor` / `TypedTaskExecutor[In, Out]`, and the registry that finds them by schema type.

A node's `type` names an executor by its namespaced schema type (`task.email.send`). The registry is
what a process uses to run graph nodes, so every process that may run (or recover) a graph run must
register the same executors before the engine opens (see `GraphRunner`)."""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from ..errors import ConfigError
from ._results import Effect, TaskFailure, TaskResult, TaskSuccess

if TYPE_CHECKING:
    from ._context import ExecutionContext

__all__ = [
    "TaskExecutor",
    "TypedTaskExecutor",
    "ExecutorRegistry",
    "default_registry",
    "BUILTIN_TYPES",
    "PASS",
    "WAIT",
    "USER_TASK",
    "SUCCEED",
    "FAIL",
]

PASS = "graph.pass"
WAIT = "graph.wait"
USER_TASK = "graph.user_task"
SUCCEED = "graph.succeed"
FAIL = "graph.fail"
BUILTIN_TYPES = (PASS, WAIT, USER_TASK, SUCCEED, FAIL)

_SCHEMA_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)+$")

In = TypeVar("In")
Out = TypeVar("Out")


class TaskExecutor:
    """Business logic of one node type. Subclasses set `schema_type` and `name` and implement `execute`
    (sync or `async def`); it reads the `ExecutionContext` and returns `TaskSuccess` or `TaskFailure`
    (an exception it raises becomes a retryable `TaskFailure.internal`)."""

    schema_type: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # the ports `execute` may return; when set, edges on other ports are rejected on load
    output_ports: ClassVar[tuple[str, ...] | None] = None

    def execute(self, context: ExecutionContext) -> TaskResult | Awaitable[TaskResult]:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def validate_config(self, config: Mapping[str, Any]) -> list[str]:
        """Problems with a node's `config` (checked when a definition is loaded); [] if it is fine."""
        return []

    def is_async(self) -> bool:
        """Whether `execute` returns an awaitable (the node's step then runs on the engine's event loop)."""
        return inspect.iscoroutinefunction(self.execute)

    def describe(self) -> dict[str, Any]:
        """What a workflow designer shows for this type."""
        return {
            "schema_type": self.schema_type,
            "name": self.name or self.schema_type,
            "description": self.description,
            "output_ports": None if self.output_ports is None else list(self.output_ports),
        }


class TypedTaskExecutor(TaskExecutor, Generic[In, Out]):
    """An executor over typed values: `from_input` builds `In` from the node input, `execute_typed`
    (sync or async) returns `Out`, `to_output` turns it into the output dict. A `from_input` error is a
    validation failure (not retried); an `execute_typed` error a retryable internal failure.
    `execute_typed` may also return a `TaskSuccess`/`TaskFailure` itself; `output_port` and `effects`
    derive routing and effects from `Out`."""

    def from_input(self, input: Mapping[str, Any]) -> In:
        raise NotImplementedError(f"{type(self).__name__}.from_input")

    def to_output(self, output: Out) -> Mapping[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.to_output")

    def execute_typed(self, input: In, context: ExecutionContext) -> Out | Awaitable[Out]:
        raise NotImplementedError(f"{type(self).__name__}.execute_typed")

    def output_port(self, output: Out) -> str | None:
        return None

    def effects(self, output: Out) -> Sequence[Effect]:
        return ()

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.execute_typed)

    def execute(self, context: ExecutionContext) -> TaskResult | Awaitable[TaskResult]:
        try:
            typed = self.from_input(context.input)
        except Exception as exc:  # noqa: BLE001 - bad input is the caller's data, reported as such
            return TaskFailure.validation(
                f"input rejected by {self.schema_type}: {type(exc).__name__}: {exc}",
                details={"exception": type(exc).__name__},
            )
        if self.is_async():
            return self._execute_async(typed, context)
        try:
            out = self.execute_typed(typed, context)
        except Exception as exc:  # noqa: BLE001 - wrapped as a failure, as the API promises
            return _internal(self, exc)
        return self._wrap(out)  # type: ignore[arg-type]

    async def _execute_async(self, typed: In, context: ExecutionContext) -> TaskResult:
        try:
            out = await self.execute_typed(typed, context)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001
            return _internal(self, exc)
        return self._wrap(out)

    def _wrap(self, out: Out) -> TaskResult:
        if isinstance(out, (TaskSuccess, TaskFailure)):
            return out
        try:
            return TaskSuccess(self.to_output(out), self.output_port(out), tuple(self.effects(out)))
        except Exception as exc:  # noqa: BLE001 - a bug in to_output: retrying would not help
            failure = _internal(self, exc)
            return TaskFailure(failure.error_type, failure.message, False, failure.details)


def _internal(executor: TaskExecutor, exc: BaseException) -> TaskFailure:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return TaskFailure.internal(
        f"{executor.schema_type} raised {type(exc).__name__}: {exc}",
        details={"exception": type(exc).__name__, "traceback": "".join(tb[-3:])},
    )


E = TypeVar("E", bound=TaskExecutor)


class ExecutorRegistry:
    """Executors by schema type; `graph.*` types are built in (pass, wait, user_task, succeed, fail)."""

    def __init__(self) -> None:
        self._executors: dict[str, TaskExecutor] = {}

    @overload
    def register(self, executor: type[E]) -> type[E]: ...
    @overload
    def register(self, executor: E) -> E: ...

    def register(self, executor: Any) -> Any:
        """Register an executor instance, or (as a class decorator) a class with a no-argument constructor."""
        instance = executor() if isinstance(executor, type) else executor
        if not isinstance(instance, TaskExecutor):
            raise ConfigError(f"{executor!r} is not a TaskExecutor")
        st = instance.schema_type
        if not isinstance(st, str) or not _SCHEMA_TYPE.match(st):
            raise ConfigError(
                f"{type(instance).__name__}.schema_type must be a namespaced name like 'task.email.send', got {st!r}"
            )
        if st.startswith("graph."):
            raise ConfigError(f"schema type {st!r}: the 'graph.' namespace is reserved for built-in node types")
        other = self._executors.get(st)
        if other is not None and type(other).__qualname__ != type(instance).__qualname__:
            raise ConfigError(f"schema type {st!r} is already registered to {type(other).__qualname__}")
        self._executors[st] = instance
        return executor

    def get(self, schema_type: str) -> TaskExecutor:
        try:
            return self._executors[schema_type]
        except KeyError:
            raise ConfigError(f"no executor registered for type {schema_type!r}", schema_type=schema_type) from None

    def knows(self, schema_type: str) -> bool:
        return schema_type in self._executors or schema_type in BUILTIN_TYPES

    def __contains__(self, schema_type: object) -> bool:
        return schema_type in self._executors

    def types(self) -> list[str]:
        return sorted(self._executors)

    def describe(self) -> list[dict[str, Any]]:
        return [self._executors[t].describe() for t in self.types()]


default_registry = ExecutorRegistry()
"""The registry `GraphRunner` and the CLI use when none is given; `@default_registry.register` adds to it."""
