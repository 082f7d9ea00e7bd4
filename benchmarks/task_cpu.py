"""Where a durable task's CPU goes: the tasks scenario's shape, CPU split by thread.

    python -m benchmarks.task_cpu [--mode threads|async|one|many] [--n 5000] [--dir DIR]

Enqueues N tasks (`x + 1`) the way the `tasks` scenario does (16 producer threads, 16 coroutines,
one thread, or one `enqueue_many`), waits for every result, and prints one JSON line: tasks/s, CPU µs
per task of the whole process, and per thread group (on-CPU time from /proc/self/task/*/schedstat over
the measured window; producer threads measure themselves, user and system apart, with their context
switches),
journal commits per task and the tasks per commit round that carried creates. A sampling profiler
on this machine mostly sees threads waiting for the GIL or for an fsync: per-thread CPU time says
which part of the engine pays for a task.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import tempfile
import threading
import time
from typing import Any

from .scenarios.tasks import produce_async

PRODUCERS = 16


def _by_thread() -> collections.Counter[str]:
    """CPU seconds so far per thread group (thread names without their trailing numbers), from each
    thread's schedstat (ns; /proc's stat counts whole clock ticks, too coarse for 30 step threads)."""
    out: collections.Counter[str] = collections.Counter()
    for th in threading.enumerate():
        try:
            with open(f"/proc/self/task/{th.native_id}/schedstat") as f:
                on_cpu_ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[re.sub(r"[-_]?\d+$", "", th.name)] += on_cpu_ns / 1e9
    return out


def _inc(ctx: Any, input: dict[str, Any]) -> int:
    return int(input["x"]) + 1


def measure(mode: str, n: int, workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    engine = Engine(os.path.join(workdir, "af"))
    engine.task(name="inc")(_inc)
    producer: list[tuple[float, float, int]] = []  # (user, system, context switches) per producer thread
    rounds: collections.Counter[str] = collections.Counter()
    with engine:
        assert engine.result(engine.enqueue("inc", {"x": -1}), 60) == 0
        journal = engine._runtime().journal
        write = journal._write  # type: ignore[attr-defined]

        def counted(batches: list[Any], precise: bool) -> Any:
            creates = sum(b.creates for b in batches)
            rounds["with_creates" if creates else "without_creates"] += 1
            rounds["creates"] += creates
            return write(batches, precise)

        journal._write = counted  # type: ignore[attr-defined]
        ids: list[Any] = [None] * n
        before, commits0 = _by_thread(), journal.commits  # type: ignore[attr-defined]
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if mode == "threads":
            def work(k: int) -> None:
                r0 = resource.getrusage(resource.RUSAGE_THREAD)
                for i in range(k, n, PRODUCERS):
                    ids[i] = engine.enqueue("inc", {"x": i})
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                producer.append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
                                 r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw))

            threads = [threading.Thread(target=work, args=(k,), name=f"producer-{k}") for k in range(PRODUCERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif mode == "async":
            ids, _ = produce_async(lambda i: engine.aenqueue("inc", {"x": i}), n, PRODUCERS)
        elif mode == "one":
            for i in range(n):
                ids[i] = engine.enqueue("inc", {"x": i})
        else:
            ids = engine.enqueue_many("inc", [{"x": i} for i in range(n)])
        t_enq = time.perf_counter() - t0
        results = [engine.result(eid, 600) for eid in ids]
        t_all = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        after, commits1 = _by_thread(), journal.commits  # type: ignore[attr-defined]
        journal._write = write  # type: ignore[attr-defined]
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("wrong task results")
    per_thread = {k: after[k] - before.get(k, 0.0) for k in after}
    per_thread["main (enqueue_many/loop, then results)"] = per_thread.pop("MainThread", 0.0)
    if producer:
        per_thread["producer threads: user"] = sum(p[0] for p in producer)
        per_thread["producer threads: system"] = sum(p[1] for p in producer)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    us = {k: round(1e6 * v / n, 1) for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v > 0}
    us["other (threads that ended, e.g. step threads)"] = round(1e6 * cpu / n - sum(us.values()), 1)
    return {
        "mode": mode, "n": n, "enqueue_per_s": round(n / t_enq), "e2e_per_s": round(n / t_all),
        "cpu_us_per_task": round(1e6 * cpu / n, 1), "cpu_us_per_task_by_thread": us,
        "commits_per_task": round((commits1 - commits0) / n, 4),
        "creates_per_round_with_creates": round(rounds["creates"] / max(1, rounds["with_creates"]), 1),
        "rounds_without_creates": rounds["without_creates"],
        "producer_context_switches_per_task": round(sum(p[2] for p in producer) / n, 1) if producer else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.task_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("threads", "async", "one", "many"), default="threads")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dir", default=None, help="parent of the data dir (default: system temp dir)")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="actorflow-task-cpu-", dir=args.dir)
    try:
        print(json.dumps(measure(args.mode, args.n, workdir)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
