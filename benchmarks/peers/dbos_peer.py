"""DBOS Transact (SQLite system database) versions of the scenarios — the peer actorflow is measured against.

Durability matched to actorflow's default (fsync before acknowledging): the SQLite file is in WAL
mode with synchronous=FULL on every connection DBOS opens (a pool "connect" listener; DBOS itself
sets only busy_timeout and foreign_keys). Each function here runs in its own worker process
(DBOS is a process-wide singleton) and returns one repetition's metrics, like the actorflow side.

    python -m benchmarks.peers.dbos_peer   # prints the pragmas DBOS's own engine runs with

Every worker reads those pragmas from DBOS's engine right after launch, refuses to measure unless
they are WAL + synchronous=FULL, and records them in its results' settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool


@event.listens_for(Pool, "connect")
def _durable_sqlite(dbapi_conn: Any, _rec: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()


from dbos import DBOS, DBOSConfig, SetWorkflowID  # noqa: E402

# --- workflows (registered at import, before launch, as DBOS requires) ----------------------------


@DBOS.step()
def _ident(x: Any) -> Any:
    return x


@DBOS.workflow()
def three_step(i: int) -> int:
    a = _ident(i)
    b = _ident(a + 1)
    return _ident(b + 1)  # type: ignore[no-any-return]


@DBOS.step()
async def _aident(x: Any) -> Any:
    return x


@DBOS.workflow()
async def three_step_async(i: int) -> int:
    a = await _aident(i)
    b = await _aident(a + 1)
    return await _aident(b + 1)  # type: ignore[no-any-return]


@DBOS.workflow()
def hundred(n: int) -> int:
    acc = 0
    for k in range(n):
        acc += _ident(k)
    return acc


@DBOS.step()
async def _now() -> float:
    return time.time()


@DBOS.workflow()
async def sleeper(seconds: float) -> None:
    await DBOS.sleep_async(seconds)


@DBOS.workflow()
async def waiter(topic: str) -> Any:
    return await DBOS.recv_async(topic, timeout_seconds=3600)


@DBOS.workflow()
async def timed_sleeper(due: float) -> float:
    await DBOS.sleep_async(max(0.0, due - time.time()))
    return await _now()  # type: ignore[no-any-return]


_BLOCK = threading.Event()  # set in the recovering process; never set in the one that is killed
_s1_done = 0
_s2_done = 0
_s1_lock = threading.Lock()


@DBOS.step()
async def _rec_s1(i: int) -> int:
    global _s1_done
    with _s1_lock:
        _s1_done += 1
    return i


@DBOS.step()
async def _rec_s2(i: int) -> int:
    global _s2_done
    if not _BLOCK.is_set():
        await asyncio.Event().wait()  # never returns in the process that gets SIGKILLed
    with _s1_lock:
        _s2_done += 1
    return i + 1


@DBOS.workflow()
async def recoverable(i: int) -> int:
    # async: a workflow blocked in step 2 holds no executor thread, so every run reaches step 2
    a = await _rec_s1(i)
    b = await _rec_s2(a)
    return await _aident(b + 1)  # type: ignore[no-any-return]


# --- life cycle -------------------------------------------------------------------------------------


_PRAGMAS: dict[str, Any] = {}  # what the last launch's system-db engine runs with (check())


def _launch(workdir: str, **extra: Any) -> None:
    """Launch DBOS on a SQLite file in `workdir` and check it runs as durably as actorflow does."""
    os.makedirs(workdir, exist_ok=True)
    cfg: DBOSConfig = {
        "name": "actorflow-bench",
        "system_database_url": f"sqlite:///{os.path.join(workdir, 'dbos.sqlite')}",
        "log_level": "ERROR",
        **extra,  # type: ignore[typeddict-item]
    }
    DBOS(config=cfg)
    DBOS.launch()
    _PRAGMAS.clear()
    _PRAGMAS.update(_pragmas())
    if str(_PRAGMAS["journal_mode"]).lower() != "wal" or _PRAGMAS["synchronous"] != 2:
        raise RuntimeError(f"DBOS's SQLite is not WAL + synchronous=FULL: {_PRAGMAS}; the comparison would be unfair")


def _pragmas() -> dict[str, Any]:
    """The journal mode and synchronous level of a connection from DBOS's own system-db engine."""
    import dbos._dbos as _d

    with _d._dbos_global_instance._sys_db.engine.connect() as c:  # type: ignore[union-attr]
        return {
            "journal_mode": c.exec_driver_sql("PRAGMA journal_mode").scalar(),
            "synchronous": c.exec_driver_sql("PRAGMA synchronous").scalar(),  # 2 = FULL
        }


