"""OpenTelemetry for tasks: a task execution and a chain open their run's span in their start commit,
like `engine.start` (both skipped `start_run`: no span, and their steps found no parent trace)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel test dependency (in the test extra)")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from actorflow import Engine, telemetry  # noqa: E402
from actorflow.tasks import TaskContext  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    try:
        yield exporter
    finally:
        telemetry.disable()


def double(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    return {"value": input.get("value", 1) * 2}


def _run_span(exporter: InMemorySpanExporter, run_id: str) -> Any:
    found = [s for s in exporter.get_finished_spans()
             if s.name.startswith("workflow ") and (s.attributes or {}).get("actorflow.run_id") == run_id]
    assert len(found) == 1, f"one workflow span for {run_id}: {[s.name for s in exporter.get_finished_spans()]}"
    return found[0]


def test_an_enqueued_execution_and_a_chain_are_traced_like_a_started_run(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    e = Engine(tmp_path / "d")
    e.task(name="double")(double)
    with e:
        eid = e.enqueue("double", {"value": 2})
        assert e.result(eid, 30) == {"value": 4}
        cid = e.chain("twice").then("double").then("double").enqueue({"value": 3})
        assert e.result(cid, 30) == {"value": 12}
    run = _run_span(spans, eid)
    assert run.name == "workflow task:double"
    handler = [s for s in spans.get_finished_spans() if s.name == "step handler" and s.parent is not None
               and s.parent.span_id == run.context.span_id]
    assert len(handler) == 1  # the handler's attempt is a child of the execution's span
    assert _run_span(spans, cid).name == "workflow actorflow.chain"


def test_aenqueue_and_enqueue_many_are_traced_too(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    import asyncio

    e = Engine(tmp_path / "d")
    e.task(name="double")(double)
    with e:
        async def two() -> list[str]:  # one loop iteration: both share one journal batch
            return list(await asyncio.gather(e.aenqueue("double", {"value": 1}), e.aenqueue("double", {"value": 2})))

        ids = asyncio.run(two()) + e.enqueue_many("double", [{"value": 3}])
        assert [e.result(i, 30) for i in ids] == [{"value": 2}, {"value": 4}, {"value": 6}]
    for i in ids:
        assert _run_span(spans, i).name == "workflow task:double"
