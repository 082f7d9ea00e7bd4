"""Fixtures for graph workflow tests: a registry of small executors, and an open in-memory engine."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actorflow import Engine  # noqa: E402
from actorflow.graph import (  # noqa: E402
    ExecutionContext,
    ExecutorRegistry,
    GraphRunner,
    TaskExecutor,
    TaskFailure,
    TaskResult,
    TaskSuccess,
)
from actorflow.testing import memory_engine  # noqa: E402

TIMEOUT = 20.0


class Echo(TaskExecutor):
    """Outputs its config's `output` (default: {node: True}) on its config's `port`; counts calls."""

    schema_type = "test.echo"
    name = "Echo"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def execute(self, context: ExecutionContext) -> TaskResult:
        with self.lock:
            self.calls.append((context.node_id, dict(context.input)))
        out = context.get_config("output", {context.node_id: True})
        return TaskSuccess(out, output_port=context.get_config("port"))

    def validate_config(self, config: Mapping[str, Any]) -> list[str]:
        if "output" in config and not isinstance(config["output"], dict):
            return ["output must be an object"]
        return []

    def nodes(self) -> list[str]:
        return [n for n, _ in self.calls]


class Flaky(TaskExecutor):
    """Fails (retryably, or permanently with config permanent=true) until attempt `succeed_on`."""

    schema_type = "test.flaky"
    name = "Flaky"

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def execute(self, context: ExecutionContext) -> TaskResult:
        self.attempts.append(context.attempt)
        if context.attempt < context.get_config("succeed_on", 99):
            if context.get_config("permanent", False):
                return TaskFailure.permanent("no way", error_type=context.get_config("error_type", "permanent"))
            return TaskFailure.internal(f"attempt {context.attempt} failed")
        return TaskSuccess({"attempt": context.attempt, "was_retry": context.is_retry})


@pytest.fixture
def registry() -> ExecutorRegistry:
    reg = ExecutorRegistry()
    reg.register(Echo())
    reg.register(Flaky())
    return reg


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = memory_engine()
    with e:
        yield e


@pytest.fixture
def runner(engine: Engine, registry: ExecutorRegistry) -> GraphRunner:
    return GraphRunner(engine, registry)


def chain(*ids: str, type: str = "test.echo") -> dict[str, Any]:
    """A linear graph a -> b -> c of echo nodes."""
    return {
        "name": "chain",
        "nodes": [{"id": i, "type": type} for i in ids],
        "edges": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])],
    }
