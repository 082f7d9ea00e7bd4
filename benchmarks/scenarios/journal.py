"""journal: acknowledged durable events/s through LmdbJournal beside raw LMDB (benchmarks/journal.py,
measured in a worker like every scenario; `python -m benchmarks.journal` runs it standalone)."""

from __future__ import annotations

from typing import Any

from .._harness import Metric, Scenario, Settings, register


def params(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"scale": 0.2, "writers": 16}
    if s.quick:
        return {"scale": 1, "writers": 64}
    return {"scale": 3, "writers": 64}


def actorflow(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    import actorflow  # noqa: F401  (storage alone hits an import cycle)
    from benchmarks import journal as j

    scale, w = p["scale"], p["writers"]
    raw1 = j.raw_lmdb(workdir, int(1000 * scale), 1)
    raw100 = j.raw_lmdb(workdir, int(20000 * scale), 100)
    j1 = j.journal_writers(workdir, 1, int(1000 * scale))
    jn = j.journal_writers(workdir, w, int(20000 * scale) // w)
    return {
        "raw_commit_per_event": raw1,
        "raw_100_per_commit": raw100,
        "journal_1_writer": j1,
        "journal_n_writers": jn,
        "ratio_writers_vs_raw100": jn / raw100,
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
            Metric("journal_n_writers", "LmdbJournal, N writer threads (group commit)", "events/s", chart=True),
            Metric("ratio_writers_vs_raw100", "group commit efficiency (N writers / raw 100-per-txn)", "ratio"),
        ],
    )
)