def _settings(api: str, **more: Any) -> dict[str, Any]:
    """This side's settings, recorded with its results (the pragmas read from the live engine)."""
    import gc

    return {
        "api": api,
        "durability": f"SQLite journal_mode={_PRAGMAS.get('journal_mode')}, synchronous={_PRAGMAS.get('synchronous')}"
                      " (2 = FULL), read from DBOS's own engine in this worker",
        "gc thresholds": f"{gc.get_threshold()} (CPython default, untouched)",
        **more,
    }


def _shutdown() -> None:
    try:
        DBOS.destroy()
    except Exception:  # noqa: BLE001
        pass


def check(workdir: str) -> dict[str, Any]:
    """The pragmas DBOS's own system-db engine runs with (every worker checks them at launch too)."""
    _launch(workdir)
    try:
        return dict(_PRAGMAS)
    finally:
        _shutdown()


def _cpu_wall() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


# --- scenarios --------------------------------------------------------------------------------------


def seq3(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    n = p["n"]
    _launch(workdir)
    try:
        for i in range(p.get("warmup", 5)):
            three_step(i)
        c0, w0 = _cpu_wall()
        for i in range(n):
            assert three_step(i) == i + 2
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        _shutdown()
    return {"wf_per_s": n / wall, "ms_per_wf": 1000 * wall / n, "cpu_ms_per_wf": 1000 * cpu / n, "n": n,
            "settings": _settings("the @DBOS.workflow function called directly, in a loop (one caller)")}


def conc3(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    n = p["n"]
    out: dict[str, Any] = {"n": n}
    _launch(workdir)
    try:
        three_step(-1)
        c0, w0 = _cpu_wall()
        handles = [DBOS.start_workflow(three_step, i) for i in range(n)]
        results = [h.get_result() for h in handles]
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert results == [i + 2 for i in range(n)]
        out["threads_wf_per_s"] = n / wall
        out["threads_cpu_ms_per_wf"] = 1000 * cpu / n

        async def go() -> list[Any]:
            hs = await asyncio.gather(*(DBOS.start_workflow_async(three_step_async, i) for i in range(n)))
            return await asyncio.gather(*(h.get_result() for h in hs))

        c0, w0 = _cpu_wall()
        results = asyncio.run(go())
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert results == [i + 2 for i in range(n)]
        out["async_wf_per_s"] = n / wall
        out["async_cpu_ms_per_wf"] = 1000 * cpu / n
    finally:
        _shutdown()
    out["settings"] = _settings("DBOS.start_workflow x N then get_result() (its thread pool); "
                                "start_workflow_async x N gathered on one loop; no batch start exists")
    return out


def steps100(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    steps, wfs = p["steps"], p["workflows"]
    _launch(workdir)
    try:
        hundred(3)
        c0, w0 = _cpu_wall()
        for _ in range(wfs):
            assert hundred(steps) == steps * (steps - 1) // 2
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        _shutdown()
    total = steps * wfs
    return {"cpu_us_per_step": 1e6 * cpu / total, "wall_us_per_step": 1e6 * wall / total, "steps_per_s": total / wall,
            "n": total, "settings": _settings(f"{wfs} workflows of {steps} sequential @DBOS.step calls, called directly")}


def sleepers(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    """RSS per waiting workflow (half durable sleep, half recv), started in waves as the actorflow side's
    peer-N measurement is: total delta / N and the slope from the first wave to the last; then the
    lateness of a crowd of sleepers."""
    from benchmarks.scenarios._common import park_in_waves, percentile

    n, wave, m = p["dbos_n"], p["peer_wave"], p["dbos_late_n"]
    _launch(workdir)
    try:
        three_step(-1)
        loop = asyncio.new_event_loop()

        async def start_waiters(k: int) -> None:
            await asyncio.gather(
                *(DBOS.start_workflow_async(sleeper, 3600.0) for _ in range(k // 2)),
                *(DBOS.start_workflow_async(waiter, "never") for _ in range(k - k // 2)),
            )

        parked = park_in_waves(lambda k: loop.run_until_complete(start_waiters(k)), n, wave,
                               lambda: time.sleep(p["settle_s"]))
        per_s = n / parked["start_s"]

        due = time.time() + m / per_s * 1.5 + p["margin_s"]

        async def crowd() -> list[float]:
            hs = await asyncio.gather(*(DBOS.start_workflow_async(timed_sleeper, due) for _ in range(m)))
            return await asyncio.gather(*(h.get_result() for h in hs))

        woke = loop.run_until_complete(crowd())
        late = sorted(max(0.0, w - due) * 1000 for w in woke)
        early = sum(1 for w in woke if w < due - 0.001)
    finally:
        _shutdown()
    return {
        "rss_per_run_bytes": parked["rss"],
        "marginal_rss_per_run_bytes": parked["slope"],
        "anon_per_run_bytes": parked["anon"],
        "runs_per_gib": (1 << 30) / max(1.0, parked["rss"]),
        "lateness_p50_ms": percentile(late, 50),
        "lateness_p99_ms": percentile(late, 99),
        "lateness_max_ms": late[-1] if late else None,
        "start_per_s": per_s,
        "n": n,
        "late_n": m,
        "woke_early": early,
        "settings": _settings(
            f"DBOS.start_workflow_async gathered, in waves of {wave} (half sleep_async(3600), half recv_async); "
            f"every waiting workflow stays in memory (no passivation)"
        ),
    }


def _recovery_child(workdir: str, n: int) -> None:
    """Killed by the parent: starts n workflows that block in their second step, reports readiness."""
    _launch(workdir)

    async def start_all() -> None:
        for i in range(n):
            with SetWorkflowID(f"rec-{i}"):
                await DBOS.start_workflow_async(recoverable, i)

    async def until_ready() -> None:
        await start_all()
        while _s1_done < n:
            await asyncio.sleep(0.01)
        # ready once every step-1 output is in the database (as the actorflow side waits for its journal)
        pending = [f"rec-{i}" for i in range(n)]
        while pending:
            steps = await asyncio.gather(*(DBOS.list_workflow_steps_async(w, load_output=False) for w in pending))
            pending = [w for w, st in zip(pending, steps) if not any("_rec_s1" in s["function_name"] for s in st)]
            if pending:
                await asyncio.sleep(0.01)
        print("READY", flush=True)
        await asyncio.sleep(3600)  # keeps this loop (and any workflow on it) running until SIGKILL

    asyncio.run(until_ready())


def recovery(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from benchmarks.scenarios._common import wait_ready

    n = p["dbos_n"]
    child = subprocess.Popen(
        [sys.executable, "-c", f"from benchmarks.peers import dbos_peer as d; d._recovery_child({workdir!r}, {n})"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        line = wait_ready(child, 600)
        if line.strip() != "READY":
            raise RuntimeError(f"DBOS recovery child did not get ready: {line!r}")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    _BLOCK.set()
    t0 = time.perf_counter()
    _launch(workdir)  # DBOS re-enqueues this executor's PENDING workflows on launch
    t_open = time.perf_counter() - t0
    try:
        t_resumed = None
        deadline = time.time() + 600
        while time.time() < deadline:
            if _s2_done >= n:
                t_resumed = time.perf_counter() - t0
                break
            time.sleep(0.002)
        for i in range(n):
            h = DBOS.retrieve_workflow(f"rec-{i}")
            assert h.get_result() == i + 2
        t_all = time.perf_counter() - t0
        rerun_s1 = _s1_done
    finally:
        _shutdown()
    return {"open_s": t_open, "resumed_s": t_resumed, "all_done_s": t_all, "recovered_per_s": n / t_all,
            "n": n, "s1_rerun_after_crash": rerun_s1,
            "settings": _settings("SetWorkflowID + start_workflow_async; DBOS.launch() re-enqueues PENDING workflows")}



# --- the `tasks` scenario: DBOS queues ---------------------------------------------------------------


@DBOS.workflow()
def inc_task(x: int) -> int:
    """The queued task: a workflow whose output (x + 1) DBOS records in its SQLite system database."""
    return x + 1


def _count_succeeded(db: sqlite3.Connection, queue: str) -> int:
    row = db.execute("SELECT COUNT(*) FROM workflow_status WHERE queue_name = ? AND status = 'SUCCESS'",
                     (queue,)).fetchone()
    return int(row[0])


def tasks(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    """N workflows enqueued on a DBOS queue from one thread, then from several, each time until all N
    are SUCCESS in the database (read with a separate read-only SQLite connection: committed rows only)."""
    from benchmarks.scenarios._common import produce
    from benchmarks.scenarios.tasks import produce_async

    n, poll = p["n"], p["dbos_polling_interval_s"]
    out: dict[str, Any] = {"n": n}
    _launch(workdir)
    try:
        queue = DBOS.register_queue("af_bench_tasks", polling_interval_sec=poll)
        if queue.enqueue(inc_task, -1).get_result() != 0:
            raise RuntimeError("DBOS warm-up returned a wrong result")
        db = sqlite3.connect(f"file:{os.path.join(workdir, 'dbos.sqlite')}?mode=ro", uri=True)
        for prefix, producers in (("", 1), ("threads_", p["producers"]), ("async_", p["producers"])):
            base = _count_succeeded(db, queue.name)
            t0 = time.perf_counter()
            if prefix == "async_":
                handles, t_enq = produce_async(lambda i: queue.enqueue_async(inc_task, i), n, producers)
            else:
                handles, t_enq = produce(lambda i: queue.enqueue(inc_task, i), n, producers)
            deadline = time.monotonic() + p.get("timeout", 600)
            while (done := _count_succeeded(db, queue.name) - base) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"DBOS: {done} of {n} done after the timeout")
                time.sleep(0.002)
            t_all = time.perf_counter() - t0
            if prefix == "async_":  # WorkflowHandleAsync: read back through a sync handle, as the others
                handles = [DBOS.retrieve_workflow(h.get_workflow_id()) for h in handles]
            if [h.get_result() for h in handles] != [i + 1 for i in range(n)]:
                raise RuntimeError("DBOS returned wrong results")
            out[f"{prefix}enqueue_per_s"], out[f"{prefix}e2e_per_s"] = n / t_enq, n / t_all
        db.close()
    finally:
        _shutdown()
    out["settings"] = _settings(
        f"queue.enqueue(workflow, x) x N from one thread, then from {p['producers']} (one durable insert each; "
        f"no batch enqueue), then await queue.enqueue_async(workflow, x) from {p['producers']} coroutines; then poll the system database until N more are SUCCESS",
        guarantee="at-least-once (a queued workflow interrupted by a crash is recovered and runs again; "
                  "its recorded output is final)",
        queue=f"DBOS.register_queue: no concurrency limit, polling_interval_sec={poll} (default 1.0)",
    )
    return out


if __name__ == "__main__":
    import tempfile

    print(json.dumps(check(tempfile.mkdtemp(prefix="dbos-check-"))))
