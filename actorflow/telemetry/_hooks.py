"""Where the engine calls telemetry: one module global, None unless `actorflow.telemetry.enable()` ran.

The engine's hot paths read `_hooks.current` once and skip everything when it is None, so with
telemetry off (or OpenTelemetry not installed) a step costs one global read more. Nothing here
imports OpenTelemetry."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._otel import Telemetry

__all__ = ["current", "TRACE_NS"]

current: Telemetry | None = None
TRACE_NS = "otel-trace"  # journal kv namespace: run id -> W3C traceparent of the run's span
