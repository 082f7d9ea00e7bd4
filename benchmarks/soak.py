"""Soak: mixed load on one embedded engine for a long time, reporting RSS and open file descriptors.

    python -m benchmarks.soak [--minutes 10] [--every 10] [--concurrency 40] [--data-dir DIR] [--json FILE]

Load, all at once and without pause: workflows (3 steps, a durable sleep, a signal sent while they
wait, a child run), tasks (with retries), task chains, and passivation (runs idle for 1 s leave
memory and are replayed when woken). Every `--every` seconds it samples the process's RSS, USS, and
RSS split into anonymous and file-backed pages (the LMDB map's pages the process touched are
file-backed: they grow with the journal until the kernel reclaims them), open fds and threads, and the throughput since the last sample. At the end it checks every result, closes the
engine, runs `storage.fsck` on the directory, and prints the curves with a verdict: after a warm-up
(the first quarter), RSS and fds should stay flat - it prints the least-squares slope per minute of
each over the rest and the growth from the first to the last sample of that part.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from typing import Any

import psutil

import actorflow  # noqa: F401  (before storage: storage imports actorflow.errors)
from actorflow import Engine, RetryPolicy
from benchmarks import memstats
from storage import fsck


def build(data_dir: str) -> Engine:
    engine = Engine(data_dir, passivate_after=1.0)

    @engine.workflow(name="kid")
    async def kid(ctx: Any, i: int) -> int:
        return int(await ctx.step("k", lambda: i * 3))

    @engine.workflow(name="mixed")
    async def mixed(ctx: Any, i: int) -> dict[str, Any]:
        a = await ctx.step("a", lambda: i)
        b = await ctx.step("b", lambda: a + 1)
        await ctx.sleep("nap", 0.05)
        got = await ctx.wait_signal("go", timeout=60)
        c = await ctx.child("kid", i)
        d = await ctx.step("d", lambda: b + c)
        return {"d": d, "got": got}

    attempts: dict[str, int] = {}

    @engine.task(name="flaky", retry=RetryPolicy.exponential(max_attempts=3, initial_delay=0.01))
    def flaky(ctx: Any, input: dict[str, Any]) -> dict[str, int]:
        key = ctx.execution_id
        attempts[key] = attempts.get(key, 0) + 1
        if attempts.pop(key) == 1 and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"n": int(input.get("n", 0)) + 1}

    return engine


KINDS = ("workflows", "tasks", "chains")


def _one(engine: Engine, i: int, kinds: tuple[int, ...] = (0, 1, 2)) -> None:
    kind = kinds[i % len(kinds)]
    if kind == 0:
        h = engine.start("mixed", i)
        engine.signal(h.run_id, "go", i)
        out = h.result(timeout=120)
        assert out == {"d": i + 1 + i * 3, "got": i}, out
    elif kind == 1:
        eid = engine.enqueue("flaky", {"n": i})
        assert engine.result(eid, timeout=120) == {"n": i + 1}
    else:
        cid = engine.chain("soak").then("flaky").then("flaky").enqueue({"n": i})
        assert engine.result(cid, timeout=120) == {"n": i + 2}


def _status_kb() -> dict[str, int]:
    """RssAnon and RssFile of this process (kB): the LMDB map's pages this process touched are
    file-backed - in RSS (and USS: no other process maps them) until the kernel reclaims them - so
    only the anonymous part says whether the engine's own memory grows."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


