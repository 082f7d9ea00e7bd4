"""Journal throughput: acknowledged durable events/s through LmdbJournal beside raw LMDB, same run, same disk.

    python -m benchmarks.journal [--quick] [--dir DIR] [--repeat N] [--only NAME,...]

Every commit is fsync'd (LMDB sync=True), in a temp directory on the real disk (default: the system
temp dir; pass --dir to choose; tmpfs is refused). The measurements run in interleaved repetitions
(rep 1 of each, then rep 2 of each, ...) so a change in machine load hits all of them alike. Prints
one JSON line per measurement (median, min, max over the repetitions), then a summary line: per
writer model, its median, its ratio to raw_100_per_commit (the target: >= 0.5), to the like-for-like
raw baseline, and to the exact-shape ceiling, plus the min-max of those ratios taken per repetition.

Raw LMDB baselines (pre-encoded records, the journal's key layout, no journal code):
- raw_commit_per_event:       one write txn + fsync per event (the floor without group commit)
- raw_100_per_commit:         100 events of ONE run per txn + fsync (sequential keys: each commit
                              dirties ~3 B-tree pages) - the ratio target is measured against this
- raw_100_per_commit_64_runs: 100 events per txn spread round-robin over 64 runs, as the 64 writers'
                              are (each commit dirties ~one leaf page per run): the like-for-like baseline
- raw_64_per_commit_64_runs:  64 events per txn, one per run: exactly what 64 writers that each keep
                              one event outstanding can hand a commit at most - the ceiling for the
                              64-writer models below, whatever the journal does
- raw_at_pipelined_epc_64_runs: run right after journal_64_actors_pipelined in each repetition, with
                              as many events per txn as that measurement's commits carried (events /
                              commits, measured), over 64 runs: the raw baseline in the journal's own shape
Other ceilings:
- thread_handoff_64:          64 Python threads passing a baton round a ring of locks: the CPython
                              ceiling for anything that wakes one blocked thread per event

Journal writer models (one-append batches, each writer on its own run):
- journal_1_writer:           one thread looping journal.commit(batch)
- journal_64_threads:         64 OS threads, each looping journal.commit(batch) (blocking callers: the
                              leader/follower path)
- journal_64_asyncio:         64 asyncio tasks on one event loop, each looping
                              `await asyncio.wrap_future(journal.submit(batch))` (the engine's async API)
- journal_64_actors:          64 actor-style writers, each keeping one append outstanding: the next
                              batch is built and submitted from the previous one's done callback (how
                              the engine's run hosts chain commits through submit() + add_done_callback).
                              Capped by its shape: a commit gets at most 64 events, and raw LMDB in
                              exactly that shape (raw_64_per_commit_64_runs) is ~0.3-0.4 of raw_100.
- journal_64_actors_pipelined: the same writers keeping --depth (default 8) appends outstanding each, as
                              a run host does with several commits in flight; order per writer holds

Every journal measurement checks afterwards that each run holds exactly the acknowledged events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import lmdb

import actorflow  # noqa: F401  (before storage: storage imports actorflow.errors)
from storage import Codec, Event, LmdbJournal

EVENT_DATA = {"order": "o-123", "amount": 42.5, "items": [1, 2, 3]}


def fs_type(path: str) -> str:
    """The file system type of the mount holding `path` (fsync numbers mean little on tmpfs)."""
    path = os.path.realpath(path)
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def _record(codec: Codec, seq: int) -> bytes:
    return codec.encode(("step", "charge", seq, time.time(), EVENT_DATA))


def raw_lmdb(base: str, n_events: int, per_commit: int, n_runs: int = 1) -> float:
    """Events/s writing pre-encoded records straight into LMDB, one fsync'd txn per `per_commit` events,
    round-robin over `n_runs` runs with the journal's key layout (run_id NUL seq)."""
    codec = Codec()
    rec = _record(codec, 0)
    path = tempfile.mkdtemp(dir=base)
    env = lmdb.open(path, map_size=256 << 20, max_dbs=4, sync=True, metasync=True)
    db = env.open_db(b"events")
    prefixes = [f"raw-run-{i}".encode() + b"\x00" for i in range(n_runs)]
    seqs = [0] * n_runs
    try:
        t0 = time.perf_counter()
        done = 0
        while done < n_events:
            with env.begin(write=True) as txn:
                for _ in range(per_commit):
                    r = done % n_runs
                    txn.put(prefixes[r] + seqs[r].to_bytes(8, "big"), rec, db=db)
                    seqs[r] += 1
                    done += 1
        return done / (time.perf_counter() - t0)
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)


