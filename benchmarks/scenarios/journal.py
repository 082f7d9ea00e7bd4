"""journal: acknowledged durable events/s through LmdbJournal beside raw LMDB.

Runs `benchmarks/journal.py` (another module; `python -m benchmarks.journal` runs it standalone)
once per repetition in a worker and reads its JSON lines, so that module can add or rename its
writer models freely: the headline rows are the raw baselines, one writer, and the best of its
many-writer models; every measurement it printed is kept in `actorflow_info`.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

from .._harness import Metric, Scenario, Settings, register


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"quick": True, "writers": 16, "only": "journal_1_writer,journal_16_actors,journal_16_actors_pipelined"}
    if s.quick:
        return {"quick": True, "writers": 64}
    return {"quick": False, "writers": 64}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    import actorflow  # noqa: F401  (storage alone hits an import cycle)
    from benchmarks import journal as j

    argv = ["--repeat", "1", "--dir", workdir, "--writers", str(p["writers"])] + (["--quick"] if p["quick"] else [])
    argv += ["--only", p.get("only") or f"journal_1_writer,journal_{p['writers']}_actors,journal_{p['writers']}_actors_pipelined"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = j.main(argv)
    if rc:
        raise RuntimeError(f"benchmarks.journal exited {rc}")
    rates: dict[str, float] = {}
    for raw in buf.getvalue().splitlines():
        line = json.loads(raw)
        eps = line.get("events_per_s")
        if isinstance(eps, dict) and eps.get("median") is not None:
            rates[line["bench"]] = eps["median"]
    w = p["writers"]
    one, piped = rates.get(f"journal_{w}_actors"), rates.get(f"journal_{w}_actors_pipelined")
    raw100 = rates.get("raw_100_per_commit")
    shape = rates.get(f"raw_{w}_per_commit_{w}_runs")
    raw_epc = rates.get(f"raw_at_pipelined_epc_{w}_runs")
    epc = next((line.get("events_per_commit") for line in map(json.loads, buf.getvalue().splitlines())
                if line.get("bench") == f"journal_{w}_actors_pipelined"), None)
    return {
        "n": w,
        "raw_commit_per_event": rates.get("raw_commit_per_event"),
        "raw_100_per_commit": raw100,
        "journal_1_writer": rates.get("journal_1_writer"),
        "journal_n_writers_one_each": one,
        "journal_n_writers_pipelined": piped,
        "ratio_one_each_vs_raw100": one / raw100 if one and raw100 else None,
        "ratio_pipelined_vs_raw100": piped / raw100 if piped and raw100 else None,
        "pipelined_events_per_commit": epc[0] if epc else None,
        "raw_at_pipelined_epc": raw_epc,
        "ratio_pipelined_vs_raw_at_epc": piped / raw_epc if piped and raw_epc else None,
        "ceiling_one_each_vs_raw100": shape / raw100 if shape and raw100 else None,
        "all_events_per_s": rates,
    }


register(
    Scenario(
        name="journal",
        title="journal group commit: durable events/s (LmdbJournal vs raw LMDB, fsync on)",
        order=5,
        params=params,
        actorflow="benchmarks.scenarios.journal:actorflow",
        metrics=[
            Metric("raw_commit_per_event", "raw LMDB, 1 event per fsync'd txn", "events/s"),
            Metric("raw_100_per_commit", "raw LMDB, 100 events per fsync'd txn", "events/s"),
            Metric("journal_1_writer", "LmdbJournal, 1 writer", "events/s"),
            Metric("journal_n_writers_one_each", "LmdbJournal, N actor writers, 1 append outstanding each",
                   "events/s"),
            Metric("journal_n_writers_pipelined", "LmdbJournal, N actor writers, 8 appends outstanding each",
                   "events/s", chart=True),
            Metric("ratio_one_each_vs_raw100", "N writers (1 outstanding) / raw 100-per-txn", "ratio"),
            Metric("ceiling_one_each_vs_raw100", "raw LMDB in that shape (N per txn, N runs) / raw 100-per-txn",
                   "ratio"),
            Metric("ratio_pipelined_vs_raw100", "N writers (8 outstanding) / raw 100-per-txn, 1 run (target >= 0.5)",
                   "ratio"),
            Metric("pipelined_events_per_commit", "events per fsync'd txn the N pipelined writers' commits carried",
                   "events"),
            Metric("raw_at_pipelined_epc", "raw LMDB at those events per txn, over N runs (same repetition)",
                   "events/s"),
            Metric("ratio_pipelined_vs_raw_at_epc", "N writers (8 outstanding) / raw LMDB at their own events "
                   "per txn and N runs (like for like)", "ratio", chart=True),
        ],
        notes="N = writers. All of benchmarks.journal's measurements (one repetition's) are in actorflow_info.",
    )
)
