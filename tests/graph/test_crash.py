"""kill -9 in the middle of a graph run: completed nodes never run again, the run completes after reopen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from actorflow import Engine
from actorflow.graph import GraphRunner
from storage import LmdbJournal

from . import crash_child
from .conftest import TIMEOUT

HELPER = Path(__file__).with_name("crash_child.py")


def ledger(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


def test_kill_9_mid_graph_then_recover(tmp_path: Path) -> None:
    data_dir, book = tmp_path / "data", tmp_path / "ledger.txt"
    Path(f"{book}.block").touch()
    log = open(tmp_path / "child.log", "wb")
    proc = subprocess.Popen([sys.executable, str(HELPER), str(data_dir), str(book)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(node == "c" for node, _ in ledger(book)):  # c is running, and blocked
            assert proc.poll() is None, (tmp_path / "child.log").read_text()
            assert time.monotonic() < deadline, "node c never started"
            time.sleep(0.005)
        # the journal already holds a and b (c is only dispatched once b's completion is durable)
        with LmdbJournal(str(data_dir)) as journal:
            done = [ev.name for ev in journal.events("graph-1") if ev.kind == "step_completed"]
        assert done == ["a", "b"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    child_pid = proc.pid

    os.unlink(f"{book}.block")
    engine = Engine(data_dir)
    GraphRunner(engine, crash_child.registry())
    with engine:  # open() recovers the run: it replays a and b from the journal and runs c again
        result = engine.result("graph-1", timeout=TIMEOUT)
        history = engine.history("graph-1")
    assert result["visited"] == ["a", "b", "c", "d"]
    assert result["output"]["a"] == child_pid and result["output"]["b"] == child_pid  # journaled values
    assert result["output"]["c"] == os.getpid() and result["output"]["d"] == os.getpid()
    runs = ledger(book)
    assert [n for n, _ in runs].count("a") == 1 and [n for n, _ in runs].count("b") == 1  # never again
    assert [pid for n, pid in runs if n == "c"] == [child_pid, os.getpid()]  # in flight at the kill: re-run
    assert [n for n, _ in runs].count("d") == 1
    assert [ev.name for ev in history if ev.kind == "step_completed"] == ["a", "b", "c", "d"]
