"""OpenTelemetry: the span tree of a run with a retry (SDK in-memory exporter), and the metrics."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel test dependency (in the test extra)")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from actorflow import Engine, RetryPolicy, telemetry  # noqa: E402


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, Any]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = telemetry.prometheus_reader()
    telemetry.enable(tracer_provider, MeterProvider(metric_readers=[reader]))
    try:
        yield exporter, reader
    finally:
        telemetry.disable()


def _run_with_a_retry(data_dir: Path) -> None:
    tries: list[int] = []

    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("transient")
        return 41

    e = Engine(data_dir)

    @e.workflow(name="order")
    async def order(ctx: Any) -> int:
        a = await ctx.step("reserve", lambda: 1)
        b = await ctx.step("charge", flaky, retry=RetryPolicy.exponential(max_attempts=3, initial_delay=0.01))
        return int(a + b)

    with e:
        assert e.run(order, run_id="o-1", timeout=30) == 42


def test_the_span_tree_of_a_run_with_a_retry(tmp_path: Path, otel: Any) -> None:
    exporter, _ = otel
    _run_with_a_retry(tmp_path / "d")
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (run,) = by_name["workflow order"]
    assert run.parent is None and run.attributes["actorflow.run_id"] == "o-1"
    assert run.attributes["actorflow.state"] == "completed"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == run.context.span_id]
    assert sorted((s.name, s.attributes["actorflow.step.attempt"]) for s in children) == [
        ("step charge", 1),
        ("step charge", 2),
        ("step reserve", 1),
    ]
    assert all(s.context.trace_id == run.context.trace_id for s in children)
    first, second = sorted(by_name["step charge"], key=lambda s: s.attributes["actorflow.step.attempt"])
    assert first.status.status_code == StatusCode.ERROR and "transient" in (first.status.description or "")
    assert [ev.name for ev in first.events] == ["exception"]
    assert [ev.name for ev in second.events] == ["retry"] and second.status.status_code != StatusCode.ERROR
    assert [(ev.name, ev.attributes["actorflow.step"]) for ev in run.events] == [("retry", "charge")]


def test_metrics_and_the_prometheus_endpoint(tmp_path: Path, otel: Any) -> None:
    _, reader = otel
    _run_with_a_retry(tmp_path / "d")
    server = telemetry.serve_prometheus(reader, port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.close()
    assert 'actorflow_runs_started_total{workflow="order"} 1' in text
    assert 'actorflow_runs_completed_total{state="completed",workflow="order"} 1' in text
    assert 'actorflow_step_duration_count{ok="False"} 1' in text and 'actorflow_step_duration_count{ok="True"} 2' in text
    assert "actorflow_journal_commit_duration_count" in text and "actorflow_journal_commit_ops_bucket" in text
    assert "# TYPE actorflow_queue_depth gauge" in text


def test_a_recovered_run_s_steps_join_the_trace_from_the_journal(tmp_path: Path, otel: Any) -> None:
    exporter, _ = otel
    e = Engine(tmp_path / "d")

    @e.workflow(name="wait")
    async def wait(ctx: Any) -> str:
        await ctx.step("before", lambda: 1)
        got = await ctx.wait_signal("go", timeout=60)
        return str(await ctx.step("after", lambda: got))

    with e:
        h = e.start(wait, run_id="w")
        deadline = time.monotonic() + 30
        while h.status().state.value != "waiting":  # a condition with a deadline, not a guess
            assert time.monotonic() < deadline, h.status()
            time.sleep(0.005)
    # another engine (as after a restart, or a shard process) has no span of the run in memory
    from actorflow.telemetry import _hooks

    assert _hooks.current is not None
    _hooks.current.run_spans.clear()
    with e:
        e.signal("w", "go", "x")
        assert e.result("w", timeout=30) == "x"
    before = next(s for s in exporter.get_finished_spans() if s.name == "step before")
    after = next(s for s in exporter.get_finished_spans() if s.name == "step after")
    assert after.context.trace_id == before.context.trace_id
    assert after.parent is not None and after.parent.span_id == before.parent.span_id  # the run's span


def test_nothing_is_traced_when_disabled(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    telemetry.disable()
    assert not telemetry.enabled()
    _run_with_a_retry(tmp_path / "d")
    assert exporter.get_finished_spans() == ()
