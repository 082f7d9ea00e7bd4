"""`actorflow fsck --data-dir DIR [--repair] [--json]`: is the journal whole and are its indexes right?

Checks every record's checksum, each run's event sequence, and the indexes (active runs, timers,
signal inboxes, unique keys, tags, schedules) against the events (`storage.fsck`). A check may run
beside a live engine (it reads one committed snapshot); `--repair` rewrites the index entries found
wrong, never an event, and refuses while an engine holds the directory.

Exit codes: 0 clean (after `--repair`: nothing left), 8 index findings (`--repair` fixes them),
9 damaged records or event sequences (repair cannot derive those: restore from a backup, or cancel
the runs named), 3 no data directory, 4 an engine holds the directory (`--repair`), 1 other errors.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from storage import FsckReport, fsck

from ..errors import StorageError
from ._common import EXIT_CONFLICT, EXIT_NOT_FOUND, CliError, data_dir_of, engine_pid

__all__ = ["add_fsck_parser", "cmd_fsck", "EXIT_FSCK_INDEX", "EXIT_FSCK_DAMAGE"]

EXIT_FSCK_INDEX = 8
EXIT_FSCK_DAMAGE = 9
_SHOWN = 50  # findings listed in the text report (--json lists them all)


def add_fsck_parser(sub: Any, data_dir_help: str) -> None:
    p = sub.add_parser(
        "fsck",
        help="check the journal: record checksums, event sequences, indexes vs events (exit 8/9 on findings)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.add_argument("--repair", action="store_true", help="rebuild the derivable index entries found wrong (never events)")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(fn=cmd_fsck)


def exit_code_of(report: FsckReport) -> int:
    if report.damage:
        return EXIT_FSCK_DAMAGE
    if report.index:
        return EXIT_FSCK_INDEX
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    if not os.path.isfile(os.path.join(data_dir, "data.mdb")):
        raise CliError(f"no actorflow data directory at {data_dir!r}: pass --data-dir DIR", EXIT_NOT_FOUND)
    if args.repair and engine_pid(data_dir) is not None:
        raise CliError(
            f"an engine (pid {engine_pid(data_dir)}) holds {data_dir}: stop it before fsck --repair "
            "(fsck without --repair runs beside it)",
            EXIT_CONFLICT,
        )
    try:
        report = fsck(data_dir, repair=args.repair)
    except StorageError as exc:
        if exc.evidence.get("pid") is not None:  # an engine took the directory between the look and the lock
            raise CliError(str(exc), EXIT_CONFLICT) from None
        raise
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        _print(report, args.repair)
    return exit_code_of(report)


def _print(report: FsckReport, repaired: bool) -> None:
    c = report.counts
    print(
        f"fsck {report.path}: {c.get('runs', 0)} runs ({c.get('active', 0)} active), {c.get('events', 0)} events, "
        f"{c.get('timers', 0)} timers, {c.get('signals', 0)} inbox signals, {c.get('kv', 0)} kv entries"
    )
    if repaired:
        print(f"repaired {report.repaired} index entr{'y' if report.repaired == 1 else 'ies'}")
    for f in report.findings[:_SHOWN]:
        fix = " (repairable)" if f.repairable else ""
        print(f"{f.severity.upper():6} {f.kind:16} {f.where}: {f.message}{fix}")
    hidden = sum(report.by_kind.values()) - min(len(report.findings), _SHOWN)
    if hidden > 0:
        print(f"... and {hidden} more (--json lists them all)")
    if report.ok:
        print("clean")
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
        print(f"{report.damage} damaged, {report.index} index finding(s): {kinds}")
        if report.index and not report.damage and not repaired:
            print("run again with --repair (engine stopped) to rebuild the index entries")
