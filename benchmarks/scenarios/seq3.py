"""seq3: sequential durable 3-step workflows/s — one caller, `engine.run` in a loop (start, 3 fsync'd
steps, result), against DBOS calling its workflow function directly in a loop."""

from __future__ import annotations

from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import Timer, af_settings, engine_dir, raw_commit_floor, register_three_step


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 20, "warmup": 5}
    if s.quick:
        return {"n": 300, "warmup": 20}
    return {"n": 2000, "warmup": 50}  # both sides (DBOS ~150 wf/s: ~13 s)


def _measure(workdir: str, p: dict[str, Any], **engine_kw: Any) -> tuple[Timer, dict[str, Any]]:
    from actorflow import Engine

    engine = Engine(workdir, **engine_kw)
    wf = register_three_step(engine)
    with engine:
        for i in range(p["warmup"]):
            engine.run(wf, i, timeout=60)
        with Timer() as t:
            for i in range(p["n"]):
                assert engine.run(wf, i, timeout=60) == i + 2
        settings = af_settings(engine, "engine.run(wf, i) in a loop (one caller)")
    return t, settings


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    t, settings = _measure(engine_dir(workdir), p)
    t_gc, _ = _measure(engine_dir(workdir, "gc-default"), p, gc_threshold=None)
    floor = raw_commit_floor(workdir)
    return {
        "wf_per_s": p["n"] / t.wall,
        "gc_default_wf_per_s": p["n"] / t_gc.wall,
        # start + 3 step results, each durable before the run moves on: 4 fsync'd commits at least
        "fsync_floor_wf_per_s": 1e6 / (4 * floor["wall_us"]),
        "ms_per_wf": 1000 * t.wall / p["n"],
        "cpu_ms_per_wf": 1000 * t.cpu / p["n"],
        "n": p["n"],
        "settings": settings,
    }


register(
    Scenario(
        name="seq3",
        title="sequential durable 3-step workflows (one caller, run() in a loop)",
        order=10,
        params=params,
        actorflow="benchmarks.scenarios.seq3:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:seq3"},
        metrics=[
            Metric("wf_per_s", "workflows/s", "wf/s", "higher", "wf_per_s", chart=True),
            Metric("gc_default_wf_per_s", "workflows/s with Engine(gc_threshold=None) (CPython's GC defaults, "
                   "as DBOS runs)", "wf/s", "higher", "wf_per_s"),
            Metric("fsync_floor_wf_per_s", "ceiling: 1 / (4 raw fsync'd LMDB commits), no engine (this run)", "wf/s",
                   "higher", n_key=None),
            Metric("ms_per_wf", "latency per workflow", "ms", "lower", "ms_per_wf"),
            Metric("cpu_ms_per_wf", "CPU per workflow (all threads)", "ms", "lower", "cpu_ms_per_wf"),
        ],
    )
)
