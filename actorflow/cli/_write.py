"""`runs signal`, `runs cancel`, `runs fork`, `runs watch`: commands that change or follow a run.

Writes never bypass the engine: a signal or cancel is a command in the journal's control inbox
(`actorflow._control`), committed durably before the command returns; the engine holding the data
directory applies it with its own logic within about a second (or its next `open()` does), and
records the outcome, which the command waits for (`--wait`) when an engine is live. A fork writes
the new run and a "load" command in one atomic batch (`actorflow._fork`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from storage import Journal

from .. import _control
from .._fork import add_fork, check_created, plan_fork
from .._types import RunState, RunStatus
from ..errors import RunNotFound
from ._common import (
    EXIT_CONFLICT,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    console,
    data_dir_of,
    emit_json,
    engine_pid,
    open_journal,
)

__all__ = ["cmd_signal", "cmd_cancel", "cmd_fork", "cmd_watch"]

_POLL = 0.1  # seconds between looks at the journal's change marker (one cheap read)


def _await_outcome(journal: Journal, command_id: str, wait: float) -> _control.Outcome | None:
    """The command's outcome, polling the journal's change marker; None if not applied within `wait`."""
    deadline = time.monotonic() + wait
    marker = None
    while True:
        now_marker = journal.change_marker()
        if now_marker != marker:
            marker = now_marker
            got = _control.outcome(journal, command_id)
            if got is not None:
                return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL)


def _report(
    args: argparse.Namespace,
    journal: Journal,
    cmd: _control.Command,
    what: str,
    *,
    fields: dict[str, Any] | None = None,
    show: str = "runs show",
    opener: str = "the next one to open it",
    applied: Callable[[_control.Outcome], tuple[str, dict[str, Any]]] | None = None,
) -> int:
    """Wait for a live engine to apply `cmd` (up to --wait s) and say what happened. `fields` name the
    target in the JSON (default: run_id), `show` is the command that shows it, `applied` words (and adds
    fields for) a command the engine applied."""
    data_dir = data_dir_of(args)
    pid = engine_pid(data_dir)
    got = _await_outcome(journal, cmd.id, args.wait) if pid is not None and args.wait > 0 else None
    result: dict[str, Any] = {"command": cmd.id, "kind": cmd.kind, **(fields or {"run_id": cmd.run_id}), "engine_pid": pid}
    if got is not None:
        result.update(state="applied" if got.ok else "refused", detail=got.detail)
        text = f"{what}: {got.detail}" if got.ok else f"{what} refused by the engine: {got.detail}"
        if applied is not None:
            text, more = applied(got)
            result.update(more)
    elif pid is not None:
        result.update(state="queued", detail=f"the engine (pid {pid}) had not applied it within {args.wait:g} s")
        text = f"{what}: queued durably; the engine (pid {pid}) has not applied it yet (see `actorflow {show} {cmd.run_id}`)"
    else:
        result.update(state="queued", detail="no engine holds the data directory")
        text = f"{what}: queued durably; no engine holds {data_dir}, {opener} applies it"
    if args.json:
        emit_json(result)
    else:
        console().print(text, style="red" if result["state"] == "refused" else None)
    return EXIT_CONFLICT if result["state"] == "refused" else EXIT_OK


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"PAYLOAD_JSON is not JSON ({exc.msg} at column {exc.colno}): quote strings, e.g. '\"yes\"' or '{{\"ok\": true}}'", EXIT_USAGE) from None


def cmd_signal(args: argparse.Namespace) -> int:
    payload = _payload(args.payload)
    with open_journal(data_dir_of(args)) as journal:
        cmd = _control.submit_signal(journal, args.run_id, args.name, payload, source="cli")
        return _report(args, journal, cmd, f"signal {args.name!r} for {args.run_id}")


def cmd_cancel(args: argparse.Namespace) -> int:
    with open_journal(data_dir_of(args)) as journal:
        cmd = _control.submit_cancel(journal, args.run_id, source="cli")
        return _report(args, journal, cmd, f"cancel of {args.run_id}")


def cmd_fork(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        plan = plan_fork(journal, args.run_id, args.from_step, args.new_run_id)
        batch = journal.batch()
        idx = add_fork(batch, plan)
        cmd = _control.add_load(batch, plan.run_id, source="cli")
        check_created(plan, journal.commit(batch)[idx])
        pid = engine_pid(data_dir)
        got = _await_outcome(journal, cmd.id, args.wait) if pid is not None and args.wait > 0 else None
    info = plan.to_dict()
    if got is not None:
        info["engine"] = "running" if got.ok else f"refused: {got.detail}"
    else:
        info["engine"] = "queued" if pid is not None else "none"
    if args.json:
        emit_json(info)
        return EXIT_OK
    out = console()
    steps = ", ".join(plan.replayed_steps) or "none"
    out.print(f"forked {plan.source} -> [bold]{plan.run_id}[/] at step {plan.from_step} ({len(plan.events)} events copied; replays: {steps})")
    if got is not None and got.ok:
        out.print(f"the engine (pid {pid}) is running it: actorflow runs watch {plan.run_id}")
    elif got is not None:
        out.print(f"the engine (pid {pid}) did not load it: {got.detail}", style="yellow")
    elif pid is not None:
        out.print(f"the engine (pid {pid}) loads it within about a second")
    else:
        out.print(f"no engine holds {data_dir}: the fork runs when one with workflow {plan.workflow!r} opens it")
    return EXIT_OK


def _watch_status(journal: Journal, run_id: str) -> RunStatus:
    rec = journal.get_run(run_id)
    if rec is None:
        raise RunNotFound(run_id)
    return RunStatus.from_record(rec)


def _end_code(st: RunStatus) -> int:
    return EXIT_OK if st.state == RunState.COMPLETED else EXIT_RUN_FAILED


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a run until it ends (or is blocked): a progress bar, or a JSON line per change."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with open_journal(data_dir_of(args)) as journal:
        st = _watch_status(journal, args.run_id)
        if args.json:
            return _watch_json(journal, st, deadline)
        out = console()
        cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[state]:<10}"), TimeElapsedColumn())
        with Progress(*cols, console=out, transient=False) as bars:
            task = bars.add_task(st.run_id, total=100, completed=round(st.progress * 100), state=st.state.value)
            marker = journal.change_marker()
            while not _stopped(st):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(_POLL)
                now_marker = journal.change_marker()
                if now_marker != marker:
                    marker = now_marker
                    st = _watch_status(journal, args.run_id)
                    bars.update(task, completed=round(st.progress * 100), state=st.state.value)
    if not _stopped(st):
        out.print(f"{st.run_id} is still {st.state.value} after {args.timeout:g} s", style="yellow")
        return EXIT_TIMEOUT
    style = "green" if st.state == RunState.COMPLETED else "red"
    out.print(f"{st.run_id} {st.state.value}" + (f": {st.error}" if st.error else ""), style=style)
    return _end_code(st)


def _stopped(st: RunStatus) -> bool:
    return st.finished or st.state == RunState.BLOCKED


def _watch_json(journal: Journal, st: RunStatus, deadline: float | None) -> int:
    emit_json(st.to_dict())
    marker = journal.change_marker()
    while not _stopped(st):
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_TIMEOUT
        time.sleep(_POLL)
        now_marker = journal.change_marker()
        if now_marker != marker:
            marker = now_marker
            new = _watch_status(journal, st.run_id)
            if (new.state, new.progress) != (st.state, st.progress):
                emit_json(new.to_dict())
            st = new
    return _end_code(st)
