"""The `actorflow runs ...` commands (operators' view of a data directory), wired into the
`actorflow` entry point by `add_parsers`. Exit codes: see `_common` (0 ok, 1 error, 2 usage,
3 not found, 4 conflict, 5 the watched run failed, 6 watch timed out).

`actorflow check --app MODULE` (the replay check, `_check.py`) exits 7 when a run would block.
`tasks list|show|cancel|requeue`, `dead-letters`, `schedules list`: the task queue (`_tasks.py`);
`workers`, `queues`: its control plane (`_queues.py`).
`tasks list|show|cancel|requeue`, `dead-letters`, `schedules list`: the task queue (`_tasks.py`).
`actorflow fsck [--repair]` (`_fsck.py`) exits 8 on index findings, 9 on damaged records.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import ActorflowError
from ._check import cmd_check
from ._common import EXIT_USAGE, data_dir_of, exit_code, hint
from ._fsck import add_fsck_parser
from ._queues import add_queue_parsers
from ._read import cmd_history, cmd_legacy_history, cmd_legacy_runs, cmd_list, cmd_show, since_arg
from ._tasks import add_task_parsers
from ._write import cmd_cancel, cmd_fork, cmd_signal, cmd_watch

__all__ = ["add_parsers", "run_command"]

_DATA_DIR_HELP = "the data directory (default: $ACTORFLOW_DATA_DIR, else ./actorflow-data)"


def _common(p: argparse.ArgumentParser, json_help: str = "machine-readable output (JSON)") -> None:
    # SUPPRESS: `actorflow runs --data-dir D list` and `actorflow runs list --data-dir D` both work
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help=_DATA_DIR_HELP)
    p.add_argument("--json", action="store_true", help=json_help)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `runs ...` and the first CLI's `history RUN_ID` to the entry point's subcommands."""
    runs = sub.add_parser(
        "runs",
        help="list, inspect, signal, cancel, watch and fork runs",
        description="Runs in a data directory. Without a subcommand: every run as JSON lines (the first CLI's form).",
    )
    runs.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    runs.add_argument("--state", default=None, help=argparse.SUPPRESS)  # the legacy form's filters
    runs.add_argument("--workflow", default=None, help=argparse.SUPPRESS)
    runs.set_defaults(fn=cmd_legacy_runs)
    rsub = runs.add_subparsers(dest="runs_cmd", metavar="COMMAND")

    p = rsub.add_parser("list", help="runs, newest first (a table, or JSON lines with --json)")
    _common(p, "one JSON object per run (JSON lines)")
    p.add_argument("--state", default=None, help="pending, running, sleeping, waiting, blocked, completed, failed, cancelled")
    p.add_argument("--workflow", default=None, help="only runs of this workflow")
    p.add_argument("--since", type=since_arg, default=None, help="started at/after: epoch seconds, ISO date/time, or 30m / 2h / 7d ago")
    p.add_argument("--prefix", default=None, help="run ids starting with this")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    p.set_defaults(fn=cmd_list)

    p = rsub.add_parser("show", help="a run: status, progress, step timeline with attempts and durations, what it waits on")
    _common(p, "one JSON object")
    p.add_argument("run_id")
    p.set_defaults(fn=cmd_show)

    p = rsub.add_parser("history", help="a run's journal, event by event")
    _common(p, "one JSON object per event (JSON lines)")
    p.add_argument("run_id")
    p.set_defaults(fn=cmd_history)

    for name, fn, helptext in (
        ("signal", cmd_signal, "send a signal (durable at once; applied by the engine holding the directory)"),
        ("cancel", cmd_cancel, "cancel a run (its compensations run)"),
    ):
        p = rsub.add_parser(name, help=helptext)
        _common(p, "the command's outcome as JSON")
        p.add_argument("run_id")
        if name == "signal":
            p.add_argument("name", help="the signal's name")
            p.add_argument("payload", nargs="?", default=None, help="the payload, as JSON (default: null)")
        p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a live engine to apply it (default 10; 0: don't)")
        p.set_defaults(fn=fn)

    p = rsub.add_parser("watch", help="a live progress bar until the run ends")
    _common(p, "a JSON line per change of state or progress")
    p.add_argument("run_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 6)")
    p.set_defaults(fn=cmd_watch)

    p = rsub.add_parser("fork", help="a new run with this run's journal up to step N, run on the current code")
    _common(p, "what was forked, as JSON")
    p.add_argument("run_id", help="the run to fork (only read)")
    p.add_argument("--from-step", type=int, required=True, metavar="N", help="keep the first N steps' results (0: run it all again)")
    p.add_argument("--run-id", dest="new_run_id", default=None, help="the new run's id (default: a new UUIDv7)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a live engine to load it (default 10; 0: don't)")
    p.set_defaults(fn=cmd_fork)

    p = sub.add_parser("check", help="replay every unfinished run against the code now (no step runs); exit 7 if any would block")
    p.add_argument("--app", required=True, help="the module defining your Engine: pkg.mod, pkg.mod:engine or path/to/app.py")
    p.add_argument("--data-dir", default=None, help="the data directory (default: the app engine's, else $ACTORFLOW_DATA_DIR)")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(fn=cmd_check)

    add_task_parsers(sub, _common, _DATA_DIR_HELP)  # tasks list|show|cancel|requeue, dead-letters, schedules list
    add_queue_parsers(sub, _common)  # workers, queues (the task control plane)
    add_fsck_parser(sub, _DATA_DIR_HELP)  # fsck [--repair] (issue 18)

    hist = sub.add_parser("history", help="a run's journal as JSON lines (= runs history RUN_ID --json)")
    hist.add_argument("run_id")
    hist.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    hist.set_defaults(fn=cmd_legacy_history)


def run_command(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a `runs` command: an ActorflowError becomes one line on stderr, with what to do, and its exit code."""
    try:
        return int(fn(args))
    except ActorflowError as exc:
        data_dir = data_dir_of(args) if hasattr(args, "data_dir") else None
        tip = hint(exc, data_dir)
        print(f"actorflow: {exc}" + (f" ({tip})" if tip else ""), file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def is_runs_command(fn: object) -> bool:
    return getattr(fn, "__module__", "").startswith(__name__)


__all__ += ["is_runs_command", "EXIT_USAGE"]
