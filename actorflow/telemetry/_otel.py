"""The OpenTelemetry side (the `otel` extra): spans per run and per step attempt, and the metrics.

Traces: `start_run` opens a `workflow <name>` span when a run starts and writes its W3C
`traceparent` into the journal (kv namespace `otel-trace`) in the run's own start commit; each
step attempt is a `step <name>` span whose parent is the run's span - found in memory when the
run started in this process, else read (once per run, then cached) from that journal entry, which
is how steps running in other processes (`system="multiproc"` shards) and runs recovered after a
restart join the run's trace. A failed attempt records its exception; an attempt after the first
carries a `retry` event, also added to the run's span when it is in this process. The run span
ends with the run (status ERROR for failed or cancelled runs).

Metrics (meter `actorflow`): `actorflow.runs.started|completed|failed` counters,
`actorflow.step.duration` (s) histogram, `actorflow.queue.depth` and `actorflow.steps.inflight`
gauges, `actorflow.journal.commit.duration` (s) and `actorflow.journal.commit.ops` histograms.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from storage import WriteBatch

from ._hooks import TRACE_NS

__all__ = ["Telemetry"]

_PROP = TraceContextTextMapPropagator()
_CACHE = 10_000
_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
_OPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 20000]


class Telemetry:
    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("actorflow", tracer_provider=tracer_provider)
        meter = metrics.get_meter("actorflow", meter_provider=meter_provider)
        self.runs_started = meter.create_counter("actorflow.runs.started", "{run}", "runs started")
        self.runs_completed = meter.create_counter("actorflow.runs.completed", "{run}", "runs that completed")
        self.runs_failed = meter.create_counter("actorflow.runs.failed", "{run}", "runs that failed or were cancelled")
        self.step_duration = meter.create_histogram("actorflow.step.duration", "s", "step attempt latency", explicit_bucket_boundaries_advisory=_SECONDS)
        self.commit_duration = meter.create_histogram("actorflow.journal.commit.duration", "s", "journal group commit latency", explicit_bucket_boundaries_advisory=_SECONDS)
        self.commit_ops = meter.create_histogram("actorflow.journal.commit.ops", "{op}", "writes per journal group commit", explicit_bucket_boundaries_advisory=_OPS)
        meter.create_observable_gauge("actorflow.queue.depth", [self._queue_depth], "{item}", "items queued for the actors")
        meter.create_observable_gauge("actorflow.steps.inflight", [self._inflight], "{step}", "step attempts running")
        self._lock = threading.Lock()
        self.run_spans: dict[str, Span] = {}
        self._parents: OrderedDict[str, Any] = OrderedDict()  # run id -> parent context for its steps
        self._runtimes: weakref.WeakSet[Any] = weakref.WeakSet()

    # --- runs (the Engine facade) ---------------------------------------------------------------
    def start_run(self, batch: WriteBatch, run_id: str, workflow: str, **attrs: Any) -> None:
        """Open the run's span; its traceparent commits with the run's start (in `batch`)."""
        span = self.tracer.start_span(f"workflow {workflow}", attributes={"actorflow.run_id": run_id, "actorflow.workflow": workflow, **attrs})
        carrier: dict[str, str] = {}
        _PROP.inject(carrier, trace.set_span_in_context(span))
        batch.kv_put_new(TRACE_NS, run_id, carrier.get("traceparent", ""))  # a repeated start keeps the first
        with self._lock:
            self.run_spans[run_id] = span
        self.runs_started.add(1, {"workflow": workflow})

    def start_failed(self, run_id: str) -> None:
        """The start's commit failed or found the run existing: drop the span unexported."""
        with self._lock:
            self.run_spans.pop(run_id, None)

    def attach(self, rt: Any) -> None:
        """An engine opened on `rt`: count every run that finishes, and end its span."""
        self._runtimes.add(rt)
        notifier = rt.notifier
        finished = notifier.finished

        def hooked(run_id: str, record: Any, state: str, value: Any, data: Any) -> None:
            self.run_finished(run_id, getattr(record, "workflow", ""), state, data)
            finished(run_id, record, state, value, data)

        notifier.finished = hooked

    def run_finished(self, run_id: str, workflow: str, state: str, data: Any) -> None:
        (self.runs_completed if state == "completed" else self.runs_failed).add(1, {"workflow": workflow, "state": state})
        with self._lock:
            span = self.run_spans.pop(run_id, None)
            self._parents.pop(run_id, None)
        if span is not None:
            span.set_attribute("actorflow.state", state)
            if state != "completed":
                err = data.get("error") if isinstance(data, dict) else data
                span.set_status(Status(StatusCode.ERROR, str(err or state)))
            span.end()

    # --- steps (the step pool, in whichever process runs them) -------------------------------------
    def _parent(self, rt: Any, run_id: str) -> Any:
        span = self.run_spans.get(run_id)
        if span is not None:
            return trace.set_span_in_context(span)
        with self._lock:
            ctx = self._parents.get(run_id)
        if ctx is None:
            tp = None
            try:
                tp = rt.journal.kv_get(TRACE_NS, run_id)
            except Exception:  # noqa: BLE001 - tracing must never fail a step
                tp = None
            ctx = _PROP.extract({"traceparent": tp}) if tp else otel_context.Context()
            with self._lock:
                self._parents[run_id] = ctx
                if len(self._parents) > _CACHE:
                    self._parents.popitem(last=False)
        return ctx

    def step_begin(self, rt: Any, info: Any, kind: str) -> tuple[Span, float]:
        name = f"{'compensate' if kind == 'comp' else 'step'} {info.name}"
        attrs = {"actorflow.run_id": info.run_id, "actorflow.step": info.name, "actorflow.step.pos": info.seq, "actorflow.step.attempt": info.attempt}
        span = self.tracer.start_span(name, context=self._parent(rt, info.run_id), attributes=attrs)
        if info.attempt > 1:
            ev = {"actorflow.step": info.name, "actorflow.step.attempt": info.attempt}
            span.add_event("retry", ev)
            run_span = self.run_spans.get(info.run_id)
            if run_span is not None:
                run_span.add_event("retry", ev)
        return span, time.perf_counter()

    def step_end(self, token: Any, exc: BaseException | None) -> None:
        span, t0 = token
        ok = exc is None
        if not ok:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        self.step_duration.record(time.perf_counter() - t0, {"ok": ok})

    # --- journal and queues --------------------------------------------------------------------------
    def committed(self, seconds: float, batches: int, ops: int) -> None:
        self.commit_duration.record(seconds)
        self.commit_ops.record(ops)

    def _queue_depth(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(len(getattr(rt, "queue", ()) or getattr(rt, "_out", ()))) for rt in list(self._runtimes)]

    def _inflight(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(rt.steps.inflight) for rt in list(self._runtimes) if getattr(rt, "steps", None) is not None]
