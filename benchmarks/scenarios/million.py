"""million: the performance issue's two targets measured for real (sleepers.py extrapolates both).

1. N runs parked on durable timers and signals (half `ctx.sleep(3600)`, half `ctx.wait_signal`),
   started with start_many in waves that each settle (passivate) before the next; with all N
   parked: absolute VmRSS / RssAnon / RssFile (from /proc), deltas from a warmed-up baseline, per
   run, parked runs per GiB, and the marginal RSS per run between the first and the last wave.
   Target: 1,000,000 parked runs in <= 1 GiB RSS.
   Before each RSS reading the run checks that the parked runs really were evicted (no run resident
   in the hosts, no Run object alive) and fails otherwise.
2. On top of them, F `timed` runs whose dues are spread uniformly at RATE/s, chosen so that all F
   are asleep and passivated >= 3 s before the first is due: half from t0, inside the timer wheel's
   in-memory window (`timer_horizon`, 30 s) when armed, half from beyond it, so those are only in the
   LMDB timer index when armed and are read back from it as the window moves (checked: the run
   fails if one was armed inside the window). Per half: fire lateness (journaled `timer_fired` - due,
   ~1000 sampled runs), resume lateness (the step's time.time() - due) and the achieved fire rate.
   Target: p99 <= 1 s at 10,000 timers/s.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import af_settings, engine_dir, percentile, register_three_step, wait_evicted
from .sleepers import _workflows

CHUNK = 2000  # runs per start_many commit


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 400, "wave": 200, "fire_n": 200, "rate": 1000, "passivate_after": 0.1, "settle_s": 0.5,
                "slack_s": 1.0, "timer_horizon": 1.0}  # a short window: the from-index half fires within seconds
    if s.quick:
        return {"n": 20_000, "wave": 10_000, "fire_n": 10_000, "rate": 10_000, "passivate_after": 0.5,
                "settle_s": 2.0, "slack_s": 3.0}
    return {"n": 1_000_000, "wave": 50_000, "fire_n": 50_000, "rate": 10_000, "passivate_after": 0.5,
            "settle_s": 2.0, "slack_s": 3.0}


def _mem() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile in bytes after a full GC: the kernel's own anon / file-backed split."""
    gc.collect()
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _wait_states(handles: list[Any], states: tuple[str, ...], timeout: float = 900.0) -> None:
    """Until every handle's run is in `states`: one status read per run, not a runs() scan of all N."""
    i, deadline = 0, time.time() + timeout
    while i < len(handles):
        if handles[i].status().state in states:
            i += 1
        elif time.time() > deadline:
            raise TimeoutError(f"{len(handles) - i} runs not in {states} after {timeout}s")
        else:
            time.sleep(0.05)


