"""What fsck reports: its findings, each kind's severity, and the report (`storage/_fsck.py` checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DAMAGE", "INDEX", "Finding", "FsckReport"]

DAMAGE = "damage"
INDEX = "index"


@dataclass(frozen=True)
class Finding:
    """One inconsistency: its kind (e.g. `timer_missing`), severity, where it is and what is wrong."""

    kind: str
    severity: str
    where: str
    message: str
    run_id: str | None = None
    repairable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "where": self.where,
            "run_id": self.run_id,
            "message": self.message,
            "repairable": self.repairable,
        }


@dataclass
class FsckReport:
    """What a check found (and, with repair, how many index entries it rewrote)."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    repaired: int = 0
    truncated: bool = False

    @property
    def damage(self) -> int:
        return sum(n for k, n in self.by_kind.items() if _SEVERITY.get(k) == DAMAGE)

    @property
    def index(self) -> int:
        return sum(n for k, n in self.by_kind.items() if _SEVERITY.get(k) == INDEX)

    @property
    def ok(self) -> bool:
        return not self.by_kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "counts": self.counts,
            "by_kind": self.by_kind,
            "damage": self.damage,
            "index": self.index,
            "repaired": self.repaired,
            "truncated": self.truncated,
            "findings": [f.to_dict() for f in self.findings],
        }


# kind -> severity; every kind fsck can report
_SEVERITY = {
    "checksum": DAMAGE,  # a record fails its CRC or cannot be decoded (also bad keys)
    "seq_gap": DAMAGE,  # a run's event seqs are not 0, 1, 2, ...
    "no_run_started": DAMAGE,  # a run's seq 0 is not run_started
    "orphan_events": DAMAGE,  # events of a run id that has no run record
    "no_events": DAMAGE,  # a run record without events
    "after_end": DAMAGE,  # events after the run's terminal event
    "state_mismatch": DAMAGE,  # finished record vs no terminal event, or the other way round
    "child_missing": DAMAGE,  # child_started names a run that does not exist
    "schedule_bad": DAMAGE,  # a schedule spec that is not well formed
    "active_missing": INDEX,
    "active_stale": INDEX,
    "timer_missing": INDEX,
    "timer_stale": INDEX,
    "inbox_orphan": INDEX,
    "inbox_delivered": INDEX,
    "signal_seq": INDEX,
    "unique_dangling": INDEX,
    "tag_missing": INDEX,
    "tag_dangling": INDEX,
}
