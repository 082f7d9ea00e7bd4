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
        return {"quick": True, "writers": 16, "only": "journal_1_writer,journal_16_actors"}
    if s.quick:
        return {"quick": True, "writers": 64}
    return {"quick": False, "writers": 64}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    import actorflow  # noqa: F401  (storage alone hits an import cycle)
    from benchmarks import journal as j

    argv = ["--repeat", "1", "--dir", workdir, "--writers", str(p["writers"])] + (["--quick"] if p["quick"] else [])
    if p.get("only"):
        argv += ["--only", p["only"]]
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
    many = {k: v for k, v in rates.items() if k.startswith("journal_") and k != "journal_1_writer"}
    best_name = max(many, key=many.__getitem__) if many else None
    best = many.get(best_name) if best_name else None
    raw100 = rates.get("raw_100_per_commit")
    return {
        "raw_commit_per_event": rates.get("raw_commit_per_event"),
        "raw_100_per_commit": raw100,
        "journal_1_writer": rates.get("journal_1_writer"),
        "journal_n_writers_best": best,
        "ratio_writers_vs_raw100": best / raw100 if best and raw100 else None,
        "best_model": best_name,
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
            Metric("journal_n_writers_best", "LmdbJournal, N writers (best model; group commit)", "events/s",
                   chart=True),
            Metric("ratio_writers_vs_raw100", "group commit efficiency (N writers / raw 100-per-txn)", "ratio"),
        ],
        notes="All of benchmarks.journal's measurements (one repetition's) are in actorflow_info.",
    )
)
