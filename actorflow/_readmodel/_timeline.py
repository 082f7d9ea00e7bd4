"""A run's journal as a waterfall: one row per command (step, sleep, signal wait, child), each with its
segments (attempts, retry waits, the wait itself), and what the run waits on now.

Steps journal only their outcome, so an attempt is taken to start when the command before it (a lower
position) last recorded something, or when the previous attempt's retry was due. `ctx.gather` issues
its commands together; each then starts at the same event, as it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import Event, RunRecord

__all__ = ["Segment", "Row", "Waiting", "Timeline", "build_timeline"]

FINAL_KINDS = ("run_completed", "run_failed", "run_cancelled")


@dataclass(frozen=True, slots=True)
class Segment:
    """One bar: `end` None means still going on; `planned` is when a wait is due (timer, timeout)."""

    kind: str  # attempt, retry_wait, sleep, signal, child, compensation, run
    label: str
    start: float
    end: float | None
    status: str  # ok, failed, open, timeout, cancelled
    detail: str = ""
    planned: float | None = None


@dataclass(slots=True)
class Row:
    pos: int
    kind: str  # step, sleep, signal, child, compensation
    name: str
    segments: list[Segment] = field(default_factory=list)
    link: str | None = None  # a child run id
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Waiting:
    """Something the run waits on now: a timer, a signal, a child run, a retry."""

    kind: str  # timer, signal, child, retry
    name: str
    due: float | None = None
    run_id: str | None = None


@dataclass(slots=True)
class Timeline:
    start: float
    end: float
    rows: list[Row]
    waiting: list[Waiting]
    input: Any = None
    result: Any = None
    error: Any = None
    finished: bool = False

    @property
    def span(self) -> float:
        return max(self.end - self.start, 1e-3)

    def left(self, t: float) -> float:
        """Percent of the span at time t (for the bars' CSS)."""
        return max(0.0, min(100.0, (t - self.start) / self.span * 100.0))

    def width(self, seg: Segment) -> float:
        end = self.end if seg.end is None else seg.end
        return max(0.35, self.left(end) - self.left(seg.start))


def _command_starts(events: list[Event]) -> dict[int, float]:
    """For each position, the time of the last event of a lower position before its first event
    (looking back from there: usually the event just before it)."""
    starts: dict[int, float] = {}
    for i, ev in enumerate(events):
        if ev.pos < 0 or ev.pos in starts:
            continue
        at = ev.at
        for j in range(i - 1, -1, -1):
            if events[j].pos < ev.pos:
                at = events[j].at
                break
        starts[ev.pos] = at
    return starts


def build_timeline(rec: RunRecord, events: list[Event], now: float) -> Timeline:
    """The waterfall of `rec`'s run from its journal `events`, as of `now` (epoch seconds)."""
    finished = rec.finished
    t0 = events[0].at if events else rec.created_at
    last_at = events[-1].at if events else rec.updated_at
    t_end = last_at if finished else max(now, last_at)
    starts = _command_starts(events)
    rows: dict[int, Row] = {}
    comp: list[Row] = []
    attempt_start: dict[int, float] = {}
    tl = Timeline(t0, t_end, [], [], finished=finished)
    for ev in events:
        kind, pos = ev.kind, ev.pos
        if kind == "run_started":
            data = ev.data if isinstance(ev.data, dict) else {}
            tl.input = data.get("args", ev.data)
            continue
        if kind in FINAL_KINDS:
            if kind == "run_completed":
                tl.result = ev.data
            else:
                tl.error = ev.data
            continue
        if kind in ("compensation_completed", "compensation_failed"):
            prev = comp[-1].segments[-1].end if comp else None
            start = prev if prev is not None else ev.at
            failed = kind == "compensation_failed"
            detail = str(ev.data.get("error", "")) if failed and isinstance(ev.data, dict) else ""
            row = Row(pos, "compensation", ev.name)
            row.segments.append(Segment("compensation", f"undo {ev.name}", start, ev.at, "failed" if failed else "ok", detail))
            comp.append(row)
            continue
        if pos < 0 or kind in ("progress", "patch", "cancel_requested", "now", "random", "uuid4"):
            continue
        start = starts.get(pos, ev.at)
        if kind.startswith("step_"):
            row = rows.setdefault(pos, Row(pos, "step", ev.name))
            a_start = attempt_start.get(pos, start)
            _close_retry_wait(row)
            if kind == "step_attempt_failed":
                data = ev.data if isinstance(ev.data, dict) else {}
                n = int(data.get("attempt", row.attempts + 1))
                row.attempts = n
                row.segments.append(Segment("attempt", f"attempt {n}", a_start, ev.at, "failed", str(data.get("error", ""))))
                retry_at = data.get("retry_at")
                if isinstance(retry_at, (int, float)):
                    row.segments.append(Segment("retry_wait", f"retry wait before attempt {n + 1}", ev.at, None, "open", planned=float(retry_at)))
                    attempt_start[pos] = float(retry_at)
                else:
                    attempt_start[pos] = ev.at
            else:
                row.attempts += 1
                ok = kind == "step_completed"
                detail = "" if ok else _error_text(ev.data)
                row.segments.append(Segment("attempt", f"attempt {row.attempts}", a_start, ev.at, "ok" if ok else "failed", detail))
        elif kind in ("timer_started", "timer_fired"):
            row = rows.setdefault(pos, Row(pos, "sleep", ev.name))
            if kind == "timer_started":
                due = float(ev.data) if isinstance(ev.data, (int, float)) else None
                row.segments.append(Segment("sleep", f"sleep {ev.name}", ev.at, None, "open", planned=due))
            else:
                _close(row, ev.at, "ok")
        elif kind in ("wait_started", "signal_received", "wait_timeout"):
            row = rows.setdefault(pos, Row(pos, "signal", ev.name))
            if kind == "wait_started":
                due = float(ev.data) if isinstance(ev.data, (int, float)) else None
                row.segments.append(Segment("signal", f"wait for signal {ev.name}", ev.at, None, "open", planned=due))
            else:
                _close(row, ev.at, "ok" if kind == "signal_received" else "timeout")
        elif kind.startswith("child_"):
            row = rows.setdefault(pos, Row(pos, "child", ev.name))
            if kind == "child_started":
                row.link = ev.data.get("run_id") if isinstance(ev.data, dict) else None
                row.segments.append(Segment("child", f"child {ev.name}", ev.at, None, "open"))
            else:
                _close(row, ev.at, "ok" if kind == "child_completed" else "failed", "" if kind == "child_completed" else _error_text(ev.data))
    for row in rows.values():  # what is still open: ended with the run, or what it waits on now
        for i, seg in enumerate(row.segments):
            if seg.end is not None:
                continue
            if finished:
                row.segments[i] = _ended(seg, t_end, "cancelled")
                continue
            if seg.kind == "retry_wait" and seg.planned is not None and seg.planned <= now:
                row.segments[i] = _ended(seg, seg.planned, "ok")
                row.segments.append(Segment("attempt", f"attempt {row.attempts + 1}", seg.planned, None, "open", "running"))
                continue
            tl.waiting.append(_waiting(row, seg))
    tl.rows = sorted(rows.values(), key=lambda r: r.pos) + comp
    return tl


def _waiting(row: Row, seg: Segment) -> Waiting:
    if seg.kind == "sleep":
        return Waiting("timer", row.name, seg.planned)
    if seg.kind == "signal":
        return Waiting("signal", row.name, seg.planned)
    if seg.kind == "child":
        return Waiting("child", row.name, None, row.link)
    return Waiting("retry", row.name, seg.planned)


def _ended(seg: Segment, end: float, status: str) -> Segment:
    return Segment(seg.kind, seg.label, seg.start, max(end, seg.start), status, seg.detail, seg.planned)


def _close(row: Row, at: float, status: str, detail: str = "") -> None:
    for i in range(len(row.segments) - 1, -1, -1):
        seg = row.segments[i]
        if seg.end is None:
            row.segments[i] = Segment(seg.kind, seg.label, seg.start, at, status, detail or seg.detail, seg.planned)
            return


def _close_retry_wait(row: Row) -> None:
    if row.segments and row.segments[-1].kind == "retry_wait" and row.segments[-1].end is None:
        seg = row.segments[-1]
        row.segments[-1] = _ended(seg, seg.planned if seg.planned is not None else seg.start, "ok")


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("error") or data)
    return "" if data is None else str(data)
