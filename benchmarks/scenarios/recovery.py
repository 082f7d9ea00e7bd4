"""recovery: a process with N runs in flight (step 1 done, step 2 running or queued) is SIGKILLed;
a fresh process reopens the engine and we time: open() returning, every run executing its interrupted
step again, and all N completed. DBOS: the same workflow, DBOS re-enqueueing PENDING workflows on launch.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import af_settings, engine_dir, wait_ready

_BLOCK = threading.Event()  # never set in the process that is killed
_lock = threading.Lock()
_counts = {"s1": 0, "s2": 0}


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"n": 100, "dbos_n": 10}
    if s.quick:
        return {"n": 1000, "dbos_n": 50}
    return {"n": 10_000, "dbos_n": 300}


def _bump(key: str) -> None:
    with _lock:
        _counts[key] += 1


def _engine(workdir: str) -> Any:
    from actorflow import Engine

    engine = Engine(engine_dir(workdir), close_grace=0.0)

    async def s2(i: int) -> int:
        # async, so a blocked step holds no pool thread (sync ones would starve the others' step 1)
        if not _BLOCK.is_set():
            await asyncio.Event().wait()  # the killed process: never returns
        _bump("s2")
        return i + 1

    @engine.workflow(name="recoverable")
    async def recoverable(ctx: Any, i: int) -> int:
        a = await ctx.step("s1", lambda: (_bump("s1"), i)[1])
        b = await ctx.step("s2", functools.partial(s2, a))  # the async function itself, not a lambda
        # returning its coroutine: StepPool would hold a thread while awaiting that
        return await ctx.step("s3", lambda: b + 1)  # type: ignore[no-any-return]

    return engine, recoverable


def _child(workdir: str, n: int) -> None:
    engine, wf = _engine(workdir)
    engine.open()
    engine.start_many(wf, [(i,) for i in range(n)], run_ids=[f"rec-{i}" for i in range(n)])
    while _counts["s1"] < n:
        time.sleep(0.01)
    # ready once every step-1 result is durable (a result still on its way to the journal when the
    # kill comes is a step in flight: it runs again after the crash, and s1_rerun_after_crash says so)
    pending = [f"rec-{i}" for i in range(n)]
    while pending:
        pending = [rid for rid in pending if not any(e.kind == "step_completed" for e in engine.history(rid))]
        if pending:
            time.sleep(0.01)
    print("READY", flush=True)
    time.sleep(3600)


def _measure(n: int, workdir: str) -> dict[str, Any]:
    _BLOCK.clear()
    _counts.update(s1=0, s2=0)
    child = subprocess.Popen(
        [sys.executable, "-c", f"import actorflow; from benchmarks.scenarios import recovery as r; r._child({workdir!r}, {n})"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        line = wait_ready(child, 600)
        if line.strip() != "READY":
            raise RuntimeError(f"recovery child did not get ready: {line!r}")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    _BLOCK.set()
    engine, wf = _engine(workdir)
    t0 = time.perf_counter()
    engine.open()
    t_open = time.perf_counter() - t0
    try:
        t_resumed = None
        deadline = time.time() + 600
        while time.time() < deadline:
            if _counts["s2"] >= n:
                t_resumed = time.perf_counter() - t0
                break
            time.sleep(0.002)
        for i in range(n):
            assert engine.result(f"rec-{i}", timeout=600) == i + 2
        t_all = time.perf_counter() - t0
        rerun_s1 = _counts["s1"]
        settings = af_settings(engine, "start_many with run_ids, kill -9; a new process's Engine.open() "
                                       "queues the recovery of every unfinished run")
    finally:
        engine.close()
    return {"open_s": t_open, "resumed_s": t_resumed, "all_done_s": t_all, "recovered_per_s": n / t_all,
            "n": n, "s1_rerun_after_crash": rerun_s1, "settings": settings}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Once with DBOS's N (the compared rows), once with the larger N."""
    small = _measure(p["dbos_n"], os.path.join(workdir, "small"))
    big = _measure(p["n"], os.path.join(workdir, "big"))
    out = {f"peer_n_{k}": v for k, v in small.items() if k.endswith("_s") or k == "s1_rerun_after_crash"}
    out.update(big)
    out["peer_n"] = p["dbos_n"]
    out["settings"] = big["settings"]
    return out


register(
    Scenario(
        name="recovery",
        title="recovery after kill -9 with N runs in flight",
        order=50,
        params=params,
        actorflow="benchmarks.scenarios.recovery:actorflow",
        peers={"dbos": "benchmarks.peers.dbos_peer:recovery"},
        quick_repeat=1,
        metrics=[
            Metric("peer_n_open_s", "reopen (open()/launch returns), dbos_n runs", "s", "lower", "open_s",
                   n_key="peer_n"),
            Metric("peer_n_resumed_s", "until every run re-executes its interrupted step, dbos_n runs", "s",
                   "lower", "resumed_s", n_key="peer_n"),
            Metric("peer_n_all_done_s", "until all completed, dbos_n runs", "s", "lower", "all_done_s", chart=True,
                   n_key="peer_n"),
            Metric("peer_n_recovered_per_s", "recovered runs completed/s, dbos_n runs", "runs/s", "higher",
                   "recovered_per_s", chart=True, n_key="peer_n"),
            Metric("peer_n_s1_rerun_after_crash", "completed step 1 run again after the crash, dbos_n runs "
                   "(must be 0 in every repetition)", "runs", "lower", n_key="peer_n"),
            Metric("open_s", "reopen, n runs", "s", "lower"),
            Metric("resumed_s", "until every run re-executes its interrupted step, n runs", "s", "lower"),
            Metric("all_done_s", "until all completed, n runs", "s", "lower"),
            Metric("recovered_per_s", "recovered runs completed/s, n runs", "runs/s", "higher"),
            Metric("s1_rerun_after_crash", "completed step 1 run again after the crash, n runs "
                   "(must be 0 in every repetition)", "runs", "lower"),
        ],
        must_be_zero=("peer_n_s1_rerun_after_crash", "s1_rerun_after_crash"),
        notes="actorflow is measured at DBOS's size (dbos_n; compared rows) and at n. A run fails if any "
              "repetition ran a journaled step again (s1_rerun_after_crash > 0); DBOS's own count is in dbos_info. "
              "DBOS recovers by re-enqueueing PENDING workflows on launch to an internal queue polled every 1 s.",
    )
)
