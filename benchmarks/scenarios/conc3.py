"""conc3: 1,000 durable 3-step workflows in flight at once, workflows/s from first start to last result.

actorflow: (a) `astart` x N gathered on one asyncio loop, then `aresult`; (a') the same with
`Engine(gc_threshold=None)` (CPython's GC defaults, as DBOS runs); (b) a plain `start()` loop, then
`result()`; (c) one `start_many` (one commit for the batch: DBOS has no batch start, so no peer
figure). DBOS: `DBOS.start_workflow` x N then `get_result()` (its thread-pool concurrency) and
`start_workflow_async` x N gathered on one loop. Same N on both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import Timer, af_settings, engine_dir, register_three_step

MODES = ("astart", "astart_gc_default", "start", "start_many")


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 30}
    if s.quick:
        return {"n": 300}
    return {"n": 1000}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    n = p["n"]
    out: dict[str, Any] = {"n": n}
    for mode in MODES:
        kw: dict[str, Any] = {"gc_threshold": None} if mode.endswith("_gc_default") else {}
        engine = Engine(engine_dir(workdir, mode), **kw)
        wf = register_three_step(engine)
        with engine:
            engine.run(wf, -1, timeout=60)  # warm-up: actors, step pool, journal open
            if mode.startswith("astart"):

                async def go(engine: Engine = engine, wf: Any = wf) -> list[Any]:
                    handles = await asyncio.gather(*(engine.astart(wf, i) for i in range(n)))
                    return await asyncio.gather(*(h.aresult(120) for h in handles))

                with Timer() as t:
                    results = asyncio.run(go())
            elif mode == "start":
                with Timer() as t:
                    handles = [engine.start(wf, i) for i in range(n)]
                    results = [h.result(120) for h in handles]
            else:
                with Timer() as t:
                    handles = engine.start_many(wf, [(i,) for i in range(n)])
                    results = [h.result(120) for h in handles]
            if mode == "astart":
                out["settings"] = af_settings(
                    engine, "astart x N gathered on one loop, then aresult; start() loop; start_many (one commit)")
        assert results == [i + 2 for i in range(n)]
        out[f"{mode}_wf_per_s"] = n / t.wall
        out[f"{mode}_cpu_ms_per_wf"] = 1000 * t.cpu / n
    return out


register(
    Scenario(
        name="conc3",
        title="1,000 concurrent durable 3-step workflows (start all, then await all)",
        order=20,
        params=params,
        actorflow="benchmarks.scenarios.conc3:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:conc3"},
        metrics=[
            Metric("astart_wf_per_s", "astart+gather wf/s (vs DBOS start_workflow_async)", "wf/s", "higher",
                   "async_wf_per_s", chart=True),
            Metric("astart_gc_default_wf_per_s", "… with Engine(gc_threshold=None) (vs DBOS start_workflow_async)",
                   "wf/s", "higher", "async_wf_per_s"),
            Metric("start_wf_per_s", "start() loop wf/s (vs DBOS start_workflow)", "wf/s", "higher",
                   "threads_wf_per_s", chart=True),
            Metric("start_many_wf_per_s", "start_many wf/s (one commit for the batch)", "wf/s", "higher",
                   no_peer="no DBOS equivalent (no batch start)"),
            Metric("astart_cpu_ms_per_wf", "CPU per wf, astart (vs DBOS async)", "ms", "lower", "async_cpu_ms_per_wf"),
            Metric("start_cpu_ms_per_wf", "CPU per wf, start() loop (vs DBOS threads)", "ms", "lower",
                   "threads_cpu_ms_per_wf"),
            Metric("start_many_cpu_ms_per_wf", "CPU per wf, start_many", "ms", "lower",
                   no_peer="no DBOS equivalent (no batch start)"),
        ],
        notes="actorflow raises CPython's GC thresholds while an engine is open (Engine(gc_threshold=...), "
              "default (50000, 20, 100)); DBOS runs with CPython's (700, 10, 10): the gc_threshold=None row "
              "shows actorflow without that.",
    )
)