def _trim() -> None:
    """glibc's malloc_trim(0): hand freed heap back to the kernel, so RssAnon counts live memory."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def soak(minutes: float, every: float, concurrency: int, data_dir: str | None = None, quiet: bool = False,
         trim: bool = False, malloc_stats: bool = False, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    own_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="actorflow-soak-")
    proc = psutil.Process()
    engine = build(data_dir)
    done = [0]
    errors: list[str] = []
    stop = threading.Event()
    counter = iter(range(10**12))
    mix = tuple(KINDS.index(k) for k in kinds)
    lock = threading.Lock()

    def driver() -> None:
        while not stop.is_set():
            with lock:
                i = next(counter)
            try:
                _one(engine, i, mix)
            except BaseException as exc:  # noqa: BLE001 - reported in the verdict
                errors.append(f"{i}: {type(exc).__name__}: {exc}")
                if len(errors) > 20:
                    stop.set()
            with lock:
                done[0] += 1

    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    engine.open()
    threads = [threading.Thread(target=driver, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    last_done, last_t = 0, t0
    try:
        while time.monotonic() - t0 < minutes * 60 and not stop.is_set():
            time.sleep(min(every, max(0.0, minutes * 60 - (time.monotonic() - t0))))
            now = time.monotonic()
            pre_trim = None
            if trim:
                pre_trim = _status_kb().get("RssAnon", 0)
                _trim()
            mem = proc.memory_full_info()
            kb = _status_kb()
            with lock:
                n = done[0]
            s = {"t": round(now - t0, 1), "rss_mb": round(mem.rss / 2**20, 1), "uss_mb": round(mem.uss / 2**20, 1),
                 "anon_mb": round(kb.get("RssAnon", 0) / 1024, 1), "file_mb": round(kb.get("RssFile", 0) / 1024, 1),
                 "fds": proc.num_fds(), "threads": proc.num_threads(), "units": n,
                 "units_per_s": round((n - last_done) / max(now - last_t, 1e-9), 1)}
            if pre_trim is not None:
                s["anon_before_trim_mb"] = round(pre_trim / 1024, 1)
            if malloc_stats:
                s["mem"] = memstats.sample()
            samples.append(s)
            last_done, last_t = n, now
            if not quiet:
                print(f"{s['t']:7.1f}s  rss {s['rss_mb']:7.1f} MB  uss {s['uss_mb']:7.1f} MB  anon {s['anon_mb']:7.1f} MB  file {s['file_mb']:7.1f} MB  fds {s['fds']:4d}  "
                      f"threads {s['threads']:3d}  units {s['units']:7d}  ({s['units_per_s']}/s)", flush=True)
                if pre_trim is not None:
                    print(f"  anon before malloc_trim(0): {s['anon_before_trim_mb']} MB", flush=True)
                if malloc_stats:
                    print(memstats.line(s["mem"]), flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(180)
        engine.close()
    report = fsck(data_dir)
    steady = samples[len(samples) // 4 :] if len(samples) >= 4 else samples
    xs = [s["t"] / 60 for s in steady]
    out = {
        "minutes": minutes,
        "units": done[0],
        "errors": errors[:20],
        "fsck": report.by_kind,
        "fsck_counts": report.counts,
        "samples": samples,
        "steady_from_s": steady[0]["t"] if steady else None,
        "rss_slope_mb_per_min": round(_slope(xs, [s["rss_mb"] for s in steady]), 2),
        "uss_slope_mb_per_min": round(_slope(xs, [s["uss_mb"] for s in steady]), 2),
        "anon_slope_mb_per_min": round(_slope(xs, [s["anon_mb"] for s in steady]), 2),
        "file_slope_mb_per_min": round(_slope(xs, [s["file_mb"] for s in steady]), 2),
        "anon_growth_mb": round(steady[-1]["anon_mb"] - steady[0]["anon_mb"], 1) if steady else 0.0,
        "fds_slope_per_min": round(_slope(xs, [float(s["fds"]) for s in steady]), 2),
        "threads_slope_per_min": round(_slope(xs, [float(s["threads"]) for s in steady]), 2),
        "rss_growth_mb": round(steady[-1]["rss_mb"] - steady[0]["rss_mb"], 1) if steady else 0.0,
        "fds_growth": steady[-1]["fds"] - steady[0]["fds"] if steady else 0,
    }
    if own_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--concurrency", type=int, default=40, help="driver threads, each one unit at a time")
    p.add_argument("--data-dir", default=None, help="default: a temp dir, removed after")
    p.add_argument("--json", default=None, help="write the report (with every sample) here")
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) before each sample (glibc's retained free memory out of RssAnon)")
    p.add_argument("--malloc-stats", action="store_true",
                   help="with each sample, where the anonymous memory is (pymalloc arenas, glibc malloc, mappings)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated subset of {','.join(KINDS)}: which parts of the load run (to bisect a growth)")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--kinds: a comma-separated subset of {','.join(KINDS)}")
    out = soak(a.minutes, a.every, a.concurrency, a.data_dir, trim=a.trim, malloc_stats=a.malloc_stats, kinds=kinds)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"units {out['units']}, errors {len(out['errors'])}, fsck {'clean' if not out['fsck'] else out['fsck']}")
    print(f"after {out['steady_from_s']} s: rss {out['rss_slope_mb_per_min']:+} MB/min "
          f"(growth {out['rss_growth_mb']:+} MB), uss {out['uss_slope_mb_per_min']:+} MB/min, "
          f"anon {out['anon_slope_mb_per_min']:+} MB/min (growth {out['anon_growth_mb']:+} MB), "
          f"file {out['file_slope_mb_per_min']:+} MB/min, "
          f"fds {out['fds_slope_per_min']:+}/min (growth {out['fds_growth']:+}), "
          f"threads {out['threads_slope_per_min']:+}/min")
    for e in out["errors"]:
        print("error:", e)
    return 0 if not out["errors"] and not out["fsck"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
