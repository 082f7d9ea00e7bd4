"""Where a sequential durable workflow's wall time goes: fsync'd commits vs everything else, per segment.

    python -m benchmarks.timeline [--n 300] [--dir DIR]

Runs the seq3 workflow (`engine.run` in a loop, 3 sync steps) on a real LMDB journal with timestamps
taken at the boundaries of the engine's parts: journal writes (`LmdbJournal._write`, which ends in
the fsync'd LMDB commit), actor rounds (`ActorRuntime._round`: whichever thread runs the actors),
the Thespian delivery to the host actor (`HostActor.handle`), the host's commit step
(`RunHost.flush`) and the waking of the caller (`Notifier.finished`). Prints one JSON line: per
workflow the median total, the median time inside journal writes, the rest, and the median of every
segment between two consecutive marks (with the thread that ran it), plus the raw fsync'd LMDB
commit measured in the same run. The marks cost a few µs each; read the segments as proportions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

_MARKS: list[tuple[int, str, str]] = []
_now = time.perf_counter_ns


def _wrap(cls: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(cls, name)

    def marked(*args: Any, **kw: Any) -> Any:
        thread = threading.current_thread().name
        _MARKS.append((_now(), label + ">", thread))
        try:
            return fn(*args, **kw)
        finally:
            _MARKS.append((_now(), label + "<", thread))

    setattr(cls, name, marked)


def _role(thread: str) -> str:
    if thread.startswith("actorflow-step"):
        return "step worker"
    if thread == "actorflow-pump":
        return "pump thread"
    if thread == "MainThread":
        return "caller"
    return thread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="workflows measured (after 50 warm-up runs)")
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: system temp dir)")
    args = ap.parse_args(argv)

    import actorflow._host as host_mod
    import actorflow._runtime as runtime_mod
    import actorflow._thespian as thespian_mod
    import storage._lmdb as lmdb_mod
    from actorflow import Engine

    from .scenarios._common import raw_commit_floor, register_three_step

    _wrap(lmdb_mod.LmdbJournal, "_write", "write")
    _wrap(thespian_mod.ActorRuntime, "_round", "round")
    _wrap(thespian_mod.HostActor, "handle", "host")
    _wrap(host_mod.RunHost, "flush", "flush")
    _wrap(runtime_mod.Notifier, "finished", "finished")

    work = tempfile.mkdtemp(prefix="actorflow-timeline-", dir=args.dir)
    try:
        engine = Engine(os.path.join(work, "af"))
        wf = register_three_step(engine)
        runs: list[list[tuple[int, str, str]]] = []
        with engine:
            for i in range(50):
                engine.run(wf, i, timeout=60)
            for i in range(args.n):
                _MARKS.clear()
                _MARKS.append((_now(), "run>", "MainThread"))
                engine.run(wf, i, timeout=60)
                _MARKS.append((_now(), "run<", "MainThread"))
                runs.append(list(_MARKS))
        floor = raw_commit_floor(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    totals, writes = [], []
    segments: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for marks in runs:
        totals.append((marks[-1][0] - marks[0][0]) / 1000)
        inside, started = 0, 0
        for t, label, _ in marks:
            if label == "write>":
                started = t
            elif label == "write<":
                inside += t - started
        writes.append(inside / 1000)
        for (ta, la, _), (tb, lb, thread) in zip(marks, marks[1:]):
            segments[(la, lb, _role(thread))].append((tb - ta) / 1000)
    per_wf = {
        f"{a} -> {b} ({who})": {"per_wf": round(len(v) / len(runs), 2), "median_us": round(statistics.median(v), 1)}
        for (a, b, who), v in sorted(segments.items(), key=lambda kv: -sum(kv[1]))
    }
    print(
        json.dumps(
            {
                "bench": "seq3_timeline",
                "n": len(runs),
                "wf_per_s": round(1e6 / statistics.median(totals), 1),
                "median_us_per_wf": round(statistics.median(totals), 1),
                "median_us_in_journal_writes": round(statistics.median(writes), 1),
                "median_us_elsewhere": round(statistics.median([a - b for a, b in zip(totals, writes)]), 1),
                "raw_fsyncd_commit_wall_us": round(floor["wall_us"], 1),
                "segments": per_wf,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
