"""Worker nodes for tests: `actorflow worker --join` processes that join an engine's convention (two
admins on loopback ports stand for two machines), and the fixtures that stop every one of them by PID.

Shared by the step-placement tests (tests/engine/test_multiproc_nodes.py) and the tasks-across-nodes
tests (tests/tasks/test_queues_nodes.py): the fixtures are re-exported by both directories' conftest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

SECRET = "nodes-test-secret-0123456789abcdef"
TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(fetch: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """`fetch()`'s first truthy value, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(pid: int) -> None:
    if running(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Nodes:
    """`actorflow worker --join` processes; each is stopped (its whole session, by PID) at the end."""

    def __init__(self, tmp: Path, leader_port: int) -> None:
        self.tmp, self.leader_port = tmp, leader_port
        self.procs: list[tuple[subprocess.Popen[str], int]] = []

    def start(self, *capabilities: str, args: tuple[str, ...] = ()) -> set[int]:
        """Start a node; returns the PIDs of its session once it joined (its admin's processes)."""
        env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(self.tmp / "wrun"),
               # step functions of the tests travel by reference: importable on the node, as in production
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
        caps = [a for c in capabilities for a in ("--capability", c)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorflow._cli", "worker", "--join", f"127.0.0.1:{self.leader_port}",
             "--port", str(free_port()), *caps, *args],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True,
        )
        self.procs.append((proc, proc.pid))
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the node prints one JSON line once it joined
        assert line, f"the worker node exited with {proc.wait(10)} before joining"
        sid = os.getsid(json.loads(line)["admin_pid"])
        self.procs[-1] = (proc, sid)
        return self.pids(sid)

    @staticmethod
    def pids(sid: int) -> set[int]:
        return {p.pid for p in psutil.process_iter() if session_of(p.pid) == sid} - {os.getpid()}

    def kill(self, sid: int) -> None:
        for pid in self.pids(sid):
            kill(pid)

    def stop_all(self) -> None:
        for proc, sid in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            for pid in self.pids(sid):
                kill(pid)
        left = [pid for _, sid in self.procs for pid in self.pids(sid) if running(pid)]
        assert not left, f"node processes left behind: {left}"


@pytest.fixture
def leader_port() -> int:
    return free_port()


@pytest.fixture
def nodes(tmp_path: Path, leader_port: int) -> Iterator[Nodes]:
    n = Nodes(tmp_path, leader_port)
    try:
        yield n
    finally:
        n.stop_all()
