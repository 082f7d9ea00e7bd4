"""tasks: 10,000 durable background tasks enqueued and executed, against task queues on this machine.

Same shape on every side: a warm consumer/worker is up; one producer thread enqueues N tasks one by
one (each enqueue durable when it returns), then waits until all N have completed durably; then the
same with 16 producer threads sharing the N (a service's request handlers enqueueing at once); then
with 16 asyncio coroutines sharing the N in one event loop (an async service), on the sides that have
an async enqueue (actorflow `aenqueue`, DBOS `enqueue_async`; huey and Dramatiq have none: reported
as such, not compared); the task
body returns x + 1 and each result is checked afterwards. Figures: enqueue rate (N / time of the
enqueue loop) and end-to-end completions/s (N / time from the first enqueue to the last durable
completion).

- actorflow: `engine.enqueue("inc", {"x": i})` (one fsync'd group commit per call, the execution
  runs as soon as it is journaled), then `engine.result(id)` for each (returns once the execution's
  completion is committed). Also `enqueue_many` (one commit for the batch), which none of the peers
  has: no ratio there. Async: `await engine.aenqueue(...)` from 16 coroutines (the aenqueues of one
  loop iteration share one commit), then `engine.result(id)` for each.
- CPU µs per task (process CPU time, all threads, over the end-to-end window, divided by N) is
  listed beside actorflow's figures (`<mode>_cpu_us`): on a shared machine it moves less than rates.
- DBOS queues on SQLite (WAL, synchronous=FULL), huey's `SqliteHuey(fsync=True)` (WAL) with a
  `huey_consumer` of worker threads, Dramatiq with a `dramatiq` worker on a `redis-server` the
  peer starts with `appendonly yes`, `appendfsync always`: see benchmarks/peers/.

Delivery guarantees differ and are printed beside the figures: actorflow, DBOS and Dramatiq are
at-least-once (a task killed mid-run runs again); huey is at-most-once (it deletes a task before
running it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .._harness import Metric, Scenario, Settings, register
from ._common import af_settings, cpu_times, engine_dir, produce


def params(s: Settings) -> dict[str, Any]:
    n = 40 if s.tiny else 2000 if s.quick else 10_000
    return {
        "n": n,
        "producers": 16,
        "huey_workers": 4,
        "huey_delay": 0.01,
        "huey_max_delay": 0.1,
        "dramatiq_processes": 2,
        "dramatiq_threads": 8,
        "dbos_polling_interval_s": 0.1,
    }


def _inc(ctx: Any, input: dict[str, Any]) -> int:
    return int(input["x"]) + 1


def _measure(engine: Any, n: int, mode: str, producers: int) -> tuple[float, float]:
    """(enqueue seconds, end-to-end seconds) for N executions of "inc" on an open engine."""
    t0 = time.perf_counter()
    if mode == "enqueue_many":
        ids = engine.enqueue_many("inc", [{"x": i} for i in range(n)])
        t_enq = time.perf_counter() - t0
    elif mode == "async":
        ids, t_enq = produce_async(lambda i: engine.aenqueue("inc", {"x": i}), n, producers)
    else:
        ids, t_enq = produce(lambda i: engine.enqueue("inc", {"x": i}), n, producers)
    results = [engine.result(eid, 600) for eid in ids]  # each returns once its completion is committed
    t_all = time.perf_counter() - t0
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("actorflow returned wrong task results")
    return t_enq, t_all


def produce_async(send: Any, n: int, producers: int) -> tuple[list[Any], float]:
    """`await send(i)` for i in range(n) from `producers` coroutines of one event loop (coroutine k
    sends k, k+P, ...); returns (what each call returned, by i; seconds). The async twin of produce()."""
    out: list[Any] = [None] * n

    async def one(k: int) -> None:
        for i in range(k, n, producers):
            out[i] = await send(i)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(producers)))
        return time.perf_counter() - t0

    return out, asyncio.run(main())


MODES = {"enqueue": 1, "threads": 0, "async": 0, "enqueue_many": 1}  # 0: p["producers"] threads/coroutines


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    from actorflow import Engine

    n = p["n"]
    out: dict[str, Any] = {"n": n}
    for mode, producers in MODES.items():
        engine = Engine(engine_dir(workdir, mode))
        engine.task(name="inc")(_inc)
        with engine:
            assert engine.result(engine.enqueue("inc", {"x": -1}), 60) == 0  # warm-up: actors, pool, journal
            c0 = sum(cpu_times())
            enq_s, all_s = _measure(engine, n, mode, producers or p["producers"])
            out[f"{mode}_cpu_us"] = 1e6 * (sum(cpu_times()) - c0) / n
            if mode == "enqueue":
                out["settings"] = af_settings(
                    engine, f"engine.enqueue(name, {{'x': i}}) x N from one thread, then from {p['producers']}; "
                            f"then await engine.aenqueue(...) from {p['producers']} coroutines of one loop; "
                            "then engine.result(id) for each; enqueue_many: one commit for all N",
                    guarantee="at-least-once (a handler killed mid-run runs again; a journaled result never does)",
                    workers=f"embedded engine: {engine.shards} run hosts, {engine.step_threads} step threads",
                )
        out[f"{mode}_per_s"] = n / enq_s
        out[f"{mode}_e2e_per_s"] = n / all_s
    return out


_PEERS = ("dbos", "huey", "dramatiq")

register(
    Scenario(
        name="tasks",
        title="10,000 durable tasks enqueued one by one and executed (x + 1), until all completed durably",
        order=35,
        timeout=1800.0,  # DBOS's side enqueues 10,000 twice at ~50-70/s on a loaded machine
        params=params,
        actorflow="benchmarks.scenarios.tasks:actorflow",
        peers={peer: f"benchmarks.peers.{peer}_peer:tasks" for peer in _PEERS},
        metrics=[
            Metric("enqueue_e2e_per_s", "end to end tasks/s: enqueue N one by one from 1 thread, until all N "
                   "completed durably", "tasks/s", "higher", "e2e_per_s", chart=True),
            Metric("enqueue_per_s", "enqueue rate, 1 producer thread, one durable enqueue per call", "tasks/s",
                   "higher", "enqueue_per_s"),
            Metric("threads_e2e_per_s", "end to end tasks/s: 16 producer threads enqueue N, until all N completed "
                   "durably", "tasks/s", "higher", "threads_e2e_per_s", chart=True),
            Metric("threads_per_s", "enqueue rate, 16 producer threads", "tasks/s", "higher",
                   "threads_enqueue_per_s"),
            Metric("async_e2e_per_s", "end to end tasks/s: 16 asyncio coroutines enqueue N (async enqueue), "
                   "until all N completed durably", "tasks/s", "higher", "async_e2e_per_s", chart=True,
                   no_peer="no async enqueue"),
            Metric("async_per_s", "enqueue rate, 16 coroutines, async enqueue", "tasks/s", "higher",
                   "async_enqueue_per_s", no_peer="no async enqueue"),
            Metric("enqueue_many_e2e_per_s", "end to end tasks/s with enqueue_many (one commit for N)", "tasks/s",
                   "higher", no_peer="no batch enqueue"),
            Metric("enqueue_many_per_s", "enqueue_many rate (one commit for N)", "tasks/s", "higher",
                   no_peer="no batch enqueue"),
        ],
        notes="Guarantees: actorflow, DBOS, Dramatiq at-least-once; huey at-most-once (deletes a task before "
              "running it). Each side's durability and worker settings are read back and listed with its figures.",
    )
)
