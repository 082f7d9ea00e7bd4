"""Steps placed on a member node: the engine's admin leads a convention, `actorflow worker --join`
adds a node advertising `actorflow.worker`, and with `step_requirements={"actorflow.worker": True}`
every step runs in that node's processes (two admins on loopback ports stand for two machines).
Killing the node's step actor mid-run: its steps run again on a new one; all results are right."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from actorflow import Engine

SECRET = "nodes-test-secret-0123456789abcdef"
TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _where(i: int) -> tuple[int, int]:
    time.sleep(0.01)
    return i, os.getpid()


async def placed(ctx: Any, i: int) -> Any:
    a = await ctx.step("a", lambda: _where(i))
    b = await ctx.step("b", lambda: _where(a[0] + 1))
    return b[0], {a[1], b[1]}


def test_steps_run_on_the_member_node(tmp_path: Path) -> None:
    port, worker_port = _free_port(), _free_port()
    engine = Engine(
        tmp_path / "data",
        system="multiproc",
        admin_port=port,
        secret=SECRET,
        step_requirements={"actorflow.worker": True},
    )
    engine.workflow()(placed)
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "wrun"),
           # the step functions are this module's (by reference): importable on the node, as in production
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    worker: subprocess.Popen[str] | None = None
    node: set[int] = set()
    try:
        with engine:
            worker = subprocess.Popen(
                [sys.executable, "-m", "actorflow._cli", "worker", "--join", f"127.0.0.1:{port}",
                 "--port", str(worker_port)],
                stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            )
            assert worker.stdout is not None
            joined = json.loads(worker.stdout.readline())
            worker_sid = os.getsid(joined["admin_pid"])
            handles = engine.start_many(placed, [(i,) for i in range(40)])
            results = [h.result(timeout=TIMEOUT) for h in handles]
            assert [r[0] for r in results] == [i + 1 for i in range(40)]
            pids = set().union(*(r[1] for r in results))
            node = {p.pid for p in psutil.process_iter() if _sid(p.pid) == worker_sid}
            assert pids and pids <= node  # every step ran in the member node's processes
            rt: Any = engine._runtime()
            assert not pids & (rt._system.pids() | {os.getpid()})

            # the node's step actor dies mid-run: its steps go to a new one
            slow = engine.start_many(placed, [(100 + i,) for i in range(40)])
            os.kill(next(iter(pids)), signal.SIGKILL)
            assert [h.result(timeout=TIMEOUT)[0] for h in slow] == [101 + i for i in range(40)]
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        for pid in node:
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                os.kill(pid, signal.SIGKILL)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
