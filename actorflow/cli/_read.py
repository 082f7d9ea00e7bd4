"""`runs list`, `runs show`, `runs history`: read-only views of a data directory, safe beside a live
engine (LMDB readers never block its writer and see only committed data). Built on the read model
the dashboard uses (`actorflow._readmodel`): paged run lists, the step timeline, "waiting on"."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.table import Table
from rich.text import Text

from storage import Event, Journal, RunRecord

from .. import _control
from .._readmodel import RunFilter, Timeline, build_timeline, json_safe, list_runs, parse_time
from .._types import RunStatus
from ..errors import RunNotFound
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    ago,
    console,
    data_dir_of,
    duration,
    emit_json,
    open_journal,
    when,
)

__all__ = ["cmd_list", "cmd_show", "cmd_history", "cmd_legacy_runs", "cmd_legacy_history", "run_dict"]

_STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "blocked": "bold red",
    "running": "cyan",
    "sleeping": "blue",
    "waiting": "magenta",
    "pending": "white",
}


def run_dict(rec: RunRecord) -> dict[str, Any]:
    d = RunStatus.from_record(rec).to_dict()
    if rec.meta.get("forked_from"):
        d["forked_from"] = rec.meta["forked_from"]
        d["from_step"] = rec.meta.get("from_step")
    return d


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _filter(args: argparse.Namespace) -> RunFilter:
    try:
        return RunFilter.from_query(
            {"state": args.state or "", "workflow": args.workflow or "", "since": args.since or "", "q": args.prefix or ""}
        )
    except ValueError as exc:
        raise CliError(f"{exc}", EXIT_USAGE) from None


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}", EXIT_USAGE)
    f = _filter(args)
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        page = list_runs(journal, f, limit=args.limit, budget=max(20_000, args.limit * 20))
        total, active = journal.run_counts()
    if args.json:
        for rec in page.rows:
            emit_json(run_dict(rec))
        return EXIT_OK
    table = Table(title=f"runs in {data_dir}", title_justify="left")
    def widest(values: list[str], head: str) -> int:
        return max([len(head), *map(len, values)])

    rows = page.rows
    table.add_column("run id", no_wrap=True, min_width=widest([r.run_id for r in rows], "run id"))
    table.add_column("workflow", no_wrap=True, min_width=widest([r.workflow for r in rows], "workflow"))
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("progress", justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True, min_width=19)
    table.add_column("updated", no_wrap=True)
    table.add_column("error", no_wrap=True, overflow="ellipsis", max_width=40)
    now = time.time()
    for rec in page.rows:
        table.add_row(rec.run_id, rec.workflow, _state(rec.state), f"{rec.progress:.0%}", when(rec.created_at), ago(rec.updated_at, now), (rec.error or "").splitlines()[0][:120] if rec.error else "")
    out = console()
    out.print(table)
    more = " (more: raise --limit or narrow the filter)" if page.older else ""
    out.print(f"{len(page.rows)} shown, newest first; {total} runs in the journal, {active} unfinished{more}")
    return EXIT_OK


def _read_run(journal: Journal, run_id: str) -> tuple[RunRecord, list[Event]]:
    rec = journal.get_run(run_id)
    if rec is None:
        raise RunNotFound(run_id)
    return rec, journal.events(run_id, strict=False)  # a damaged record shows as `undecodable`


def _row_dicts(tl: Timeline, now: float) -> list[dict[str, Any]]:
    rows = []
    for row in tl.rows:
        start = row.segments[0].start if row.segments else None
        ends = [s.end for s in row.segments]
        end = None if (not ends or any(e is None for e in ends)) else max(e for e in ends if e is not None)
        last = row.segments[-1] if row.segments else None
        rows.append(
            {
                "pos": row.pos,
                "kind": row.kind,
                "name": row.name,
                "attempts": row.attempts,
                "status": last.status if last is not None else "open",
                "started": start,
                "ended": end,
                "duration": None if start is None else (end if end is not None else now) - start,
                "detail": next((s.detail for s in reversed(row.segments) if s.detail), ""),
                "child_run": row.link,
            }
        )
    return rows


def show_data(journal: Journal, run_id: str) -> dict[str, Any]:
    """Everything `runs show` prints, as plain data (its --json)."""
    rec, events = _read_run(journal, run_id)
    now = time.time()
    tl = build_timeline(rec, events, now)
    steps = [ev for ev in events if ev.kind in ("step_completed", "step_failed")]
    return {
        "run": run_dict(rec),
        "steps_done": len(steps),
        "timeline": _row_dicts(tl, now),
        "waiting": [{"kind": w.kind, "name": w.name, "due": w.due, "run_id": w.run_id} for w in tl.waiting],
        "inbox": [{"name": n, "seq": s, "payload": json_safe(p)} for n, s, p in journal.signals(run_id)],
        "pending_commands": [{"id": c.id, "kind": c.kind, "name": c.name, "at": c.at} for c in _control.pending(journal, run_id)],
        "input": json_safe(tl.input),
        "result": json_safe(tl.result),
        "error": json_safe(tl.error),
        "events": len(events),
    }


def cmd_show(args: argparse.Namespace) -> int:
    with open_journal(data_dir_of(args)) as journal:
        data = show_data(journal, args.run_id)
    if args.json:
        emit_json(data)
        return EXIT_OK
    out = console()
    run = data["run"]
    head = Text.assemble((run["run_id"], "bold"), "  ", run["workflow"], "  ", _state(run["state"]), f"  {run['progress']:.0%}")
    out.print(head)
    took = (run["updated_at"] - run["created_at"]) if run["state"] in ("completed", "failed", "cancelled") else None
    out.print(f"started {when(run['created_at'])}, updated {ago(run['updated_at'])}" + (f", took {duration(took)}" if took is not None else ""))
    if run.get("forked_from"):
        out.print(f"forked from {run['forked_from']} at step {run['from_step']}")
    out.print(f"input: {json.dumps(data['input'], default=str)[:300]}")
    if run["state"] == "completed":
        out.print(Text(f"result: {json.dumps(data['result'], default=str)[:300]}", style="green"))
    elif data["error"] is not None or run["error"]:
        err = data["error"].get("error") if isinstance(data["error"], dict) else data["error"]
        out.print(Text(f"error: {err or run['error']}", style="red"))
    table = Table(title=f"timeline ({data['steps_done']} steps done, {data['events']} events)", title_justify="left")
    for col in ("#", "kind", "name", "attempts", "duration", "status", "detail"):
        table.add_column(col, overflow="fold", max_width=60 if col == "detail" else None)
    for r in data["timeline"]:
        status = r["status"] + (" (still going)" if r["ended"] is None and r["status"] == "open" else "")
        detail = r["detail"] or (f"child run {r['child_run']}" if r["child_run"] else "")
        table.add_row(str(r["pos"]), r["kind"], r["name"], str(r["attempts"] or ""), duration(r["duration"]), status, detail)
    out.print(table)
    if data["waiting"]:
        out.print("[bold]waiting on[/]")
        for w in data["waiting"]:
            due = f", due {when(w['due'])} ({ago(w['due'])})" if w["due"] else ""
            what = {"timer": "timer", "signal": "signal", "child": "child run", "retry": "retry of step"}.get(w["kind"], w["kind"])
            extra = f" {w['run_id']}" if w["run_id"] else ""
            out.print(f"  {what} {w['name']!r}{extra}{due}")
    if data["inbox"]:
        out.print("[bold]signals queued for the run[/] " + ", ".join(f"{s['name']} (#{s['seq']})" for s in data["inbox"]))
    if data["pending_commands"]:
        out.print("[bold]commands waiting for the engine[/] " + ", ".join(f"{c['kind']} {c['name'] or ''}".strip() for c in data["pending_commands"]))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with open_journal(data_dir_of(args)) as journal:
        _, events = _read_run(journal, args.run_id)
    if args.json:
        for ev in events:
            emit_json(ev.to_dict())
        return EXIT_OK
    table = Table(title=f"journal of {args.run_id}", title_justify="left")
    for col in ("seq", "time", "kind", "name", "pos", "data"):
        table.add_column(col, overflow="fold", max_width=70 if col == "data" else None)
    t0 = events[0].at if events else 0.0
    for ev in events:
        data = json.dumps(ev.to_dict()["data"], default=str)
        table.add_row(str(ev.seq), f"+{duration(ev.at - t0)}" if ev.seq else when(ev.at), ev.kind, ev.name, "" if ev.pos < 0 else str(ev.pos), data[:200])
    console().print(table)
    return EXIT_OK


# --- the forms of the first CLI, kept as they were (JSON lines) -------------------------------------
def cmd_legacy_runs(args: argparse.Namespace) -> int:
    """`actorflow runs [--state S] [--workflow W]`: every matching run as JSON lines, in run id order."""
    with open_journal(data_dir_of(args)) as journal:
        for rec in journal.runs(args.state, args.workflow):
            emit_json(RunStatus.from_record(rec).to_dict())
    return EXIT_OK


def cmd_legacy_history(args: argparse.Namespace) -> int:
    """`actorflow history RUN_ID`: `runs history RUN_ID --json`."""
    args.json = True
    return cmd_history(args)


def since_arg(text: str) -> str:
    """argparse type for --since: epoch seconds, an ISO date/time, or a span back from now (30m, 2h, 7d)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return str(time.time() - float(text[:-1]) * units[text[-1]])
    try:
        parse_time(text, "--since")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or a span back from now like 30m, 2h, 7d") from None
    return text
