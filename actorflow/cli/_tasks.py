"""`tasks list|show|cancel|requeue`, `dead-letters`, `schedules list`: the task queue of a data
directory, beside the engine that holds it.

Reads are plain LMDB read transactions through the same functions the engine's `tasks()` and
`dead_letters()` use (`actorflow.tasks._queue.read_tasks`, `read_dead_letters`), so the CLI shows
what the engine would, without one. Writes never bypass the engine: a cancel or a requeue is a
command in the journal's control inbox (`actorflow._control`), durable when the command returns,
applied by the engine holding the directory with its own `cancel()` / `requeue()` within about a
second (or by the next engine to open it); the command waits up to `--wait` seconds for the outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text

from storage import Journal, RunRecord

from .. import _control
from .._readmodel import json_safe
from .._runtime import final_event
from .._types import RunStatus
from ..tasks._chains import CHAIN_WORKFLOW
from ..tasks._model import TASK_PREFIX, TaskEvent, TaskFailed, TaskRetrying, TaskRunning, TaskSucceeded
from ..tasks._queue import NS_REQUEUED, read_dead_letters, read_tasks
from ..tasks._schedules import next_slot
from ..tasks._status import TASK_STATES, event_of, state_of, task_name
from ._common import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
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
from ._write import _report

__all__ = [
    "add_task_parsers",
    "cmd_tasks_list",
    "cmd_tasks_show",
    "cmd_tasks_cancel",
    "cmd_tasks_requeue",
    "cmd_dead_letters",
    "cmd_schedules_list",
    "event_dict",
]

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "retrying": "magenta", "queued": "white"}


def event_dict(ev: TaskEvent) -> dict[str, Any]:
    """A status event as JSON: its fields and `type` (TaskSucceeded, TaskFailed, ...)."""
    return {"type": type(ev).__name__, **json_safe(dataclasses.asdict(ev))}


def _detail(ev: TaskEvent) -> str:
    """The one thing worth saying about a status, for a table cell."""
    if isinstance(ev, TaskRunning):
        return f"{ev.progress:.0%}"
    if isinstance(ev, TaskRetrying):
        return f"attempt {ev.attempt} failed, next in {duration(ev.next_attempt_in)}: {ev.error}".strip(": ")
    if isinstance(ev, TaskFailed):
        return ev.message
    if isinstance(ev, TaskSucceeded):
        return json.dumps(json_safe(ev.output), default=str)
    return ""


def _state(state: str) -> Text:
    return Text(state, style=_STYLE.get(state, ""))


def _where(args: argparse.Namespace) -> str:
    return f" --data-dir {data_dir_of(args)}"


def _execution(journal: Journal, execution_id: str, args: argparse.Namespace, *, chains: bool = False) -> RunRecord:
    """The run record of a task execution (or a chain, when `chains`), else a not-found error."""
    rec = journal.get_run(execution_id)
    if rec is None:
        raise CliError(f"no task execution with id {execution_id!r} (list them with: actorflow tasks list{_where(args)})", EXIT_NOT_FOUND)
    if task_name(rec.workflow) is None and not (chains and rec.workflow == CHAIN_WORKFLOW):
        raise CliError(
            f"run {execution_id!r} is a run of workflow {rec.workflow!r}, not a task execution "
            f"(see it with: actorflow runs show {execution_id}{_where(args)})",
            EXIT_NOT_FOUND,
        )
    return rec


def _status(journal: Journal, rec: RunRecord) -> TaskEvent:
    return event_of(journal, lambda rid: final_event(journal, rid), RunStatus.from_record(rec), time.time())


# --- reads ------------------------------------------------------------------------------------------
def cmd_tasks_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}", EXIT_USAGE)
    if args.state is not None and args.state not in TASK_STATES:
        raise CliError(f"unknown task state {args.state!r}: use one of {', '.join(TASK_STATES)}", EXIT_USAGE)
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        wf = None if args.name is None else TASK_PREFIX + args.name
        rows = read_tasks(journal, time.time(), wf, args.tag, args.state)
    rows.sort(key=lambda t: (t.created_at, t.execution_id), reverse=True)
    shown = rows[: args.limit]
    if args.json:
        for t in shown:
            emit_json({"execution_id": t.execution_id, "task": t.task, "state": t.state, "status": event_dict(t.status),
                       "created_at": t.created_at, "updated_at": t.updated_at})
        return EXIT_OK
    table = Table(title=f"task executions in {data_dir}", title_justify="left")
    table.add_column("execution id", no_wrap=True, min_width=max([12, *(len(t.execution_id) for t in shown)]))
    table.add_column("task", no_wrap=True, min_width=max([4, *(len(t.task) for t in shown)]))
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("created", no_wrap=True, min_width=19)
    table.add_column("updated", no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
    now = time.time()
    for t in shown:
        table.add_row(t.execution_id, t.task, _state(t.state), when(t.created_at), ago(t.updated_at, now), _detail(t.status)[:200])
    out = console()
    out.print(table)
    more = " (more: raise --limit or narrow the filter)" if len(rows) > len(shown) else ""
    out.print(f"{len(shown)} shown, newest first; {len(rows)} matching{more}")
    return EXIT_OK


def show_data(journal: Journal, rec: RunRecord) -> dict[str, Any]:
    """Everything `tasks show` prints, as plain data (its --json)."""
    ev = _status(journal, rec)
    events = journal.events(rec.run_id, strict=False)
    args = events[0].data.get("args") if events and isinstance(events[0].data, dict) else None
    data, opts = (args[0], args[1]) if isinstance(args, (list, tuple)) and len(args) == 2 else ({}, {})
    options = {k: (v if k in ("priority", "tags", "delay", "timeout", "slot") else repr(v)) for k, v in dict(opts).items()}
    return {
        "execution_id": rec.run_id,
        "task": task_name(rec.workflow) or rec.workflow,
        "state": state_of(ev),
        "status": event_dict(ev),
        "input": json_safe(data),
        "options": json_safe(options),
        "attempts": sum(1 for e in events if e.name == "handler" and e.kind in ("step_attempt_failed", "step_failed", "step_completed")),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "error": rec.error,
        "requeued_as": journal.kv_get(NS_REQUEUED, rec.run_id),
        "pending_commands": [{"id": c.id, "kind": c.kind, "at": c.at} for c in _control.pending(journal, rec.run_id)],
    }


def cmd_tasks_show(args: argparse.Namespace) -> int:
    with open_journal(data_dir_of(args)) as journal:
        data = show_data(journal, _execution(journal, args.execution_id, args, chains=True))
    if args.json:
        emit_json(data)
        return EXIT_OK
    out = console()
    out.print(Text.assemble((data["execution_id"], "bold"), "  ", data["task"], "  ", _state(data["state"])))
    out.print(f"created {when(data['created_at'])}, updated {ago(data['updated_at'])}; handler attempts: {data['attempts']}")
    out.print(f"input: {json.dumps(data['input'], default=str)[:300]}")
    out.print(f"options: {json.dumps(data['options'], default=str)[:300]}")
    ev = data["status"]
    if data["state"] == "succeeded":
        out.print(Text(f"output: {json.dumps(ev.get('output'), default=str)[:300]}", style="green"))
    elif data["state"] == "failed":
        out.print(Text(f"error: {ev.get('message')}", style="red"))
    elif data["state"] == "running":
        out.print(f"progress: {ev.get('progress', 0.0):.0%}")
    elif data["state"] == "retrying":
        out.print(f"attempt {ev.get('attempt')} failed ({ev.get('error')}); next attempt in {duration(ev.get('next_attempt_in'))}")
    if data["requeued_as"]:
        out.print(f"requeued as {data['requeued_as']}")
    elif data["state"] == "failed":
        out.print(f"a dead letter: actorflow tasks requeue {data['execution_id']}{_where(args)}")
    if data["pending_commands"]:
        out.print("[bold]commands waiting for the engine[/] " + ", ".join(c["kind"] for c in data["pending_commands"]))
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        letters = read_dead_letters(journal, time.time())
    if args.json:
        for d in letters:
            emit_json(json_safe(dataclasses.asdict(d)))
        return EXIT_OK
    table = Table(title=f"dead letters in {data_dir}", title_justify="left")
    table.add_column("execution id", no_wrap=True, min_width=max([12, *(len(d.execution_id) for d in letters)]))
    for col in ("task", "attempts", "failed"):
        table.add_column(col, no_wrap=True)
    for col in ("error", "input"):
        table.add_column(col, overflow="fold", max_width=50)
    for d in letters:
        table.add_row(d.execution_id, d.task, str(d.attempts), when(d.failed_at), d.error[:200], json.dumps(json_safe(d.input), default=str)[:200])
    out = console()
    out.print(table)
    out.print(f"{len(letters)} dead letters" + (f"; requeue one with: actorflow tasks requeue EXECUTION_ID{_where(args)}" if letters else ""))
    return EXIT_OK


def cmd_schedules_list(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        specs = journal.schedules()
    rows = []
    for name, spec in specs:
        after = spec["last_slot"] if spec.get("last_slot") is not None else spec["anchor"]
        rows.append({"name": name, **json_safe(spec), "next_slot": next_slot(spec, after)})
    if args.json:
        for r in rows:
            emit_json(r)
        return EXIT_OK
    table = Table(title=f"schedules in {data_dir}", title_justify="left")
    for col in ("name", "task", "every / cron", "catch up", "last fired", "next", "input"):
        table.add_column(col, overflow="fold", max_width=40 if col == "input" else None)
    for r in rows:
        timing = f"every {duration(r['every'])}" if r.get("every") else f"cron {r.get('cron')}"
        nxt = f"{when(r['next_slot'])} ({ago(r['next_slot'])})"
        table.add_row(r["name"], str(r["task"]), timing, "yes" if r.get("catch_up") else "no", when(r.get("last_slot")), nxt,
                      json.dumps(r.get("input"), default=str)[:200])
    out = console()
    out.print(table)
    out.print(f"{len(rows)} schedules")
    return EXIT_OK


# --- writes (through the control inbox) -----------------------------------------------------------
def cmd_tasks_cancel(args: argparse.Namespace) -> int:
    with open_journal(data_dir_of(args)) as journal:
        rec = _execution(journal, args.execution_id, args, chains=True)
        if rec.finished:
            state = state_of(_status(journal, rec)) if task_name(rec.workflow) else rec.state
            raise CliError(f"execution {args.execution_id!r} has already ended ({state}); nothing to cancel"
                           + (f" (a dead letter: actorflow tasks requeue {args.execution_id}{_where(args)})" if state == "failed" else ""),
                           EXIT_CONFLICT)
        cmd = _control.submit_cancel(journal, args.execution_id, source="cli")  # RunFinished (exit 4) if it ended meanwhile
        return _report(args, journal, cmd, f"cancel of {args.execution_id}")


def cmd_tasks_requeue(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    eid = args.execution_id
    with open_journal(data_dir) as journal:
        rec = _execution(journal, eid, args)
        done = journal.kv_get(NS_REQUEUED, eid)
        if done is not None:
            raise CliError(f"execution {eid!r} was already requeued as {done!r} (see: actorflow tasks show {done}{_where(args)})", EXIT_CONFLICT)
        if rec.state != "failed":
            raise CliError(f"execution {eid!r} is {state_of(_status(journal, rec))}, not a dead letter: only failed executions "
                           f"requeue (list them with: actorflow dead-letters{_where(args)})", EXIT_CONFLICT)
        if any(c.kind == "requeue" for c in _control.pending(journal, eid)):
            raise CliError(f"a requeue of {eid!r} is already waiting for the engine (see: actorflow tasks show {eid}{_where(args)})", EXIT_CONFLICT)
        cmd = _control.submit_requeue(journal, eid, source="cli")

        def applied(got: _control.Outcome) -> tuple[str, dict[str, Any]]:
            new_id = journal.kv_get(NS_REQUEUED, eid) if got.ok else None
            text = f"requeued {eid} as {new_id}" if got.ok else f"requeue of {eid} refused by the engine: {got.detail}"
            return text, {"new_execution_id": new_id}

        return _report(
            args, journal, cmd, f"requeue of {eid}",
            fields={"execution_id": eid, "new_execution_id": None},
            show="tasks show",
            opener=f"the next one to open it (with task {rec.workflow[len(TASK_PREFIX):]!r})",
            applied=applied,
        )


def add_task_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser, str], None],
    data_dir_help: str,
) -> None:
    """`tasks list|show|cancel|requeue`, `dead-letters`, `schedules list` on the entry point."""
    tasks = sub.add_parser("tasks", help="list, inspect, cancel and requeue task executions",
                           description="Task executions in a data directory (runs of the workflows task:<name>).")
    tasks.add_argument("--data-dir", default=None, help=data_dir_help)
    tsub = tasks.add_subparsers(dest="tasks_cmd", metavar="COMMAND", required=True)

    p = tsub.add_parser("list", help="executions, newest first (a table, or JSON lines with --json)")
    common(p, "one JSON object per execution (JSON lines)")
    p.add_argument("--name", default=None, help="only executions of this task")
    p.add_argument("--tag", default=None, help="only executions with this tag")
    p.add_argument("--state", default=None, help=", ".join(TASK_STATES))
    p.add_argument("--limit", type=int, default=50, help="at most this many executions (default 50)")
    p.set_defaults(fn=cmd_tasks_list)

    p = tsub.add_parser("show", help="an execution: status, input, options, attempts, output or error")
    common(p, "one JSON object")
    p.add_argument("execution_id")
    p.set_defaults(fn=cmd_tasks_show)

    for name, fn, helptext in (
        ("cancel", cmd_tasks_cancel, "cancel a delayed, queued or running execution (or a chain)"),
        ("requeue", cmd_tasks_requeue, "enqueue a dead letter again (same task, input and options), once"),
    ):
        p = tsub.add_parser(name, help=helptext)
        common(p, "the command's outcome as JSON")
        p.add_argument("execution_id")
        p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a live engine to apply it (default 10; 0: don't)")
        p.set_defaults(fn=fn)

    p = sub.add_parser("dead-letters", help="failed task executions not requeued yet")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.add_argument("--json", action="store_true", help="one JSON object per dead letter (JSON lines)")
    p.set_defaults(fn=cmd_dead_letters)

    scheds = sub.add_parser("schedules", help="durable task schedules")
    scheds.add_argument("--data-dir", default=None, help=data_dir_help)
    ssub = scheds.add_subparsers(dest="schedules_cmd", metavar="COMMAND", required=True)
    p = ssub.add_parser("list", help="every schedule with its last and next slot")
    common(p, "one JSON object per schedule (JSON lines)")
    p.set_defaults(fn=cmd_schedules_list)
