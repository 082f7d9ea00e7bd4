"""What the views show (dashboard pages, `actorflow runs`), read from a journal in pages: the runs list,
counts per state, one run's detail.

No request reads the whole journal. A list request seeks with `Journal.runs_page` and reads until it
has a page of matches or has looked at `budget` records; a filter that matches rarely then answers
with what it found and a cursor to go on from. An unfinished state reads only the active index.
Counts per state come from a census of every record, taken off the request path and reused while
the journal has not changed (and for longer the longer a census takes); totals are exact at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from actorflow.errors import StorageError
from storage import FINISHED_STATES, Event, Journal, RunRecord

__all__ = ["STATES", "RunFilter", "RunPage", "Census", "list_runs", "parse_time"]

STATES = ("pending", "running", "sleeping", "waiting", "blocked", "completed", "failed", "cancelled")
_CHUNK = 500
INLINE_CENSUS_RUNS = 5_000  # the first census of a journal this small is taken inside the request


def parse_time(text: str | None, field_name: str) -> float | None:
    """A time filter from the URL: epoch seconds, or an ISO date/datetime (local time unless it says)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{field_name}: {text!r} is neither epoch seconds nor an ISO date/time (e.g. 2026-12-01T09:30)") from None


@dataclass(frozen=True, slots=True)
class RunFilter:
    state: str | None = None
    workflow: str | None = None
    prefix: str = ""
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    raw_since: str = ""
    raw_until: str = ""

    @classmethod
    def from_query(cls, q: dict[str, str]) -> RunFilter:
        state = q.get("state") or None
        if state is not None and state not in STATES:
            raise ValueError(f"state: {state!r} is not one of {', '.join(STATES)}")
        prefix = q.get("q", "")
        if "\x00" in prefix:
            raise ValueError("q: a run id prefix may not contain NUL")
        since, until = q.get("since", ""), q.get("until", "")
        return cls(state, q.get("workflow") or None, prefix, parse_time(since, "since"), parse_time(until, "until"), since, until)

    def match(self, r: RunRecord) -> bool:
        return (
            (self.state is None or r.state == self.state)
            and (self.workflow is None or r.workflow == self.workflow)
            and (self.since is None or r.created_at >= self.since)
            and (self.until is None or r.created_at < self.until)
        )

    def query(self, **extra: str | None) -> str:
        """The filter as a URL query (what the page keeps in its address), with `extra` on top."""
        q = {"state": self.state, "workflow": self.workflow, "q": self.prefix, "since": self.raw_since, "until": self.raw_until}
        q.update(extra)
        return urlencode({k: v for k, v in q.items() if v})


@dataclass(frozen=True, slots=True)
class RunPage:
    rows: list[RunRecord]
    newer: str | None  # `before` cursor for the page of newer runs (None: this is the newest)
    older: str | None  # `after` cursor for the page of older runs (None: nothing older)
    scanned: int  # records looked at for this page
    partial: bool  # stopped at the budget before filling the page


def _scan(journal: Journal, f: RunFilter, start: str | None, reverse: bool, limit: int, budget: int) -> tuple[list[RunRecord], str | None, int, bool]:
    """(matches, the last id looked at, records looked at, whether the end of the index was reached)."""
    unfinished = f.state is not None and f.state not in FINISHED_STATES
    rows: list[RunRecord] = []
    cursor, scanned = start, 0
    while len(rows) < limit and scanned < budget:
        want = min(_CHUNK, budget - scanned)
        page = journal.runs_page(cursor, want, prefix=f.prefix, reverse=reverse, unfinished=unfinished)
        for r in page:
            scanned += 1
            cursor = r.run_id
            if f.match(r):
                rows.append(r)
                if len(rows) >= limit:
                    return rows, cursor, scanned, False
        if len(page) < want:
            return rows, cursor, scanned, True
    return rows, cursor, scanned, False


def list_runs(journal: Journal, f: RunFilter, *, after: str | None = None, before: str | None = None, limit: int = 50, budget: int = 20_000) -> RunPage:
    """A page of runs matching `f`, newest run id first; `after`/`before` page to older/newer runs.

    It looks for one match more than the page holds, to know whether to offer the next page."""
    reverse = before is None
    found, cursor, scanned, at_end = _scan(journal, f, after if reverse else before, reverse, limit + 1, budget)
    more = len(found) > limit
    if more:
        found = found[:limit]
        cursor = found[-1].run_id
    partial = not at_end and not more
    onward = cursor if (more or partial) else None  # where the next page in this direction starts
    if reverse:
        newer = found[0].run_id if (after is not None and found) else after
        return RunPage(found, newer, onward, scanned, partial)
    rows = found[::-1]
    return RunPage(rows, onward, rows[-1].run_id if rows else before, scanned, partial)


@dataclass(slots=True)
class _Counts:
    by_state: dict[str, int] = field(default_factory=dict)
    workflows: list[str] = field(default_factory=list)
    marker: int | None = None
    taken_at: float = 0.0
    took: float = 0.0


class Census:
    """Counts per state and the workflow names, over every run, kept off the request path.

    A request gets the last census. A new one is taken when the journal changed (its change marker
    moved) and the last is older than 20x what it took (at least half a second): inline when it
    took under 50 ms (a small journal: counts exact at once), else on a thread of its own. The
    first is inline only for a journal of at most INLINE_CENSUS_RUNS runs."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._lock = threading.Lock()
        self._counts: _Counts | None = None
        self._running = False

    def get(self) -> tuple[dict[str, int], list[str], float | None]:
        """(counts per state, workflow names, when they were taken - None while the first census runs)."""
        marker = self.journal.change_marker()
        small = self.journal.run_counts()[0] <= INLINE_CENSUS_RUNS if self._counts is None else False
        with self._lock:
            c = self._counts
            stale = c is None or (c.marker != marker and time.time() - c.taken_at >= max(0.5, 20 * c.took))
            inline = stale and not self._running and (small if c is None else c.took < 0.05)
            spawn = stale and not self._running and not inline
            if inline or spawn:
                self._running = True
        if inline:
            self._take(marker)
        elif spawn:
            threading.Thread(target=self._take, args=(marker,), name="actorflow-dashboard-census", daemon=True).start()
        with self._lock:
            c = self._counts
        if c is None:
            return {}, [], None
        return dict(c.by_state), list(c.workflows), c.taken_at

    def _take(self, marker: int) -> None:
        t = time.perf_counter()
        by_state: dict[str, int] = {}
        workflows: set[str] = set()
        ok = False
        try:
            for r in self.journal.iter_runs():
                by_state[r.state] = by_state.get(r.state, 0) + 1
                workflows.add(r.workflow)
            ok = True
        except StorageError:  # the journal closed under the census (the server stopping): no counts
            pass
        finally:
            took = time.perf_counter() - t
            with self._lock:
                self._running = False
                if ok:
                    self._counts = _Counts(by_state, sorted(workflows), marker, time.time(), took)


def json_safe(value: Any) -> Any:
    """Event data for the page and the JSON API (what `Event.to_dict` does to it)."""
    return Event(0, "", "", value, 0.0).to_dict()["data"]
