"""A Prometheus text endpoint over an OpenTelemetry metric reader (no extra dependency): counters as
`_total`, histograms as `_bucket`/`_sum`/`_count`, gauges as they are; loopback unless told."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum

__all__ = ["render", "PrometheusServer"]


def _name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_:]", "_", text)


def _labels(attrs: Any, extra: dict[str, str] | None = None) -> str:
    items = {**{_name(str(k)): str(v) for k, v in dict(attrs or {}).items()}, **(extra or {})}
    if not items:
        return ""
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"' for k, v in sorted(items.items()))
    return "{" + body + "}"


def render(reader: InMemoryMetricReader) -> str:
    """The reader's current metrics in the Prometheus text exposition format (version 0.0.4)."""
    data = reader.get_metrics_data()
    out: list[str] = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                base = _name(m.name)
                d = m.data
                if isinstance(d, Sum):
                    name = base + ("_total" if d.is_monotonic else "")
                    out += [f"# HELP {name} {m.description}", f"# TYPE {name} {'counter' if d.is_monotonic else 'gauge'}"]
                    out += [f"{name}{_labels(p.attributes)} {p.value}" for p in d.data_points]
                elif isinstance(d, Gauge):
                    out += [f"# HELP {base} {m.description}", f"# TYPE {base} gauge"]
                    out += [f"{base}{_labels(p.attributes)} {p.value}" for p in d.data_points]
                elif isinstance(d, Histogram):
                    out += [f"# HELP {base} {m.description}", f"# TYPE {base} histogram"]
                    for p in d.data_points:
                        running = 0
                        for bound, count in zip([*p.explicit_bounds, float("inf")], p.bucket_counts):
                            running += count
                            le = "+Inf" if bound == float("inf") else repr(float(bound))
                            out.append(f"{base}_bucket{_labels(p.attributes, {'le': le})} {running}")
                        out.append(f"{base}_sum{_labels(p.attributes)} {p.sum}")
                        out.append(f"{base}_count{_labels(p.attributes)} {p.count}")
    return "\n".join(out) + "\n"


class PrometheusServer:
    """`GET /metrics` on a background thread; `.url`, `.close()`."""

    def __init__(self, reader: InMemoryMetricReader, port: int = 9464, bind: str = "127.0.0.1") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render(reader).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

        self._server = ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        host, real_port = self._server.server_address[:2]
        self.url = f"http://{host if isinstance(host, str) else host.decode()}:{real_port}/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, name="actorflow-prometheus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
