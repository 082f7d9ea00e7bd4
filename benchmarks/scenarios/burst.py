"""burst: N day-long sleepers started by ONE start_many call, against the same N started in waves.

Issue 17: memory held only when runs arrived politely - one start_many of 50,000 sleepers kept
~3,000-3,600 B of RSS per run after they were all passivated, against ~800 in waves that settle
first, because every run machine of the burst was built at the same moment and the memory freed
after that peak stays with the process (pymalloc arenas, LMDB's kept dirty pages). Now a host
holds at most `max_resident` runs (its share) and admits the rest as room appears, and start_many
commits in groups of 10,000.

Each mode runs in a fresh process (its own peak): a warmed-up engine, the baseline RSS, then
- one_call: `engine.start_many(sleeper, [(86400.0,)] * N)` - one call, N handles returned;
- waves: the same N as N/wave calls of `wave` runs, each wave parked and passivated before the next
  (the million scenario's shape);
then every run is checked asleep (its status, one read per run, over all N at the end in both modes:
a status read maps the journal page holding the run's record, so checking only in one mode would
count that mode's extra file-backed pages; both keep their handles until then), the handles dropped,
the parked runs checked evicted (no run resident, no run machine alive), and RSS read. Reported per mode:
peak RSS (VmHWM: the kernel's high-water mark of this process since the baseline), settled RSS,
the per-run bytes of both over the baseline, the most runs resident at once (the hosts' own
high-water marks) and the rate at which runs were parked. Target: 1,000,000 in one call with peak
and settled RSS <= 1 GiB, and the same settled bytes per run as waves (within 20%).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from actorflow import _trim

from .._harness import Metric, Scenario, Settings, register
from ._common import af_settings, engine_dir, register_three_step, wait_evicted

MIB = 2**20


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 1_000, "wave": 500, "passivate_after": 0.1, "settle_s": 0.2}
    if s.quick:
        return {"n": 100_000, "wave": 25_000, "passivate_after": 0.5, "settle_s": 1.0}
    return {"n": 1_000_000, "wave": 50_000, "passivate_after": 0.5, "settle_s": 1.0}


def _mem() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile in bytes (from /proc), after a full GC."""
    gc.collect()
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    """Restart the kernel's RSS high-water mark (VmHWM) from the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _asleep(handles: list[Any], timeout: float = 1800.0) -> None:
    """Until every run sleeps: one status read per run (a runs() listing of N would itself cost memory)."""
    i, deadline = 0, time.time() + timeout
    while i < len(handles):
        if handles[i].status().state == "sleeping":
            i += 1
        elif time.time() > deadline:
            raise TimeoutError(f"{len(handles) - i} runs not asleep after {timeout}s")
        else:
            time.sleep(0.05)


def measure(workdir: str, p: dict[str, Any], mode: str) -> dict[str, Any]:
    """One mode in this (fresh) process."""
    from actorflow import Engine

    n, wave = p["n"], p["wave"]
    path = engine_dir(workdir, f"burst-{mode}")
    engine = Engine(path, passivate_after=p["passivate_after"])

    @engine.workflow(name="sleeper")
    async def sleeper(ctx: Any, seconds: float) -> None:
        await ctx.sleep("nap", seconds)

    wf = register_three_step(engine)
    with engine:
        engine.run(wf, 0, timeout=60)
        base = _mem()
        _reset_peak()
        t0 = time.perf_counter()
        calls = 0
        if mode == "one_call":
            kept = [engine.start_many(sleeper, [(86400.0,)] * n)]
            calls = 1
            returned_s = time.perf_counter() - t0
        else:
            returned_s = parked_s = 0.0
            done, kept = 0, []
            while done < n:
                k = min(wave, n - done)
                t1 = time.perf_counter()
                handles = engine.start_many(sleeper, [(86400.0,)] * k)
                calls += 1
                _asleep(handles)
                kept.append(handles)
                parked_s += time.perf_counter() - t1  # settling excluded
                done += k
                time.sleep(p["passivate_after"] + p["settle_s"])  # the wave settles (is passivated) first
                wait_evicted(engine, collect=False)  # no full GC between waves: the one call has none
        for handles in kept:  # the same check in both modes: one status read per run, all N at the end
            _asleep(handles)
        if mode == "one_call":
            parked_s = time.perf_counter() - t0
        del kept, handles
        time.sleep(p["passivate_after"] + p["settle_s"])
        evicted = wait_evicted(engine, collect=False)  # raises unless every parked run really left memory
        end = _mem()
        trim = _trim.glibc_trim()  # diagnosis only, after the reading: how much of the anon is freed memory kept
        if trim is not None:
            trim()
        trimmed = _mem()
        res = engine.residency()
        settings = af_settings(engine, "one start_many of N" if mode == "one_call" else f"start_many of {wave}, "
                               "each wave parked and passivated before the next", max_resident=engine.max_resident)
    return {
        "n": n,
        "calls": calls,
        "base_rss_mib": round(base["VmRSS"] / MIB, 1),
        "peak_rss_mib": round(end["VmHWM"] / MIB, 1),
        "settled_rss_mib": round(end["VmRSS"] / MIB, 1),
        "settled_anon_mib": round(end["RssAnon"] / MIB, 1),
        "settled_file_mib": round(end["RssFile"] / MIB, 1),
        "peak_per_run_bytes": round((end["VmHWM"] - base["VmRSS"]) / n, 1),
        "settled_per_run_bytes": round((end["VmRSS"] - base["VmRSS"]) / n, 1),
        "anon_per_run_bytes": round((end["RssAnon"] - base["RssAnon"]) / n, 1),
        "file_per_run_bytes": round((end["RssFile"] - base["RssFile"]) / n, 1),
        "anon_after_trim_per_run_bytes": round((trimmed["RssAnon"] - base["RssAnon"]) / n, 1),
        "peak_resident": res.peak_resident,
        "peak_waiting": res.peak_waiting,
        "evicted_early": res.evicted_early,
        "park_per_s": round(n / parked_s),
        "returned_s": round(returned_s, 2),
        "evicted_before_rss": evicted,
        "malloc_trims": _trim.trimmer.trims,  # the engine giving passivated memory back (actorflow/_trim.py)
        "malloc_trim_ms": round(_trim.trimmer.seconds * 1000, 1),  # their cost
        "settings": settings,
    }


def _fresh(workdir: str, p: dict[str, Any], mode: str) -> dict[str, Any]:
    """`measure` in a fresh Python process (its VmHWM is this mode's alone)."""
    call = f"b.measure({workdir!r}, {p!r}, {mode!r})"
    proc = subprocess.run(
        [sys.executable, "-c", f"import json; from benchmarks.scenarios import burst as b; print(json.dumps({call}))"],
        capture_output=True, text=True, timeout=3000, env=dict(os.environ),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    one = _fresh(workdir, p, "one_call")
    waves = _fresh(workdir, p, "waves")
    out: dict[str, Any] = {"n": p["n"], "wave": p["wave"]}
    for name, r in (("one_call", one), ("waves", waves)):
        for k, v in r.items():
            if k not in ("n", "settings"):
                out[f"{name}_{k}"] = v
    out["settled_per_run_one_call_over_waves"] = round(
        one["settled_per_run_bytes"] / max(1.0, waves["settled_per_run_bytes"]), 3)
    out["settings"] = {**one["settings"], "api": f"one_call: {one['settings']['api']}; waves: {waves['settings']['api']}"}
    for name, r in (("one_call", one), ("waves", waves)):
        print(f"[burst] {name:8} N={r['n']:,} calls={r['calls']} peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"settled {r['settled_rss_mib']:.0f} MiB ({r['settled_per_run_bytes']:.0f} B/run settled, "
              f"{r['peak_per_run_bytes']:.0f} B/run at peak) resident <= {r['peak_resident']:,} "
              f"parked {r['park_per_s']:,}/s", file=sys.stderr)
    return out


register(
    Scenario(
        name="burst",
        title="N day-long sleepers from ONE start_many vs in waves: peak and settled RSS",
        order=47,
        params=params,
        actorflow="benchmarks.scenarios.burst:actorflow",
        quick_repeat=1,
        full_repeat=1,
        timeout=6000,
        metrics=[
            Metric("one_call_peak_rss_mib", "one start_many of N: peak RSS (target <= 1024 at 1M)", "MiB", "lower",
                   chart=True),
            Metric("one_call_settled_rss_mib", "one start_many of N: settled RSS, all parked and evicted (target "
                   "<= 1024 at 1M)", "MiB", "lower", chart=True),
            Metric("one_call_settled_per_run_bytes", "one start_many: settled RSS per run over the baseline", "bytes",
                   "lower"),
            Metric("waves_settled_per_run_bytes", "in waves: settled RSS per run over the baseline", "bytes", "lower"),
            Metric("settled_per_run_one_call_over_waves", "settled bytes per run, one call / waves (target within "
                   "1 +- 0.2)", "ratio", "lower"),
            Metric("one_call_peak_per_run_bytes", "one start_many: peak RSS per run over the baseline", "bytes",
                   "lower"),
            Metric("waves_peak_rss_mib", "in waves: peak RSS", "MiB", "lower"),
            Metric("waves_settled_rss_mib", "in waves: settled RSS", "MiB", "lower"),
            Metric("one_call_peak_resident", "one start_many: most runs in memory at once (cap: max_resident)",
                   "runs", "lower"),
            Metric("one_call_park_per_s", "one start_many: runs parked per second (start to all asleep)", "runs/s",
                   "higher"),
            Metric("waves_park_per_s", "in waves: runs parked per second (the pauses between waves excluded)",
                   "runs/s", "higher"),
        ],
        notes="No DBOS peer (no batch start; DBOS keeps every waiting workflow in memory). Each mode in a fresh "
              "process; GC thresholds raised on actorflow's side (Engine default).",
    )
)