def thread_handoff(n_threads: int, n_handoffs: int) -> float:
    """Handoffs/s of a baton passed round a ring of `n_threads` threads blocked on locks."""
    locks = [threading.Lock() for _ in range(n_threads)]
    for lk in locks:
        lk.acquire()
    rounds = n_handoffs // n_threads

    def member(i: int) -> None:
        me, nxt = locks[i], locks[(i + 1) % n_threads]
        for _ in range(rounds):
            me.acquire()
            nxt.release()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    locks[0].release()
    for t in threads:
        t.join()
    return rounds * n_threads / (time.perf_counter() - t0)


def _check(j: LmdbJournal, n_writers: int, events_per_writer: int) -> None:
    for i in range(n_writers):  # everything acknowledged is there, nothing more
        assert j.last_seq(f"run-{i}") == events_per_writer - 1


def journal_threads(base: str, n_threads: int, events_per_thread: int) -> float:
    """Events/s acknowledged by LmdbJournal with `n_threads` threads each committing one append at a time."""
    path = tempfile.mkdtemp(dir=base)
    j = LmdbJournal(path, sync=True)
    start = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        run_id = f"run-{i}"
        try:
            start.wait()
            for seq in range(events_per_thread):
                b = j.batch()
                b.append(run_id, Event(seq, "step", "charge", EVENT_DATA, time.time(), seq))
                j.commit(b)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    try:
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        _check(j, n_threads, events_per_thread)
        return n_threads * events_per_thread / elapsed
    finally:
        j.close()
        shutil.rmtree(path, ignore_errors=True)


def journal_asyncio(base: str, n_tasks: int, events_per_task: int) -> float:
    """Events/s with `n_tasks` asyncio tasks on one loop, each awaiting submit() of one append at a time."""
    path = tempfile.mkdtemp(dir=base)
    j = LmdbJournal(path, sync=True)

    async def writer(i: int) -> None:
        run_id = f"run-{i}"
        wrap = asyncio.wrap_future
        for seq in range(events_per_task):
            b = j.batch()
            b.append(run_id, Event(seq, "step", "charge", EVENT_DATA, time.time(), seq))
            await wrap(j.submit(b))

    async def all_writers() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in range(n_tasks)))
        return time.perf_counter() - t0

    try:
        elapsed = asyncio.run(all_writers())
        _check(j, n_tasks, events_per_task)
        return n_tasks * events_per_task / elapsed
    finally:
        j.close()
        shutil.rmtree(path, ignore_errors=True)


