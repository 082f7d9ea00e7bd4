"""huey (SqliteHuey) version of the `tasks` scenario: a producer enqueues N tasks, a real huey consumer
(`huey_consumer`, a process of its own with worker threads, as huey users run it) executes them.

Durability: `SqliteHuey(fsync=True)` in WAL mode, i.e. `PRAGMA synchronous=FULL` on every connection
huey opens (producer and consumer), read back before measuring. A task counts once its result is in
huey's result store (a committed, fsync'd row). huey's delivery guarantee is AT-MOST-ONCE: the
consumer deletes a task from the queue table before it runs it, so a crash mid-task loses the task.

The huey instance is configured from the environment (`AF_BENCH_HUEY_DB`) because the consumer
process imports it by name: `benchmarks.peers.huey_peer.huey`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from huey import SqliteHuey

from benchmarks.scenarios._common import die_with_parent

DB_ENV = "AF_BENCH_HUEY_DB"
QUEUE = "af-bench"

# without the variable (the producer imports this module before it picks the file) no table is created
huey = SqliteHuey(QUEUE, filename=os.environ.get(DB_ENV, ""), fsync=True, journal_mode="wal",
                  create_tables=DB_ENV in os.environ)


@huey.task()
def inc(x: int) -> int:
    return x + 1


def _pragmas() -> dict[str, Any]:
    """The journal mode and synchronous level of the connection huey's storage uses in this process."""
    conn = huey.storage.conn
    return {
        "journal_mode": conn.execute("pragma journal_mode").fetchone()[0],
        "synchronous": conn.execute("pragma synchronous").fetchone()[0],  # 2 = FULL
    }


def _start_consumer(workers: int, delay: float, max_delay: float, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.peers.huey_peer.huey",
           "--workers", str(workers), "--worker-type", "thread", "--delay", str(delay),
           "--max-delay", str(max_delay), "--no-periodic", "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the consumer's PID (huey stops its workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_results(count: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while huey.result_count() < count:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"huey consumer exited {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"huey: {huey.result_count()} of {count} results after {timeout}s")
        time.sleep(0.002)


def tasks(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from benchmarks.scenarios._common import produce

    n, workers = p["n"], p["huey_workers"]
    delay, max_delay = p["huey_delay"], p["huey_max_delay"]
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, "huey.db")
    os.environ[DB_ENV] = db
    huey.storage.filename = db  # this module was imported before the variable was set
    huey.storage.close()
    huey.storage.initialize_schema()
    pragmas = _pragmas()
    if str(pragmas["journal_mode"]).lower() != "wal" or pragmas["synchronous"] != 2:
        raise RuntimeError(f"huey's SQLite is not WAL + synchronous=FULL: {pragmas}; the comparison would be unfair")
    out: dict[str, Any] = {"n": n}
    proc = _start_consumer(workers, delay, max_delay, dict(os.environ))
    try:
        warm = inc(-1)  # the consumer is up and polling before the clock starts
        _wait_results(1, proc, 60)
        assert warm.get() == 0
        for prefix, producers in (("", 1), ("threads_", p["producers"])):
            base = huey.result_count()
            t0 = time.perf_counter()
            results, t_enq = produce(inc, n, producers)
            _wait_results(base + n, proc, p.get("timeout", 600))
            t_all = time.perf_counter() - t0
            if [r.get(preserve=True) for r in results] != [i + 1 for i in range(n)]:
                raise RuntimeError("huey returned wrong results")
            out[f"{prefix}enqueue_per_s"], out[f"{prefix}e2e_per_s"] = n / t_enq, n / t_all
        consumer_pid = proc.pid
    finally:
        _stop(proc)
    out["settings"] = {
        "api": f"task(x) x N from one producer thread, then from {p['producers']} (huey serializes them on its "
               "connection lock; one committed INSERT each, no batch enqueue); then poll result_count() until "
               "N more results are stored",
        "guarantee": "at-most-once (the consumer deletes a task before running it)",
        "durability": f"SqliteHuey(fsync=True): journal_mode={pragmas['journal_mode']}, "
                      f"synchronous={pragmas['synchronous']} (2 = FULL), read back in the producer",
        "consumer": f"huey_consumer (pid {consumer_pid}), {workers} worker threads, poll delay {delay}s "
                    f"backing off to {max_delay}s (defaults 0.1 s / 10 s: lowered so polling does not dominate)",
    }
    return out
