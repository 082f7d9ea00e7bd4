"""Every process an engine starts is gone after close() (issue 18, step workers that "die un-killed"):
the step workers of `step_processes` - including those replaced after a worker was killed by its step
or stopped by a step timeout - and, under multiproc, the Thespian admin, the supervisor, the shards
and their step workers. Checked by PID: each process seen while the engine ran must end within a
deadline after close() returns."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from actorflow import Engine, StepTimeout

DEADLINE = 60.0
GONE_WITHIN = 10.0


def _sleep_forever() -> None:
    time.sleep(10**6)


def _kill_once(path: str) -> int:
    if not os.path.exists(path):
        open(path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


async def busy(ctx: Any, path: str, i: int) -> Any:
    try:
        await ctx.step("hang", _sleep_forever, timeout=0.3)
    except StepTimeout:
        pass
    pid = await ctx.step("kill", lambda: _kill_once(f"{path}-{i}"))
    return await ctx.step("pid", os.getpid), pid


def _stuck(path: str) -> None:
    open(path, "w").close()
    _sleep_forever()


async def stuck(ctx: Any, path: str) -> Any:
    return await ctx.step("stuck", lambda: _stuck(path))


def _tree(root: psutil.Process) -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _left(seen: dict[int, psutil.Process]) -> list[str]:
    """The processes of `seen` still running after GONE_WITHIN (a condition waited on, not a sleep)."""
    def alive(p: psutil.Process) -> bool:
        try:
            return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + GONE_WITHIN
    while True:
        left = [p for p in seen.values() if alive(p)]
        if not left or time.monotonic() > deadline:
            out = []
            for p in left:
                try:
                    out.append(f"{p.pid} {p.cmdline()[:3]}")
                except psutil.NoSuchProcess:
                    pass
            return out
        time.sleep(0.05)


def _run_and_close(engine: Engine, roots: Any, path: Path) -> dict[int, psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    with engine:
        for r in roots():
            seen.update(_tree(r))
            seen.setdefault(r.pid, r)
        results = []
        for i in range(3):  # one at a time: a worker's death breaks its pool, failing siblings in flight too
            h = engine.start(busy, str(path), i)
            deadline = time.monotonic() + DEADLINE
            while not h.status().finished:
                assert time.monotonic() < deadline, "the run did not finish"
                for r in roots():
                    seen.update(_tree(r))  # workers come and go: the replaced ones are noted too
                time.sleep(0.02)
            results.append(h.result(timeout=1))
        assert all(os.getpid() not in r for r in results)  # the steps ran in worker processes
        began = path.with_name("stuck-began")
        engine.start(stuck, str(began))  # inside its step, without a timeout, when close() comes
        deadline = time.monotonic() + DEADLINE
        while not began.exists():
            assert time.monotonic() < deadline, "the stuck step never began"
            time.sleep(0.02)
        for r in roots():
            seen.update(_tree(r))
    seen.pop(os.getpid(), None)
    return seen


def test_step_workers_are_gone_after_close(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", sync=False, step_processes=2, close_grace=0.2)
    engine.workflow(name="busy")(busy)
    engine.workflow(name="stuck")(stuck)
    me = psutil.Process()
    before = set(_tree(me))
    seen = _run_and_close(engine, lambda: [me], tmp_path / "killed")
    seen = {pid: p for pid, p in seen.items() if pid not in before}
    assert len(seen) >= 3, seen  # two workers and at least one replacement were seen
    assert _left(seen) == []


def test_multiproc_processes_are_gone_after_close(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", sync=False, system="multiproc", shards=2, step_processes=1, close_grace=0.2)
    engine.workflow(name="busy")(busy)
    engine.workflow(name="stuck")(stuck)

    def roots() -> list[psutil.Process]:
        rt: Any = engine._runtime()
        pids = [rt.admin_pid, *rt.shard_pids.values()]
        out = []
        for pid in pids:
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return out

    seen = _run_and_close(engine, roots, tmp_path / "killed")
    assert len(seen) >= 5, seen  # admin, supervisor, 2 shards, their step workers
    assert _left(seen) == []
