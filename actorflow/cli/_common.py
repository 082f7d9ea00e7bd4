"""What every `actorflow runs` command shares: the data directory, exit codes, errors, formatting."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rich.console import Console

from storage import LmdbJournal

from ..errors import (
    ActorflowError,
    ConfigError,
    InvalidRunId,
    JournalCorrupt,
    PayloadError,
    RunFinished,
    RunIdTaken,
    RunNotFound,
    StorageError,
)

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_NOT_FOUND",
    "EXIT_CONFLICT",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "CliError",
    "data_dir_of",
    "open_journal",
    "engine_pid",
    "exit_code",
    "hint",
    "console",
    "emit_json",
    "when",
    "ago",
    "duration",
]

EXIT_OK = 0
EXIT_ERROR = 1  # anything else that went wrong (storage, a damaged journal)
EXIT_USAGE = 2  # bad arguments (argparse's own code too), e.g. a payload that is not JSON
EXIT_NOT_FOUND = 3  # no such run, or no data directory
EXIT_CONFLICT = 4  # the run has ended (signal, cancel), a fork's id is taken
EXIT_RUN_FAILED = 5  # `runs watch`: the run failed, was cancelled or is blocked
EXIT_TIMEOUT = 6  # `runs watch --timeout`: the run had not ended

ENV_DATA_DIR = "ACTORFLOW_DATA_DIR"
DEFAULT_DATA_DIR = "./actorflow-data"


class CliError(ActorflowError):
    """A command-line problem with its exit code and what to do about it."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message, code=code)


def data_dir_of(args: argparse.Namespace) -> str:
    """--data-dir, else $ACTORFLOW_DATA_DIR, else ./actorflow-data."""
    return str(getattr(args, "data_dir", None) or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)


@contextlib.contextmanager
def open_journal(data_dir: str) -> Iterator[LmdbJournal]:
    """The data directory's journal, beside any engine that holds it (LMDB: one writer at a time,
    readers never block). Never creates a data directory: a mistyped path is an error, not a new
    empty journal."""
    if not os.path.isfile(os.path.join(data_dir, "data.mdb")):
        raise CliError(
            f"no actorflow data directory at {data_dir!r}: pass --data-dir DIR or set {ENV_DATA_DIR}",
            EXIT_NOT_FOUND,
        )
    with LmdbJournal(data_dir) as journal:
        yield journal


def engine_pid(data_dir: str) -> int | None:
    """The pid of the engine holding the directory (its `engine.lock`), None if none does."""
    path = os.path.join(data_dir, "engine.lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return int(exc.evidence.get("code", EXIT_ERROR))
    if isinstance(exc, (RunNotFound, InvalidRunId)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (RunFinished, RunIdTaken)):
        return EXIT_CONFLICT
    if isinstance(exc, (ConfigError, PayloadError)):
        return EXIT_USAGE
    return EXIT_ERROR


def hint(exc: BaseException, data_dir: str | None) -> str:
    """What to do next, appended to the one-line error."""
    where = f" --data-dir {data_dir}" if data_dir else ""
    if isinstance(exc, RunNotFound):
        return f"list the runs with: actorflow runs list{where}"
    if isinstance(exc, RunFinished):
        return f"to run it again from a step: actorflow runs fork {exc.evidence.get('run_id')} --from-step N{where}"
    if isinstance(exc, JournalCorrupt):
        return "the run's journal is damaged; `actorflow runs history` shows it as far as it can be read"
    if isinstance(exc, StorageError):
        return "is the path an actorflow data directory, and readable?"
    return ""


_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()  # `runs watch --json` is read line by line as it goes


def when(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return "-"
    delta = (time.time() if now is None else now) - t
    return f"in {duration(-delta)}" if delta < 0 else f"{duration(delta)} ago"
