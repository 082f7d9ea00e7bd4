"""Two admins on loopback as a Thespian convention: `actorflow worker --join` registers a member, the
leader's actors see it join and leave (notifyOnSystemRegistrationChanges), and actors that need the
worker capability are placed in the worker's processes. Frames between the admins are authenticated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from net_actors import ConventionWatcher, WhereAmI
from net_util import HERE, free_port

from actorflow._net import SecureActorSystem

SECRET = "convention-secret-0123456789abcdef"


def _until(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value!r}")
        time.sleep(0.05)


def test_worker_joins_and_leaves_the_convention(
    open_system: Callable[..., SecureActorSystem], tmp_path: Path
) -> None:
    leader = open_system(secret=SECRET)
    watcher = leader.create_actor(ConventionWatcher)
    assert leader.ask(watcher, "watch", 10) == "watching"
    port = free_port()
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "wrun"),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [sys.executable, "-c", "import sys; from actorflow._cli import main; sys.exit(main())",
         "worker", "--join", f"127.0.0.1:{leader.admin_port}", "--port", str(port)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    worker_pids: set[int] = set()
    try:
        assert worker.stdout is not None
        joined = json.loads(worker.stdout.readline())
        assert joined["joined"] == f"127.0.0.1:{leader.admin_port}"
        worker_admin = joined["admin_pid"]
        events = _until(lambda: leader.ask(watcher, "members", 10), bool, "the member to register")
        caps = events[0][1]
        assert events[0][0].endswith(f":{port})") and caps["actorflow.worker"] is True
        # what engine.workers() shows of the node: the `actorflow worker` process, its host, its start
        assert caps["actorflow.pid"] == worker.pid and set(caps) == {"actorflow.worker", "actorflow.pid", "actorflow.host",
                                                                      "actorflow.started_at"}
        assert events[0][2] is True
        assert any(m.endswith(f":{port})") for m in leader.status()["convention_members"])

        placed = leader.create_actor(WhereAmI)  # only the worker has the capability
        pid, _ = leader.ask(placed, "where", 10)
        worker_pids = {p.pid for p in psutil.process_iter() if _session(p.pid) == _session(worker_admin)}
        assert pid in worker_pids and worker_admin in worker_pids and pid not in leader.pids()

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        stopped = json.loads(worker.stdout.readline())
        assert set(stopped["ended"]) | set(stopped["killed"]) >= worker_pids
        _until(lambda: leader.ask(watcher, "members", 10), lambda ev: len(ev) >= 2, "the member to leave")
        assert leader.ask(watcher, "members", 10)[-1][2] is False
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        for p in worker_pids:
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                os.kill(p, signal.SIGKILL)
    assert not [p for p in worker_pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
