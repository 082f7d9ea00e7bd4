"""Helpers shared by the actorflow side of the scenarios (not a scenario: underscore modules are skipped)."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any


def engine_dir(workdir: str, name: str = "af") -> str:
    path = os.path.join(workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


def register_three_step(engine: Any, name: str = "three_step") -> Any:
    """The 3-step workflow every throughput scenario uses (each step journaled and fsync'd)."""

    @engine.workflow(name=name)
    async def three_step(ctx: Any, i: int) -> int:
        a = await ctx.step("s1", lambda: i)
        b = await ctx.step("s2", lambda: a + 1)
        return await ctx.step("s3", lambda: b + 1)  # type: ignore[no-any-return]

    return three_step


def rss_bytes() -> tuple[int, int]:
    """(RSS, RSS minus file-backed shared pages ~ anonymous memory) of this process, after a GC."""
    import psutil

    gc.collect()
    mi = psutil.Process().memory_info()
    return mi.rss, mi.rss - getattr(mi, "shared", 0)


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def raw_commit_floor(workdir: str, n: int = 500) -> dict[str, float]:
    """What one fsync'd LMDB commit of one small event costs here with no engine at all (same disk,
    same flags as the journal): the floor under any durable step. µs of wall, user and system CPU."""
    import shutil

    import lmdb

    path = os.path.join(workdir, "raw-floor")
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=64 << 20, max_dbs=4, sync=True, metasync=True, readahead=False)
    try:
        db = env.open_db(b"events")
        value = os.urandom(80)
        for i in range(50):  # warm-up: the first commits grow the file
            with env.begin(write=True) as txn:
                txn.put(b"warm\0" + i.to_bytes(8, "big"), value, db=db)
        u0, s0 = cpu_times()
        t0 = time.perf_counter()
        for i in range(n):
            with env.begin(write=True) as txn:
                txn.put(b"floor\0" + i.to_bytes(8, "big"), value, db=db)
        wall = time.perf_counter() - t0
        u1, s1 = cpu_times()
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)
    return {"wall_us": 1e6 * wall / n, "user_us": 1e6 * (u1 - u0) / n, "sys_us": 1e6 * (s1 - s0) / n,
            "cpu_us": 1e6 * (u1 - u0 + s1 - s0) / n}


def percentile(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class Timer:
    def __enter__(self) -> Timer:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def wait_ready(proc: Any, timeout: float) -> str:
    """The first stdout line of a child process, or "" if none within `timeout` seconds."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def af_settings(engine: Any, api: str, **more: Any) -> dict[str, Any]:
    """This side's settings, recorded with its results; call while `engine` is open (GC thresholds)."""
    gc_note = ("raised by Engine(gc_threshold=...) on actorflow's side only" if engine.gc_threshold is not None
               else "Engine(gc_threshold=None): CPython default, as DBOS's")
    return {
        "api": api,
        "durability": f"LMDB journal, fsync on every group commit (sync={engine.sync})",
        "gc thresholds": f"{gc.get_threshold()} ({gc_note})",
        "passivate_after": engine.passivate_after,
        **more,
    }


def resident_runs(engine: Any) -> int:
    """Runs held in memory by the engine's run hosts (evicted, i.e. passivated, ones are not).

    A read-only look at an internal table (each host's `runs` dict, read from another thread: a
    len() is atomic), as there is no public counter: the benchmarks use it to check that parked
    runs really were evicted before they read RSS."""
    rt = engine._rt  # noqa: SLF001
    return sum(len(actor.logic.runs) for actor in list(rt.local_hosts.values()))


def run_objects(collect: bool = True) -> int:
    """actorflow run machines still alive in this process (after a full GC unless `collect` is
    False: evicted runs are freed by reference counting, so they are gone without one)."""
    from actorflow._core import RunMachine

    if collect:
        gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is RunMachine)


def wait_evicted(engine: Any, timeout: float = 60.0, allowed: int = 0, collect: bool = True) -> dict[str, Any]:
    """Until at most `allowed` runs are resident (housekeeping passivates once a second); raises if they
    stay. Returns how long that took and the live Run objects left, for the results."""
    t0 = time.perf_counter()
    while (left := resident_runs(engine)) > allowed:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{left} runs still resident after {timeout}s: parked runs were not evicted")
        time.sleep(0.1)
    objs = run_objects(collect)
    if objs > allowed + 16:  # a few may be finishing or replaying; parked ones must be gone
        raise RuntimeError(f"{objs} Run objects alive with {left} resident: evicted runs are still referenced")
    return {"evict_wait_s": round(time.perf_counter() - t0, 2), "resident_runs": left, "run_objects": objs}


def park_in_waves(
    start: Callable[[int], None], n: int, wave: int, settle: Callable[[], None]
) -> dict[str, Any]:
    """The shape both sides of the sleepers comparison park their runs in: `start(k)` k runs per wave,
    then `settle()` before each RSS sample. Returns the seconds spent starting, RSS per run over all
    N (from the baseline taken before the first wave) and the slope from the first wave to the last."""
    rss0, anon0 = rss_bytes()
    samples: list[tuple[int, int, int]] = []
    done, start_s = 0, 0.0
    while done < n:
        k = min(wave, n - done)
        t0 = time.perf_counter()
        start(k)
        start_s += time.perf_counter() - t0
        done += k
        settle()
        samples.append((done, *rss_bytes()))
    (n_a, rss_a, _), (n_b, rss_b, anon_b) = samples[0], samples[-1]
    return {
        "start_s": start_s,
        "rss": (rss_b - rss0) / n,
        "anon": (anon_b - anon0) / n,
        "slope": (rss_b - rss_a) / (n_b - n_a) if n_b > n_a else None,
    }


def produce(send: Callable[[int], Any], n: int, producers: int = 1) -> tuple[list[Any], float]:
    """`send(i)` for i in range(n) from `producers` threads (thread k sends k, k+P, ...), the way a
    service's request handlers enqueue concurrently; returns (what each call returned, by i; seconds)."""
    import threading

    out: list[Any] = [None] * n
    if producers <= 1:
        t0 = time.perf_counter()
        for i in range(n):
            out[i] = send(i)
        return out, time.perf_counter() - t0
    errors: list[BaseException] = []
    go = threading.Event()

    def run(k: int) -> None:
        go.wait()
        try:
            for i in range(k, n, producers):
                out[i] = send(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), name=f"producer-{k}") for k in range(producers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return out, took


def die_with_parent() -> None:
    """`preexec_fn` for servers and workers a benchmark starts: the kernel SIGKILLs them if the worker
    process that started them dies (e.g. killed by the harness's timeout before its cleanup ran)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker's own cleanup (by PID) is all there is
        pass
