"""sleepers: runs parked on durable timers and signals, and a crowd of timers firing at one instant.

Memory, compared with DBOS at DBOS's N (`dbos_n`, both sides, each in a fresh process): N runs (half
`ctx.sleep(3600)`, half `ctx.wait_signal`) started with `astart` gathered on one loop, as DBOS's
`start_workflow_async` are, in waves of `peer_wave` that each settle before the next; RSS delta per
run two ways: total / N, and the slope between the first and the last wave (which excludes fixed
costs) - total is compared with total, slope with slope. actorflow passivates them (and the run
checks they were evicted before reading RSS); DBOS keeps every waiting workflow in memory, so it
is also set against actorflow with passivation off, at the same N.

At actorflow's own scale (`n`, no DBOS figure: ~100k would take DBOS most of an hour to start):
the same with `start_many` in waves of `wave`, and passivation off at `live_n`.

Lateness: M more runs sleep until one common instant a few seconds ahead (chosen from the measured
start rate so every run is asleep by then); each then runs a step returning time.time(): resume
lateness = that - due (what workflow code sees). Compared for a crowd of DBOS's size and shown for
a larger one. Fire lateness = the journaled `timer_fired` time - due, for a sample of runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import (
    af_settings,
    engine_dir,
    park_in_waves,
    percentile,
    register_three_step,
    rss_bytes,
    wait_evicted,
)


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 200, "wave": 100, "late_n": 20, "live_n": 200, "passivate_after": 0.1, "settle_s": 1.0,
                "margin_s": 0.5, "dbos_n": 20, "peer_wave": 10, "dbos_late_n": 20}
    if s.quick:
        return {"n": 2000, "wave": 500, "late_n": 2000, "live_n": 2000, "passivate_after": 0.2, "settle_s": 2.1,
                "margin_s": 1.5, "dbos_n": 200, "peer_wave": 50, "dbos_late_n": 100}
    return {"n": 100_000, "wave": 10_000, "late_n": 20_000, "live_n": 20_000, "passivate_after": 0.5,
            "settle_s": 2.1, "margin_s": 3.0, "dbos_n": 2000, "peer_wave": 500, "dbos_late_n": 500}


def _workflows(engine: Any) -> tuple[Any, Any, Any]:
    @engine.workflow(name="sleeper")
    async def sleeper(ctx: Any, seconds: float) -> None:
        await ctx.sleep("nap", seconds)

    @engine.workflow(name="waiter")
    async def waiter(ctx: Any) -> Any:
        return await ctx.wait_signal("go")

    @engine.workflow(name="timed")
    async def timed(ctx: Any, due: float) -> float:
        await ctx.sleep("nap", max(0.0, due - time.time()))  # journaled due: replay ignores this argument
        return await ctx.step("woke", time.time)  # type: ignore[no-any-return]

    return sleeper, waiter, timed


def _park(
    engine: Any, sleeper: Any, waiter: Any, n: int, wave: int | None = None, settle: float = 0.0
) -> tuple[float, list[tuple[int, int, int]]]:
    """Start n parked runs (half sleep, half wait for a signal) in waves of `wave`, letting each wave
    settle (be passivated) before the next, as runs arriving over time would. Returns the seconds spent
    starting runs and waiting until they were parked (settling excluded), and (runs, RSS, anon) after
    each wave."""
    wave = wave or n
    busy = 0.0
    samples: list[tuple[int, int, int]] = []
    done = 0
    while done < n:
        w = min(wave, n - done)
        t0 = time.perf_counter()
        for lo in range(0, w // 2, 2000):
            engine.start_many(sleeper, [(3600.0,)] * (min(w // 2, lo + 2000) - lo))
        for lo in range(0, w - w // 2, 2000):
            engine.start_many(waiter, [()] * (min(w - w // 2, lo + 2000) - lo))
        done += w
        deadline = time.time() + 600
        while time.time() < deadline:
            if len(engine.runs(state="sleeping")) + len(engine.runs(state="waiting")) >= done:
                break
            time.sleep(0.1)  # runs() scans every run: polling it often would load the engine measured
        busy += time.perf_counter() - t0
        if settle:
            time.sleep(settle)
            samples.append((done, *rss_bytes()))
    return busy, samples


def _crowd(engine: Any, timed: Any, m: int, per_s: float, margin: float) -> dict[str, Any]:
    """m runs sleep until one instant (far enough ahead that all are asleep by then); their lateness."""
    due = time.time() + m / per_s * 1.5 + margin
    handles = []
    for lo in range(0, m, 2000):
        handles += engine.start_many(timed, [(due,)] * (min(m, lo + 2000) - lo))
    slack = due - time.time()
    woke = [h.result(600) for h in handles]
    late = sorted(max(0.0, w - due) * 1000 for w in woke)
    fire = []
    for h in handles[:: max(1, m // 200)]:
        evs = {e.kind: e for e in h.history()}
        fire.append(max(0.0, evs["timer_fired"].at - evs["timer_started"].data) * 1000)
    fire.sort()
    return {"p50": percentile(late, 50), "p99": percentile(late, 99), "max": late[-1] if late else None,
            "fire_p50": percentile(fire, 50), "fire_p99": percentile(fire, 99), "slack_s": round(slack, 2)}


def _live_rss(workdir: str, n: int) -> dict[str, Any]:
    """In a fresh process: RSS per parked run with passivation off (all live in memory)."""
    from actorflow import Engine

    engine = Engine(engine_dir(workdir, f"live-{n}"), passivate_after=None)
    sleeper, waiter, _ = _workflows(engine)
    wf = register_three_step(engine)
    with engine:
        engine.run(wf, 0, timeout=60)
        rss0, anon0 = rss_bytes()
        _park(engine, sleeper, waiter, n)
        time.sleep(0.5)  # no passivation: every run stays in memory
        rss1, anon1 = rss_bytes()
        engine.close(grace=0)
    return {"rss": (rss1 - rss0) / n, "anon": (anon1 - anon0) / n}


def _peer_shape(workdir: str, p: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process, DBOS's shape: dbos_n runs started with astart gathered, in waves of peer_wave,
    passivated (checked) before each RSS sample; total / N and the first-to-last-wave slope."""
    from actorflow import Engine

    n, wave = p["dbos_n"], p["peer_wave"]
    engine = Engine(engine_dir(workdir, "peer-shape"), passivate_after=p["passivate_after"])
    sleeper, waiter, _ = _workflows(engine)
    wf = register_three_step(engine)

    async def start(k: int) -> None:
        await asyncio.gather(*(engine.astart(sleeper, 3600.0) for _ in range(k // 2)),
                             *(engine.astart(waiter) for _ in range(k - k // 2)))

    evicted: dict[str, Any] = {}

    def settle() -> None:
        time.sleep(p["passivate_after"] + p["settle_s"])
        evicted.update(wait_evicted(engine))  # raises unless every parked run really left memory

    with engine:
        engine.run(wf, 0, timeout=60)
        parked = park_in_waves(lambda k: asyncio.run(start(k)), n, wave, settle)
        settings = af_settings(engine, f"engine.astart gathered on one loop, in waves of {wave}")
    return {**parked, "start_per_s": n / parked["start_s"], "evicted": evicted, "settings": settings}


def _fresh(call: str) -> Any:
    """`call` (an expression over this module, `s`) evaluated in a fresh Python process; its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-c",
         f"import actorflow, json; from benchmarks.scenarios import sleepers as s; print(json.dumps({call}))"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    n, m = p["n"], p["late_n"]
    shape = _fresh(f"s._peer_shape({workdir!r}, {p!r})")
    live_peer_n = _fresh(f"s._live_rss({workdir!r}, {p['dbos_n']})")
    live = _fresh(f"s._live_rss({workdir!r}, {p['live_n']})")

    engine = Engine(engine_dir(workdir), passivate_after=p["passivate_after"])
    sleeper, waiter, timed = _workflows(engine)
    wf = register_three_step(engine)
    with engine:
        engine.run(wf, 0, timeout=60)
        rss0, anon0 = rss_bytes()
        # housekeeping passivates runs idle for passivate_after, once a second: settle past two ticks
        park_s, samples = _park(engine, sleeper, waiter, n, p["wave"], p["passivate_after"] + p["settle_s"])
        evicted = wait_evicted(engine)
        _, rss1, anon1 = samples[-1]
        # marginal cost of one more parked run: slope from the first wave's settled RSS to the last's
        (n_a, rss_a, anon_a), (n_b, rss_b, anon_b) = samples[0], samples[-1]
        slope = (rss_b - rss_a) / (n_b - n_a) if n_b > n_a else None
        slope_anon = (anon_b - anon_a) / (n_b - n_a) if n_b > n_a else None
        per_s = n / park_s

        big = _crowd(engine, timed, m, per_s, p["margin_s"])
        small = big if p["dbos_late_n"] == m else _crowd(engine, timed, p["dbos_late_n"], per_s, p["margin_s"])
        rss2, _ = rss_bytes()
    return {
        "peer_n_rss_per_run_bytes": shape["rss"],
        "peer_n_marginal_rss_per_run_bytes": shape["slope"],
        "peer_n_anon_per_run_bytes": shape["anon"],
        "peer_n_runs_per_gib": (1 << 30) / max(1.0, shape["rss"]),
        "peer_n_live_rss_per_run_bytes": live_peer_n["rss"],
        "peer_n_start_per_s": shape["start_per_s"],
        "rss_per_run_bytes": (rss1 - rss0) / n,
        "anon_per_run_bytes": (anon1 - anon0) / n,
        "marginal_rss_per_run_bytes": slope,
        "marginal_anon_per_run_bytes": slope_anon,
        "runs_per_gib": (1 << 30) / max(1.0, (rss1 - rss0) / n),
        "live_rss_per_run_bytes": live["rss"],
        "live_anon_per_run_bytes": live["anon"],
        "lateness_p50_ms": big["p50"],
        "lateness_p99_ms": big["p99"],
        "lateness_max_ms": big["max"],
        "fire_lateness_p50_ms": big["fire_p50"],
        "fire_lateness_p99_ms": big["fire_p99"],
        "peer_n_lateness_p50_ms": small["p50"],
        "peer_n_lateness_p99_ms": small["p99"],
        "start_per_s": per_s,
        "n": n,
        "peer_n": p["dbos_n"],
        "late_n": m,
        "peer_late_n": p["dbos_late_n"],
        "live_n": p["live_n"],
        "evicted_before_rss": evicted,
        "peer_shape_evicted_before_rss": shape["evicted"],
        "all_asleep_before_due_s": big["slack_s"],
        "rss_growth_after_crowd_mb": round((rss2 - rss1) / 2**20, 1),
        "settings": {**shape["settings"], "api": "peer-N rows: " + shape["settings"]["api"]
                     + f"; N={n} rows: start_many in waves of {p['wave']}"},
    }


register(
    Scenario(
        name="sleepers",
        title="parked runs (timers/signals) per GiB with passivation, and timer lateness at scale",
        order=40,
        params=params,
        actorflow="benchmarks.scenarios.sleepers:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:sleepers"},
        quick_repeat=1,
        timeout=1800,
        metrics=[
            # at DBOS's N, in DBOS's shape: compared
            Metric("peer_n_rss_per_run_bytes", "RSS per parked run, total delta / N (passivated; DBOS: live)",
                   "bytes", "lower", "rss_per_run_bytes", n_key="peer_n"),
            Metric("peer_n_marginal_rss_per_run_bytes", "RSS per additional parked run, slope first→last wave",
                   "bytes", "lower", "marginal_rss_per_run_bytes", chart=True, n_key="peer_n"),
            Metric("peer_n_anon_per_run_bytes", "RSS−shared per parked run, total / N", "bytes", "lower",
                   "anon_per_run_bytes", n_key="peer_n"),
            Metric("peer_n_runs_per_gib", "parked runs per GiB RSS (from total / N)", "runs", "higher",
                   "runs_per_gib", n_key="peer_n"),
            Metric("peer_n_live_rss_per_run_bytes", "RSS per parked run, total / N, actorflow passivation off",
                   "bytes", "lower", "rss_per_run_bytes", n_key="peer_n"),
            Metric("peer_n_start_per_s", "parked runs started/s (astart / start_workflow_async, gathered)",
                   "runs/s", "higher", "start_per_s", n_key="peer_n"),
            Metric("peer_n_lateness_p50_ms", "timer lateness p50, crowd of dbos_late_n", "ms", "lower",
                   "lateness_p50_ms", chart=True, n_key="peer_late_n", peer_n_key="late_n"),
            Metric("peer_n_lateness_p99_ms", "timer lateness p99, crowd of dbos_late_n", "ms", "lower",
                   "lateness_p99_ms", chart=True, n_key="peer_late_n", peer_n_key="late_n"),
            # at actorflow's scale: no DBOS figure
            Metric("rss_per_run_bytes", "RSS per parked run, total delta / N (passivated)", "bytes", "lower"),
            Metric("marginal_rss_per_run_bytes", "RSS per additional parked run, slope over waves", "bytes", "lower"),
            Metric("anon_per_run_bytes", "RSS−shared per parked run (passivated)", "bytes", "lower"),
            Metric("runs_per_gib", "parked runs per GiB RSS", "runs", "higher"),
            Metric("live_rss_per_run_bytes", "RSS per parked run, passivation off", "bytes", "lower", n_key="live_n"),
            Metric("start_per_s", "parked runs started/s (start_many, one commit per 2,000)", "runs/s", "higher",
                   no_peer="no DBOS equivalent (no batch start)"),
            Metric("lateness_p50_ms", "timer lateness p50, crowd of late_n", "ms", "lower", n_key="late_n"),
            Metric("lateness_p99_ms", "timer lateness p99, crowd of late_n", "ms", "lower", n_key="late_n"),
            Metric("fire_lateness_p50_ms", "timer fire lateness p50 (journaled)", "ms", "lower", n_key="late_n"),
            Metric("fire_lateness_p99_ms", "timer fire lateness p99 (journaled)", "ms", "lower", n_key="late_n"),
        ],
        notes="Compared rows are measured at DBOS's N in DBOS's shape (gathered async starts in waves) on both "
              "sides; DBOS keeps every waiting workflow live (a coroutine; no passivation), so its RSS is also "
              "set against actorflow with passivation off at that N. The N-column shows each side's N.",
    )
)
