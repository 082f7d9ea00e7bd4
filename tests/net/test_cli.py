"""`actorflow admin start|status|stop` as a user runs them: the admin outlives `start`, `stop` leaves no PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from net_util import free_port


def _cli(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from actorflow._cli import main; sys.exit(main())", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def _live(pids: set[int]) -> set[int]:
    return {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}


def test_admin_start_status_stop_leaves_no_process(tmp_path: Path) -> None:
    env = {**os.environ, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("ACTORFLOW_SECRET", None)
    port = str(free_port())
    rc, started = _cli("admin", "start", "--port", port, env=env)
    pids = set(started["pids"])
    try:
        assert rc == 0 and started["admin"] == f"127.0.0.1:{port}"
        assert _live(pids) == pids and started["admin_pid"] in pids  # outlived `admin start`
        rc, status = _cli("admin", "status", "--port", port, env=env)
        assert rc == 0 and status["running"] and status["admin_pid"] == started["admin_pid"]
        assert all(addr.startswith("127.0.0.1:") for addrs in status["listening"].values() for addr in addrs)
        again = subprocess.run(
            [sys.executable, "-c", "import sys; from actorflow._cli import main; sys.exit(main())",
             "admin", "start", "--port", port], capture_output=True, text=True, env=env, timeout=60,
        )
        assert again.returncode == 1 and "already in use" in again.stderr
        rc, stopped = _cli("admin", "stop", "--port", port, env=env)
        assert rc == 0 and stopped["stopped"] and set(stopped["ended"]) | set(stopped["killed"]) >= pids
    finally:
        for pid in _live(pids):  # only if the test failed half-way
            os.kill(pid, 9)
    assert _live(pids) == set()
    rc, status = _cli("admin", "status", "--port", port, env=env)
    assert rc == 3 and status == {"running": False, "port": int(port)}
    assert not (tmp_path / "run" / f"admin-{port}.json").exists()


@pytest.mark.slow  # Thespian retries the unanswered (wrong-key) handshake for ~15 s first
def test_admin_stop_by_pid_when_the_key_is_lost(tmp_path: Path) -> None:
    env = {**os.environ, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("ACTORFLOW_SECRET", None)
    port = str(free_port())
    _, started = _cli("admin", "start", "--port", port, env=env)
    pids = set(started["pids"])
    try:
        record = tmp_path / "run" / f"admin-{port}.json"
        data = json.loads(record.read_text())
        data["key"] = "00" * 32  # not the admin's key any more
        record.write_text(json.dumps(data))
        rc, stopped = _cli("admin", "stop", "--port", port, env=env)
        assert rc == 0 and stopped["by"] == "signal"
    finally:
        for pid in _live(pids):
            os.kill(pid, 9)
    assert _live(pids) == set()
