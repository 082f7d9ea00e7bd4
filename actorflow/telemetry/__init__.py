"""OpenTelemetry tracing and metrics for actorflow (the `otel` extra; the SDK for exporters).

    from actorflow import telemetry
    telemetry.enable()                      # the global tracer/meter providers, or pass your own
    reader = telemetry.prometheus_reader()  # optional: an in-memory reader for a /metrics endpoint
    ...

Call `enable()` before opening the engine. With telemetry off - the default - the engine's hot
paths skip it with one global read. See `_otel` for the spans and metrics.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import _hooks

__all__ = ["enable", "disable", "enabled", "prometheus_reader", "serve_prometheus", "render_prometheus"]


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> Any:
    """Trace runs and steps, and record metrics, in this process; returns the `Telemetry` hooks.

    Providers default to OpenTelemetry's global ones (set by your OTel setup). Engines opened
    after this report their finished runs; steps of every engine in the process are traced."""
    try:
        from ._otel import Telemetry
    except ImportError as exc:
        raise ConfigError(f"telemetry needs the 'otel' extra: pip install 'actorflow[otel]' ({exc})") from None
    import storage._group_commit as group_commit

    tel = Telemetry(tracer_provider, meter_provider)
    _hooks.current = tel
    group_commit.commit_observer = tel.committed
    return tel


def disable() -> None:
    """Stop tracing and metrics (spans of runs still going are dropped unexported)."""
    import storage._group_commit as group_commit

    _hooks.current = None
    group_commit.commit_observer = None


def enabled() -> bool:
    return _hooks.current is not None


def prometheus_reader() -> Any:
    """A metric reader to build your MeterProvider with, for `serve_prometheus` (needs the OTel SDK)."""
    try:
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError as exc:
        raise ConfigError(f"the Prometheus endpoint needs the OpenTelemetry SDK: pip install opentelemetry-sdk ({exc})") from None
    return InMemoryMetricReader()


def serve_prometheus(reader: Any, port: int = 9464, bind: str = "127.0.0.1") -> Any:
    """Serve `reader`'s metrics as Prometheus text at http://bind:port/metrics (port 0: any free one)."""
    from ._prometheus import PrometheusServer

    return PrometheusServer(reader, port, bind)


def render_prometheus(reader: Any) -> str:
    from ._prometheus import render

    return render(reader)
