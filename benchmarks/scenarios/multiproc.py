"""multiproc: conc3's workload on the multiprocess engine beside the embedded one, in one repetition.

1,000 durable 3-step workflows started together (`astart` gathered on one loop, and one
`start_many`), then awaited; workflows/s from the first start to the last result, for
`Engine(system="embedded")` and `Engine(system="multiproc")` (2 shards: one process each, plus the
facade) in the same worker, alternating which goes first. Same durability on every side (fsync per
group commit). DBOS runs conc3's own peer (`start_workflow_async` gathered) for the comparison.
CPU is summed over the facade and the shard processes, and reported per process too (the facade's
and the busiest shard's): on a shared machine CPU per workflow is the stable figure, throughput
ratios swing with the other load (a multiprocess engine's three processes hand work to each other).

Timer lateness: `timers` more runs (500) on the multiprocess engine sleep until one common instant
a few seconds ahead, then run a step returning time.time(): resume lateness = that - due (what
workflow code sees), fire lateness = the journaled `timer_fired` time - due (sampled), as in the
sleepers scenario. A shard's timers fire on its actor's Thespian wakeupAfter.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import af_settings, engine_dir, percentile, register_three_step


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 30, "shards": 2, "timers": 30, "lead_s": 1.0}
    if s.quick:
        return {"n": 300, "shards": 2, "timers": 500, "lead_s": 3.0}
    return {"n": 1000, "shards": 2, "timers": 500, "lead_s": 3.0}


def _cpu(pids: list[int]) -> list[float]:
    """CPU seconds (user + system) of each process."""
    import psutil

    out = []
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            out.append(0.0)
            continue
        out.append(t.user + t.system)
    return out


def _per_wf(c0: list[float], c1: list[float], n: int) -> tuple[float, float, float]:
    """ms of CPU per workflow: all processes, the first (the facade), the busiest of the others."""
    d = [1000 * (b - a) / n for a, b in zip(c0, c1)]
    return sum(d), d[0], max(d[1:], default=0.0)


def _measure(system: str, p: dict[str, Any], workdir: str, rep: str) -> dict[str, Any]:
    from actorflow import Engine

    n = p["n"]
    out: dict[str, Any] = {}
    engine = Engine(engine_dir(workdir, f"{system}-{rep}"), system=system, shards=p["shards"])
    wf = register_three_step(engine)
    with engine:
        out["settings"] = af_settings(engine, "astart x N gathered on one loop, then aresult; start_many",
                                      system=system, shards=p["shards"])
        engine.run(wf, -1, timeout=60)  # warm-up: processes, actors, journal open
        rt: Any = engine._runtime()
        pids = [os.getpid(), *getattr(rt, "shard_pids", {}).values()]

        async def go() -> list[Any]:
            handles = await asyncio.gather(*(engine.astart(wf, i) for i in range(n)))
            return await asyncio.gather(*(h.aresult(120) for h in handles))

        c0, t0 = _cpu(pids), time.perf_counter()
        results = asyncio.run(go())
        wall, c1 = time.perf_counter() - t0, _cpu(pids)
        assert results == [i + 2 for i in range(n)]
        out["astart_wf_per_s"] = n / wall
        out["astart_cpu_ms_per_wf"], facade, shard = _per_wf(c0, c1, n)
        if system == "multiproc":
            out["astart_facade_cpu_ms_per_wf"], out["astart_shard_cpu_ms_per_wf"] = facade, shard

        c0, t0 = _cpu(pids), time.perf_counter()
        handles = engine.start_many(wf, [(i,) for i in range(n)])
        results = [h.result(120) for h in handles]
        wall, c1 = time.perf_counter() - t0, _cpu(pids)
        assert results == [i + 2 for i in range(n)]
        out["start_many_wf_per_s"] = n / wall
        out["start_many_cpu_ms_per_wf"] = _per_wf(c0, c1, n)[0]
    return out


def _timer_crowd(p: dict[str, Any], workdir: str) -> dict[str, float]:
    """`timers` runs sleep until one instant `lead_s` ahead on a multiprocess engine: their lateness (ms)."""
    from actorflow import Engine

    m = p["timers"]
    engine = Engine(engine_dir(workdir, "multiproc-timers"), system="multiproc", shards=p["shards"])

    @engine.workflow(name="timed")
    async def timed(ctx: Any, due: float) -> float:
        await ctx.sleep("nap", max(0.0, due - time.time()))  # journaled due: replay ignores this argument
        return await ctx.step("woke", time.time)  # type: ignore[no-any-return]

    with engine:
        engine.run(timed, time.time(), timeout=60)  # warm-up
        due = time.time() + p["lead_s"]
        handles = engine.start_many(timed, [(due,)] * m)
        slack = due - time.time()
        woke = [h.result(120) for h in handles]
        late = sorted(max(0.0, w - due) * 1000 for w in woke)
        fire = []
        for h in handles[:: max(1, m // 100)]:
            evs = {e.kind: e for e in h.history()}
            fire.append(max(0.0, evs["timer_fired"].at - evs["timer_started"].data) * 1000)
        fire.sort()
    return {"timer_late_p50_ms": percentile(late, 50) or 0.0, "timer_late_p99_ms": percentile(late, 99) or 0.0,
            "timer_fire_p50_ms": percentile(fire, 50) or 0.0, "timer_fire_p99_ms": percentile(fire, 99) or 0.0,
            "timer_slack_s": slack}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    order = ("embedded", "multiproc") if int.from_bytes(os.urandom(1), "big") % 2 else ("multiproc", "embedded")
    got = {system: _measure(system, p, workdir, "a") for system in order}
    got["multiproc"].update(_timer_crowd(p, workdir))
    out: dict[str, Any] = {"n": p["n"], "shards": p["shards"], "first": order[0], "timers": p["timers"]}
    out["settings"] = got["multiproc"].pop("settings")
    got["embedded"].pop("settings")
    for system, metrics in got.items():
        for key, value in metrics.items():
            out[f"{system}_{key}"] = value
    for mode in ("astart", "start_many"):
        out[f"speedup_{mode}"] = got["multiproc"][f"{mode}_wf_per_s"] / got["embedded"][f"{mode}_wf_per_s"]
    return out


register(
    Scenario(
        name="multiproc",
        title="1,000 concurrent durable 3-step workflows: multiprocess engine vs embedded vs DBOS",
        order=25,
        params=params,
        actorflow="benchmarks.scenarios.multiproc:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:conc3"},
        metrics=[
            Metric("multiproc_astart_wf_per_s", "multiproc astart+gather wf/s (vs DBOS async)", "wf/s", "higher",
                   "async_wf_per_s", chart=True),
            Metric("embedded_astart_wf_per_s", "embedded astart+gather wf/s (vs DBOS async)", "wf/s", "higher",
                   "async_wf_per_s"),
            Metric("speedup_astart", "multiproc / embedded, astart (same repetition)", "x", "higher"),
            Metric("multiproc_start_many_wf_per_s", "multiproc start_many wf/s (no DBOS batch form)", "wf/s", "higher"),
            Metric("embedded_start_many_wf_per_s", "embedded start_many wf/s", "wf/s", "higher"),
            Metric("speedup_start_many", "multiproc / embedded, start_many (same repetition)", "x", "higher"),
            Metric("multiproc_astart_cpu_ms_per_wf", "CPU per wf, all processes, multiproc astart", "ms", "lower",
                   "async_cpu_ms_per_wf"),
            Metric("embedded_astart_cpu_ms_per_wf", "CPU per wf, embedded astart", "ms", "lower",
                   "async_cpu_ms_per_wf"),
            Metric("multiproc_astart_facade_cpu_ms_per_wf", "… of which the facade process (astart)", "ms", "lower"),
            Metric("multiproc_astart_shard_cpu_ms_per_wf", "… of which the busiest shard process (astart)", "ms",
                   "lower"),
            Metric("multiproc_timer_late_p50_ms", "multiproc: 500 timers due at once, resume lateness p50", "ms",
                   "lower", n_key="timers"),
            Metric("multiproc_timer_late_p99_ms", "multiproc: 500 timers due at once, resume lateness p99", "ms",
                   "lower", n_key="timers"),
        ],
        notes="2 shards = 2 host processes + the facade on a 2-core machine; both engines fsync every group "
        "commit; DBOS 3.4 on SQLite (WAL, synchronous=FULL) runs the same N.",
    )
)
