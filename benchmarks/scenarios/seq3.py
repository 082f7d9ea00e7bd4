"""seq3: sequential durable 3-step workflows/s — one caller, `engine.run` in a loop (start, 3 fsync'd
steps, result), against DBOS calling its workflow function directly in a loop."""

from __future__ import annotations

from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import Timer, engine_dir, raw_commit_floor, register_three_step


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 20, "warmup": 5, "dbos_n": 10}
    if s.quick:
        return {"n": 300, "warmup": 20, "dbos_n": 100}
    return {"n": 2000, "warmup": 50, "dbos_n": 500}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    engine = Engine(engine_dir(workdir))
    wf = register_three_step(engine)
    with engine:
        for i in range(p["warmup"]):
            engine.run(wf, i, timeout=60)
        with Timer() as t:
            for i in range(p["n"]):
                assert engine.run(wf, i, timeout=60) == i + 2
    floor = raw_commit_floor(workdir)
    return {
        "wf_per_s": p["n"] / t.wall,
        # start + 3 step results, each durable before the run moves on: 4 fsync'd commits at least
        "fsync_floor_wf_per_s": 1e6 / (4 * floor["wall_us"]),
        "ms_per_wf": 1000 * t.wall / p["n"],
        "cpu_ms_per_wf": 1000 * t.cpu / p["n"],
        "n": p["n"],
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
            Metric("fsync_floor_wf_per_s", "ceiling: 1 / (4 raw fsync'd LMDB commits), no engine", "wf/s", "higher"),
            Metric("ms_per_wf", "latency per workflow", "ms", "lower", "ms_per_wf"),
            Metric("cpu_ms_per_wf", "CPU per workflow (all threads)", "ms", "lower", "cpu_ms_per_wf"),
        ],
    )
)