def _start(engine: Any, wf: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    handles: list[Any] = []
    for lo in range(0, len(args), CHUNK):
        handles += engine.start_many(wf, args[lo:lo + CHUNK])
    return handles


def _lateness(handles: list[Any], dues: list[float], t0: float) -> dict[str, Any]:
    """Fire lateness (journaled `timer_fired` - due, ~1000 sampled runs), resume lateness (the step's
    time.time() - due, all) and the achieved rates of runs due at `dues` from `t0`."""
    f = len(handles)
    woke = [h.result(900) for h in handles]
    late = [(w - d) * 1000 for w, d in zip(woke, dues)]  # in due order: does lateness grow (falling behind)?
    resume, tenth = sorted(late), max(1, f // 10)
    sample = sorted(set(range(0, f, max(1, f // 1000))) | {f - 1, max(range(f), key=woke.__getitem__)})
    fire, fired_at = [], []
    for i in sample:
        evs = {e.kind: e for e in handles[i].history()}
        fired_at.append(evs["timer_fired"].at)
        fire.append((evs["timer_fired"].at - evs["timer_started"].data) * 1000)
    fire.sort()
    return {
        "fire_lateness_p50_ms": percentile(fire, 50),
        "fire_lateness_p99_ms": percentile(fire, 99),
        "fire_lateness_max_ms": fire[-1],
        "fire_lateness_min_ms": fire[0],
        "resume_lateness_p50_ms": percentile(resume, 50),
        "resume_lateness_p99_ms": percentile(resume, 99),
        "resume_lateness_max_ms": resume[-1],
        "resume_p99_by_tenth_ms": [round(percentile(sorted(late[i:i + tenth]), 99) or 0) for i in range(0, f, tenth)],
        "fire_per_s": f / max(1e-9, max(fired_at) - t0),
        "resume_per_s": f / max(1e-9, max(woke) - t0),
        "fire_sampled": len(fire),
    }


def _fire(engine: Any, timed: Any, f: int, rate: float, lead: float) -> dict[str, Any]:
    """f runs in two halves, each due at RATE/s: the first from t0 (`lead` s ahead, inside the timer
    wheel's in-memory window when armed), the second from beyond that window, so their timers are
    only in the LMDB timer index when armed and are read back from it as the window moves on."""
    horizon = engine.timer_horizon
    f_near, f_far = f // 2, f - f // 2
    t0 = time.time() + lead
    t_far = t0 + lead + horizon + 2.0  # armed by t0 at the latest: due > armed + horizon
    near = [t0 + i / rate for i in range(f_near)]
    far = [t_far + i / rate for i in range(f_far)]
    handles = _start(engine, timed, [(d,) for d in near + far])
    _wait_states(handles, ("sleeping", "completed"))
    armed = time.time()
    slack = t0 - armed  # all asleep this long before the first due (passivated if > passivate_after)
    beyond = far[0] - armed - horizon if far else None
    if beyond is not None and beyond <= 0:
        raise RuntimeError(f"far timers were armed within the {horizon}s in-memory window ({beyond:.1f}s)")
    time.sleep(max(0.0, (far or near)[-1] - time.time()))  # collecting results while they fire would load the engine
    out = {f"near_{k}": v for k, v in _lateness(handles[:f_near], near, t0).items()}
    out.update({f"far_{k}": v for k, v in _lateness(handles[f_near:], far, t_far).items()})
    for k in ("fire_lateness_p50_ms", "fire_lateness_p99_ms", "fire_lateness_max_ms", "resume_lateness_p50_ms",
              "resume_lateness_p99_ms", "resume_lateness_max_ms"):
        out[k] = max(out[f"near_{k}"], out[f"far_{k}"])
    out["all_asleep_before_due_s"] = round(slack, 2)
    out["far_armed_beyond_window_s"] = round(beyond, 2) if beyond is not None else None
    out["timer_horizon_s"] = horizon
    return out


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    n, wave, mib = p["n"], p["wave"], 2**20
    path = engine_dir(workdir)
    engine = Engine(path, passivate_after=p["passivate_after"], timer_horizon=p.get("timer_horizon", 30.0))
    sleeper, waiter, timed = _workflows(engine)
    wf = register_three_step(engine)
    with engine:
        engine.run(wf, 0, timeout=60)
        base = _mem()
        waves: list[tuple[int, dict[str, int]]] = []
        done, busy, last_rate = 0, 0.0, 0.0
        while done < n:
            w = min(wave, n - done)
            t = time.perf_counter()
            handles = _start(engine, sleeper, [(3600.0,)] * (w // 2)) + _start(engine, waiter, [()] * (w - w // 2))
            _wait_states(handles, ("sleeping", "waiting"))
            del handles
            dt = time.perf_counter() - t
            busy, last_rate, done = busy + dt, w / dt, done + w
            time.sleep(p["passivate_after"] + p["settle_s"])  # housekeeping passivates idle runs
            evicted = wait_evicted(engine)  # raises unless every parked run really left memory
            waves.append((done, _mem()))
        end = waves[-1][1]
        (n_a, m_a), (n_b, m_b) = waves[0], waves[-1]
        mdb = sum(os.path.getsize(os.path.join(d, "data.mdb")) for d, _, fs in os.walk(path) if "data.mdb" in fs)
        # lead: the F starts at the last wave's pace, twice over, then the slack (>= 3 s full/quick)
        lead = 2 * p["fire_n"] / last_rate + p["slack_s"] + p["passivate_after"]
        fire = _fire(engine, timed, p["fire_n"], p["rate"], lead)
        after = _mem()
        settings = af_settings(engine, f"start_many in commits of {CHUNK}, waves of {wave}")
    per_run = (end["VmRSS"] - base["VmRSS"]) / n
    return {
        "rss_mib": end["VmRSS"] / mib,
        "rss_anon_mib": end["RssAnon"] / mib,
        "rss_file_mib": end["RssFile"] / mib,
        "rss_delta_mib": (end["VmRSS"] - base["VmRSS"]) / mib,
        "anon_delta_mib": (end["RssAnon"] - base["RssAnon"]) / mib,
        "file_delta_mib": (end["RssFile"] - base["RssFile"]) / mib,
        "rss_per_run_bytes": per_run,
        "anon_per_run_bytes": (end["RssAnon"] - base["RssAnon"]) / n,
        "runs_per_gib": 2**30 / max(1.0, per_run),
        "marginal_rss_per_run_bytes": (m_b["VmRSS"] - m_a["VmRSS"]) / (n_b - n_a) if n_b > n_a else None,
        "marginal_anon_per_run_bytes": (m_b["RssAnon"] - m_a["RssAnon"]) / (n_b - n_a) if n_b > n_a else None,
        **fire,
        "n": n,
        "fire_n": p["fire_n"],
        "rate": p["rate"],
        "baseline_rss_mib": round(base["VmRSS"] / mib, 1),
        "data_mdb_bytes_per_run": round(mdb / n, 1),
        "park_per_s": round(n / busy),
        "wave_rss_mib": [round(m["VmRSS"] / mib) for _, m in waves],
        "rss_growth_after_fire_mib": round((after["VmRSS"] - end["VmRSS"]) / mib, 1),
        "anon_growth_after_fire_mib": round((after["RssAnon"] - end["RssAnon"]) / mib, 1),
        "evicted_before_rss": evicted,
        "settings": settings,
    }


register(
    Scenario(
        name="million",
        title="1M runs parked on timers/signals: RSS, and timer lateness at 10k fires/s on top",
        order=45,
        params=params,
        actorflow="benchmarks.scenarios.million:actorflow",
        quick_repeat=1,
        full_repeat=1,
        timeout=3600,
        metrics=[
            Metric("rss_mib", "process RSS with N runs parked (target <= 1024 at 1M)", "MiB", "lower", chart=True),
            Metric("rss_anon_mib", "RssAnon with N parked", "MiB", "lower"),
            Metric("rss_file_mib", "RssFile with N parked (LMDB map, libraries)", "MiB", "lower"),
            Metric("rss_delta_mib", "RSS growth from the warmed-up baseline", "MiB", "lower"),
            Metric("anon_delta_mib", "RssAnon growth from the baseline", "MiB", "lower"),
            Metric("file_delta_mib", "RssFile growth from the baseline", "MiB", "lower"),
            Metric("rss_per_run_bytes", "RSS growth per parked run", "bytes", "lower"),
            Metric("anon_per_run_bytes", "RssAnon growth per parked run", "bytes", "lower"),
            Metric("runs_per_gib", "parked runs per GiB RSS growth", "runs", "higher", chart=True),
            Metric("marginal_rss_per_run_bytes", "RSS per additional parked run (first to last wave)", "bytes",
                   "lower"),
            Metric("near_fire_lateness_p50_ms", "fire lateness p50, F/2 due within the in-memory timer window",
                   "ms", "lower", n_key="fire_n"),
            Metric("near_fire_lateness_p99_ms", "fire lateness p99, in-window half (target <= 1000)", "ms", "lower",
                   chart=True, n_key="fire_n"),
            Metric("far_fire_lateness_p50_ms", "fire lateness p50, F/2 armed beyond the window (read back from "
                   "the LMDB timer index)", "ms", "lower", n_key="fire_n"),
            Metric("far_fire_lateness_p99_ms", "fire lateness p99, from-index half (target <= 1000)", "ms", "lower",
                   chart=True, n_key="fire_n"),
            Metric("resume_lateness_p50_ms", "resume lateness p50 (workflow sees), worse half", "ms", "lower",
                   n_key="fire_n"),
            Metric("resume_lateness_p99_ms", "resume lateness p99 (workflow sees), worse half", "ms", "lower",
                   chart=True, n_key="fire_n"),
            Metric("resume_lateness_max_ms", "resume lateness max", "ms", "lower", n_key="fire_n"),
            Metric("near_fire_per_s", "achieved fire rate, in-window half", "fires/s", "higher", n_key="fire_n"),
            Metric("far_fire_per_s", "achieved fire rate, from-index half", "fires/s", "higher", n_key="fire_n"),
        ],
        notes="No DBOS peer: DBOS keeps every waiting workflow live in memory (~74 KB each, see sleepers), "
              "so a million would need ~70 GiB. One repetition (a full run takes several minutes).",
    )
)
