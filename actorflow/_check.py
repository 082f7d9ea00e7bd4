"""The replay check: would the code registered now replay every unfinished run's journal?

Temporal's Replayer, against your own live data: each unfinished run is rebuilt as a run machine
(`actorflow._core`) from its journal and activated once, as recovery would, but nothing it asks for
is carried out: no step runs, nothing is journaled, no timer is armed. A run whose code asks for
something other than what its journal recorded at some position (or returns early) diverges, with
the evidence (run, seq, expected, recorded) a blocked run would carry. Parked runs are checked too,
which recovery only replays when something wakes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from storage import Journal

from ._core import Env, RunMachine
from ._messages import LoadRun
from .errors import NondeterminismError

__all__ = ["CheckReport", "Divergence", "check_runs"]


@dataclass(frozen=True)
class Divergence:
    """One run the current code would block: where its replay left the journal."""

    run_id: str
    workflow: str
    seq: int
    expected: str
    recorded: str

    def __str__(self) -> str:
        return f"{self.run_id} ({self.workflow}) at position {self.seq}: code asks for {self.expected}, journal has {self.recorded}"


@dataclass(frozen=True)
class CheckReport:
    """What `Engine.check()` found: runs replayed, divergences, and runs it could not check (why)."""

    checked: int
    divergences: list[Divergence] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> reason (workflow not registered...)

    @property
    def ok(self) -> bool:
        return not self.divergences

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "divergences": [d.__dict__ for d in self.divergences],
            "skipped": dict(self.skipped),
        }


def check_runs(
    journal: Journal,
    workflows: dict[str, Callable[..., Any]],
    env: Env,
    run_ids: Iterable[str] | None = None,
) -> CheckReport:
    """Replay the given (default: every unfinished) run against `workflows`, carrying out nothing."""
    checked = 0
    divergences: list[Divergence] = []
    skipped: dict[str, str] = {}
    for run_id in journal.active_run_ids() if run_ids is None else run_ids:
        try:
            rec, events, signals = journal.load_run(run_id)
        except Exception as exc:  # noqa: BLE001 - a damaged journal is reported, not fatal to the check
            skipped[run_id] = f"journal unreadable: {exc}"
            continue
        if rec is None or rec.finished:
            continue
        fn = workflows.get(rec.workflow)
        if fn is None:
            skipped[run_id] = f"workflow {rec.workflow!r} is not registered"
            continue
        machine = RunMachine(rec, fn, tuple(events[0].data["args"]), events, env, signals)
        try:
            machine.activate(LoadRun(run_id))
        except Exception as exc:  # noqa: BLE001 - as the host would quarantine it: reported
            skipped[run_id] = f"replay raised {type(exc).__name__}: {exc}"
            continue
        finally:
            machine.detach()
        checked += 1
        err: NondeterminismError | None = machine.nondet
        if err is not None:
            divergences.append(Divergence(run_id, rec.workflow, err.seq, err.expected, err.recorded))
    return CheckReport(checked, divergences, skipped)