def journal_actors(
    base: str, n_actors: int, events_per_actor: int, depth: int = 1, stats: dict[str, float] | None = None
) -> float:
    """Events/s with `n_actors` writers that each keep `depth` appends outstanding, submitting the next
    from the done callback of an earlier one (no thread of their own: they run where the callback runs).
    `stats` gets the events per commit the journal reached (events / fsync'd transactions)."""
    path = tempfile.mkdtemp(dir=base)
    j = LmdbJournal(path, sync=True)
    commits0 = j.commits
    finished = threading.Event()
    remaining = [n_actors]
    errors: list[BaseException] = []
    count_lock = threading.Lock()

    def actor(i: int) -> Callable[[Any], None]:
        run_id = f"run-{i}"
        sent = acked = 0
        # done callbacks of one writer may run on different threads; reentrant, because a future
        # that is done before add_done_callback (its commit won the race) calls back at once, inside submit()
        lock = threading.RLock()

        def submit() -> None:
            nonlocal sent
            b = j.batch()
            b.append(run_id, Event(sent, "step", "charge", EVENT_DATA, time.time(), sent))
            sent += 1
            j.submit(b).add_done_callback(step)

        def step(fut: Any) -> None:
            nonlocal acked
            with lock:
                if fut is None:
                    for _ in range(min(depth, events_per_actor)):
                        submit()
                    return
                exc = fut.exception()
                if exc is not None:
                    errors.append(exc)
                    finished.set()
                    return
                acked += 1
                if sent < events_per_actor:
                    submit()
                elif acked == events_per_actor:
                    with count_lock:
                        remaining[0] -= 1
                        if not remaining[0]:
                            finished.set()

        return step

    actors = [actor(i) for i in range(n_actors)]
    try:
        t0 = time.perf_counter()
        for a in actors:
            a(None)
        finished.wait()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        _check(j, n_actors, events_per_actor)
        if stats is not None:
            stats["events_per_commit"] = n_actors * events_per_actor / max(1, j.commits - commits0)
        return n_actors * events_per_actor / elapsed
    finally:
        j.close()
        shutil.rmtree(path, ignore_errors=True)


