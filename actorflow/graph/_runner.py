"""`GraphRunner`: graph runs as durable runs of one registered workflow, `actorflow.graph`.

A run's input is the canonical definition plus the workflow input, so a recovered run walks the
very graph it started with, whatever files changed since. Executors are code and cannot be
journaled: every process that opens the engine must create a `GraphRunner` with a registry holding
the same executors *before* `engine.open()` (the CLI imports them with `--app MODULE`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._context import WorkflowContext
from .._engine import Engine
from .._handle import RunHandle
from ..errors import PayloadError
from ._definition import GraphDefinition
from ._executor import ExecutorRegistry, default_registry
from ._load import load_definition
from ._paths import NotJson, to_json
from ._walker import run_graph

__all__ = ["GraphRunner", "WORKFLOW_NAME"]

WORKFLOW_NAME = "actorflow.graph"

Source = GraphDefinition | Mapping[str, Any] | str | os.PathLike[str]


class GraphRunner:
    """Registers the graph workflow on `engine` and starts graph runs on it.

    A run's result is a dict: `output` (the workflow variables at the end: the input merged with every
    node output), `ends` (end nodes reached), `visited` (nodes in execution order) and `events` (from
    `RecordEvent` effects and user-task bookkeeping)."""

    def __init__(self, engine: Engine, registry: ExecutorRegistry | None = None) -> None:
        self.engine = engine
        self.registry = registry if registry is not None else default_registry
        reg = self.registry

        async def graph_workflow(ctx: WorkflowContext, definition: dict[str, Any], workflow_input: dict[str, Any]) -> dict[str, Any]:
            return await run_graph(ctx, reg, definition, workflow_input)

        engine.workflow(name=WORKFLOW_NAME)(graph_workflow)

    def load(self, source: Source) -> GraphDefinition:
        """Validate a definition against this runner's registry (dict, file path or GraphDefinition)."""
        return load_definition(source, self.registry)

    def _args(self, source: Source, workflow_input: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        graph = self.load(source)
        if workflow_input is None:
            workflow_input = {}
        if not isinstance(workflow_input, Mapping):
            raise PayloadError(f"graph input must be a JSON object, got {type(workflow_input).__name__}")
        try:
            data = to_json(workflow_input, "input")
        except NotJson as exc:
            raise PayloadError(f"graph input is not JSON: {exc}", path=exc.path) from None
        return graph.to_dict(), data

    def start(self, source: Source, workflow_input: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> RunHandle:
        """Validate, then start a durable graph run (nothing is written if validation fails)."""
        definition, data = self._args(source, workflow_input)
        return self.engine.start(WORKFLOW_NAME, definition, data, run_id=run_id)

    async def astart(self, source: Source, workflow_input: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> RunHandle:
        definition, data = self._args(source, workflow_input)
        return await self.engine.astart(WORKFLOW_NAME, definition, data, run_id=run_id)

    def run(
        self, source: Source, workflow_input: Mapping[str, Any] | None = None, *, run_id: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Start a graph run and wait for its result."""
        result: dict[str, Any] = self.start(source, workflow_input, run_id=run_id).result(timeout)
        return result

    async def arun(
        self, source: Source, workflow_input: Mapping[str, Any] | None = None, *, run_id: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        handle = await self.astart(source, workflow_input, run_id=run_id)
        result: dict[str, Any] = await handle.aresult(timeout)
        return result
