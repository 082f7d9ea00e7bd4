"""steps100: one workflow of 100 sequential durable steps: CPU (time.process_time, all threads) and
wall time per step, against a 100-step DBOS workflow. Beside it, measured in the same worker: one
fsync'd raw LMDB commit with no engine (each durable step costs at least one), so the engine's own
share of a step is visible."""

from __future__ import annotations

from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import Timer, af_settings, cpu_times, engine_dir, raw_commit_floor


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"steps": 100, "workflows": 1}
    if s.quick:
        return {"steps": 100, "workflows": 3}
    if s.profile:  # most of a step is the fsync, without the GIL: more steps for enough samples
        return {"steps": 100, "workflows": 60}
    return {"steps": 100, "workflows": 10}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    steps = p["steps"]
    engine = Engine(engine_dir(workdir))

    @engine.workflow(name="hundred")
    async def hundred(ctx: Any, n: int) -> int:
        acc = 0
        for k in range(n):
            acc += await ctx.step(f"s{k}", lambda k=k: k)
        return acc

    with engine:
        engine.run(hundred, 3, timeout=60)  # warm-up
        u0, s0 = cpu_times()
        with Timer() as t:
            for _ in range(p["workflows"]):
                assert engine.run(hundred, steps, timeout=300) == steps * (steps - 1) // 2
        u1, s1 = cpu_times()
        settings = af_settings(engine, f"{p['workflows']} x engine.run(a workflow of {steps} sequential ctx.step calls)")
    total = steps * p["workflows"]
    floor = raw_commit_floor(workdir)
    cpu = 1e6 * t.cpu / total
    return {
        "cpu_us_per_step": cpu,
        "user_us_per_step": 1e6 * (u1 - u0) / total,
        "sys_us_per_step": 1e6 * (s1 - s0) / total,
        "raw_commit_cpu_us": floor["cpu_us"],
        "engine_cpu_us_per_step": cpu - floor["cpu_us"],
        "wall_us_per_step": 1e6 * t.wall / total,
        "raw_commit_wall_us": floor["wall_us"],
        "steps_per_s": total / t.wall,
        "raw_commit_sys_us": floor["sys_us"],
        "n": total,
        "settings": settings,
    }


register(
    Scenario(
        name="steps100",
        title="per-step overhead: a 100-step durable workflow",
        order=30,
        params=params,
        actorflow="benchmarks.scenarios.steps100:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:steps100"},
        metrics=[
            Metric("cpu_us_per_step", "CPU per durable step", "µs", "lower", "cpu_us_per_step", chart=True),
            Metric("user_us_per_step", "… of which user CPU", "µs", "lower"),
            Metric("sys_us_per_step", "… of which system CPU (fsync, futex)", "µs", "lower"),
            Metric("raw_commit_cpu_us", "floor: CPU of one fsync'd raw LMDB commit, no engine", "µs", "lower", n_key=None),
            Metric("engine_cpu_us_per_step", "CPU per step above that floor", "µs", "lower"),
            Metric("wall_us_per_step", "wall per durable step", "µs", "lower", "wall_us_per_step", chart=True),
            Metric("raw_commit_wall_us", "floor: wall of one fsync'd raw LMDB commit", "µs", "lower", n_key=None),
            Metric("steps_per_s", "sequential steps/s", "steps/s", "higher", "steps_per_s"),
        ],
    )
)