def _line(name: str, runs: list[float], **params: Any) -> dict[str, Any]:
    return {
        "bench": name,
        **params,
        "events_per_s": {
            "median": round(statistics.median(runs)),
            "min": round(min(runs)),
            "max": round(max(runs)),
        },
        "runs": [round(r) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.journal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer events and 3 repetitions (~30 s)")
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: system temp dir)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions per measurement (default 5, quick 3)")
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--depth", type=int, default=8, help="appends each pipelined actor writer keeps outstanding")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated measurements besides the raw baselines (e.g. journal_64_actors,thread_handoff_64)",
    )
    args = ap.parse_args(argv)

    repeat = args.repeat or (3 if args.quick else 5)
    scale = 1 if args.quick else 3
    w = args.writers
    n_many = (20000 * scale) // w  # events per writer in the many-writer measurements
    base = tempfile.mkdtemp(prefix="actorflow-bench-", dir=args.dir)
    fstype = fs_type(base)
    if fstype in ("tmpfs", "ramfs"):
        shutil.rmtree(base, ignore_errors=True)
        print(f"{base} is on {fstype}: fsync would not be real; pass --dir on a disk", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "bench": "setup",
                "dir": base,
                "fs": fstype,
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "lmdb": ".".join(map(str, lmdb.version())),
                "py_lmdb": lmdb.__version__,
                "repeat": repeat,
                "events_per_measurement": {"raw": 20000 * scale, "journal_1_writer": 1000 * scale, "many_writers": n_many * w},
                "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            }
        ),
        flush=True,
    )
    raw100, spread, shape = "raw_100_per_commit", f"raw_100_per_commit_{w}_runs", f"raw_{w}_per_commit_{w}_runs"
    piped, raw_piped = f"journal_{w}_actors_pipelined", f"raw_at_pipelined_epc_{w}_runs"
    piped_stats: dict[str, float] = {}
    epc_runs: list[float] = []
    # name -> (always run, params, fn)
    plan: dict[str, tuple[bool, dict[str, Any], Callable[[], float]]] = {
        "raw_commit_per_event": (True, {"events_per_commit": 1}, lambda: raw_lmdb(base, 1000 * scale, 1)),
        raw100: (True, {"events_per_commit": 100, "n_runs": 1}, lambda: raw_lmdb(base, 20000 * scale, 100)),
        spread: (True, {"events_per_commit": 100, "n_runs": w}, lambda: raw_lmdb(base, 20000 * scale, 100, w)),
        shape: (True, {"events_per_commit": w, "n_runs": w}, lambda: raw_lmdb(base, n_many * w, w, w)),
        f"thread_handoff_{w}": (
            False,
            {"threads": w, "unit": "handoffs/s in events_per_s"},
            lambda: thread_handoff(w, 20000 * scale),
        ),
        "journal_1_writer": (
            False,
            {"writers": 1, "model": "1 thread looping journal.commit(one-append batch)"},
            lambda: journal_threads(base, 1, 1000 * scale),
        ),
        f"journal_{w}_threads": (
            False,
            {"writers": w, "model": f"{w} OS threads, each looping journal.commit(one-append batch)"},
            lambda: journal_threads(base, w, n_many),
        ),
        f"journal_{w}_asyncio": (
            False,
            {
                "writers": w,
                "model": f"{w} asyncio tasks on one loop, each looping "
                "await asyncio.wrap_future(journal.submit(one-append batch))",
            },
            lambda: journal_asyncio(base, w, n_many),
        ),
        f"journal_{w}_actors": (
            False,
            {
                "writers": w,
                "model": f"{w} actor-style writers, each resubmitting one append from its previous commit's done callback",
            },
            lambda: journal_actors(base, w, n_many),
        ),
        f"journal_{w}_actors_pipelined": (
            False,
            {
                "writers": w,
                "depth": args.depth,
                "model": f"{w} actor-style writers, each keeping {args.depth} appends outstanding (pipelined, as "
                "a run host is with several commits in flight)",
            },
            lambda: journal_actors(base, w, n_many, depth=args.depth, stats=piped_stats),
        ),
        # right after the pipelined writers, in the same repetition: raw LMDB with as many events per
        # fsync'd txn as those writers' commits carried, over as many runs (like for like)
        f"raw_at_pipelined_epc_{w}_runs": (
            False,
            {"events_per_commit": "the pipelined writers' measured events per commit", "n_runs": w},
            lambda: raw_lmdb(base, n_many * w, max(1, round(piped_stats["events_per_commit"])), w),
        ),
    }
    wanted = set(args.only.split(",")) if args.only else None
    if wanted is not None and piped in wanted:
        wanted.add(raw_piped)
    names = [n for n, (always, _, _) in plan.items() if always or wanted is None or n in wanted]
    runs: dict[str, list[float]] = {n: [] for n in names}
    try:
        for _ in range(repeat):
            for n in names:
                runs[n].append(plan[n][2]())
                if n == piped:
                    epc_runs.append(piped_stats["events_per_commit"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines = {n: _line(n, runs[n], **plan[n][1]) for n in names}
    if epc_runs:
        lines[piped]["events_per_commit"] = [round(x, 1) for x in epc_runs]
        lines[raw_piped]["events_per_commit"] = [max(1, round(x)) for x in epc_runs]
    for n in names:
        print(json.dumps(lines[n]), flush=True)

    med = {n: statistics.median(runs[n]) for n in names}
    summary: dict[str, Any] = {"bench": "summary", "target_ratio_vs_raw_100_per_commit": 0.5}
    if "journal_1_writer" in runs:
        summary["journal_1_writer_vs_raw_commit_per_event"] = round(med["journal_1_writer"] / med["raw_commit_per_event"], 3)
    for n in names:
        if not n.startswith(f"journal_{w}_"):
            continue
        entry: dict[str, Any] = {"model": plan[n][1]["model"], "events_per_s_median": round(med[n])}
        refs = [("raw_100_per_commit", raw100), ("like_for_like_raw_100_over_64_runs", spread),
                ("exact_shape_ceiling", shape)]
        if n == piped and raw_piped in runs:
            refs.append(("raw_at_its_events_per_commit", raw_piped))
        for label, ref in refs:
            per_rep = [x / r for x, r in zip(runs[n], runs[ref])]
            entry[f"ratio_vs_{label}"] = round(med[n] / med[ref], 3)
            entry[f"ratio_vs_{label}_per_rep_min_max"] = [round(min(per_rep), 3), round(max(per_rep), 3)]
        if n.endswith("_threads") and f"thread_handoff_{w}" in med:
            entry["ratio_vs_thread_handoff"] = round(med[n] / med[f"thread_handoff_{w}"], 3)
        entry["meets_target"] = entry["ratio_vs_raw_100_per_commit"] >= 0.5
        summary[n] = entry
    summary["exact_shape_ceiling_vs_raw_100_per_commit"] = round(med[shape] / med[raw100], 3)
    summary["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
