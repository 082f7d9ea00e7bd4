"""steps100: one workflow of 100 sequential durable steps: CPU (time.process_time, all threads) and
wall time per step, against a 100-step DBOS workflow."""

from __future__ import annotations

from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import Timer, engine_dir


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"steps": 100, "workflows": 1}
    if s.quick:
        return {"steps": 100, "workflows": 3}
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
        with Timer() as t:
            for _ in range(p["workflows"]):
                assert engine.run(hundred, steps, timeout=300) == steps * (steps - 1) // 2
    total = steps * p["workflows"]
    return {"cpu_us_per_step": 1e6 * t.cpu / total, "wall_us_per_step": 1e6 * t.wall / total, "steps_per_s": total / t.wall}


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
            Metric("wall_us_per_step", "wall per durable step", "µs", "lower", "wall_us_per_step", chart=True),
            Metric("steps_per_s", "sequential steps/s", "steps/s", "higher", "steps_per_s"),
        ],
    )
)
