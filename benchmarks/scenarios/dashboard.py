"""dashboard: the web dashboard over a data directory of N runs (100,000 by default), timed over HTTP.

The journal is filled directly (a started event, a step, a final event per run; 80% completed, 10%
failed, the rest waiting or sleeping, over four workflows), then served by `actorflow.dashboard` on a
loopback port in this process, and each page is requested `reps` times with urllib (median reported):
the first list page, a page deep in the list (keyset `after`), filters by a state that one run in
ten has, by an unfinished state (the active index), by workflow and by run id prefix, the JSON API,
and a run's detail. None of these may read every run: the per-state counts come from a census on
a thread of its own, timed separately (`census_s`).
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import engine_dir

WORKFLOWS = ("checkout", "refund", "report", "sync")


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 2_000, "reps": 3}
    if s.quick:
        return {"n": 20_000, "reps": 10}
    return {"n": 100_000, "reps": 20}


def _fill(path: str, n: int) -> None:
    from storage import Event, LmdbJournal, RunRecord

    with LmdbJournal(path, sync=False) as j:
        t0 = time.time() - n * 0.01
        for start in range(0, n, 2_000):
            b = j.batch()
            for i in range(start, min(n, start + 2_000)):
                rid = f"run-{i:07d}"
                wf = WORKFLOWS[i % len(WORKFLOWS)]
                at = t0 + i * 0.01
                state = "failed" if i % 10 == 3 else "waiting" if i % 20 == 7 else "sleeping" if i % 20 == 9 else "completed"
                b.create_run(RunRecord(rid, wf, "pending", at, at), Event(0, "run_started", wf, {"args": ({"order": i},)}, at))
                b.append(rid, Event(1, "step_completed", "charge", {"payment": f"p-{i}"}, at + 0.002, 0))
                if state == "completed":
                    b.append(rid, Event(2, "run_completed", "", "ok", at + 0.003))
                elif state == "failed":
                    b.append(rid, Event(2, "run_failed", "", {"error": "ValueError: declined"}, at + 0.003))
                elif state == "waiting":
                    b.append(rid, Event(2, "wait_started", "approve", at + 3600, at + 0.003, 1))
                else:
                    b.append(rid, Event(2, "timer_started", "cool", at + 3600, at + 0.003, 1))
                err = "ValueError: declined" if state == "failed" else None
                b.put_run(RunRecord(rid, wf, state, at, at + 0.003, 1.0 if state == "completed" else 0.5, err))
            j.commit(b)


def _get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
    return (time.perf_counter() - t) * 1000


def run(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow.dashboard import Census, serve_data_dir

    n, reps = p["n"], p["reps"]
    path = engine_dir(workdir, "dashboard")
    t = time.perf_counter()
    _fill(path, n)
    fill_s = time.perf_counter() - t
    board = serve_data_dir(path, port=0).start()
    try:
        base = board.url
        mid = f"run-{n // 2:07d}"
        pages = {
            "list_ms": "/runs",
            "list_deep_ms": f"/runs?after={mid}",
            "list_failed_ms": "/runs?state=failed",
            "list_waiting_ms": "/runs?state=waiting",
            "list_workflow_ms": "/runs?workflow=refund",
            "list_prefix_ms": f"/runs?q=run-{n // 2 // 1000:04d}",
            "api_runs_ms": "/api/runs?state=completed&limit=100",
            "detail_ms": f"/runs/{mid}",
        }
        first = _get(base + "/runs")  # a cold server: the census starts on its thread here
        out: dict[str, Any] = {"first_request_ms": first}
        for key, page in pages.items():
            out[key] = statistics.median(_get(base + page) for _ in range(reps))
        c = Census(board.journal)  # one census on its own, timed (the server's runs on its thread)
        t = time.perf_counter()
        c._take(board.journal.change_marker())
        out["census_s"] = time.perf_counter() - t
    finally:
        board.close()
    out["fill_s"] = fill_s
    return out


register(
    Scenario(
        name="dashboard",
        title="dashboard pages over a data directory of n runs (HTTP round trip, loopback)",
        params=params,
        actorflow="benchmarks.scenarios.dashboard:run",
        order=90,
        quick_repeat=1,
        full_repeat=1,
        metrics=[
            Metric("first_request_ms", "first list page of a cold server", "ms", "lower"),
            Metric("list_ms", "list, first page of 50", "ms", "lower", chart=True),
            Metric("list_deep_ms", "list, a page in the middle (keyset after=)", "ms", "lower"),
            Metric("list_failed_ms", "list filtered by a state 1 run in 10 has", "ms", "lower"),
            Metric("list_waiting_ms", "list filtered by an unfinished state (active index)", "ms", "lower"),
            Metric("list_workflow_ms", "list filtered by workflow", "ms", "lower"),
            Metric("list_prefix_ms", "list filtered by run id prefix", "ms", "lower"),
            Metric("api_runs_ms", "JSON API, 100 completed runs", "ms", "lower"),
            Metric("detail_ms", "a run's detail page", "ms", "lower"),
            Metric("census_s", "census of every run (counts per state, off the request path)", "s", "lower"),
            Metric("fill_s", "writing the n runs (setup, not a dashboard number)", "s", "lower"),
        ],
    )
)
