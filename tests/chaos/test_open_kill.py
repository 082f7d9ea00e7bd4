"""kill -9 of a shard process while `Engine.open()` waits for the shards (issue 18: open() failed
with "the engine's shard processes did not start within 60 s"): the supervisor restarts the shard,
open() completes, and runs work. The shard is caught while it unpickles the workflows in its start -
a marker in the workflow's closure writes the loading process's pid and lingers there."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from actorflow import Engine

DEADLINE = 90.0


def _loaded(path: str) -> _Marker:
    """Runs in each process that unpickles the workflow: note the pid, linger for the test's kill."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    return _Marker(path)


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _loaded, (self.path,)


def _pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_shard_killed_during_open_is_restarted_and_open_completes(tmp_path: Path) -> None:
    marks = tmp_path / "loaded.pids"
    marker = _Marker(str(marks))

    async def doubled(ctx: Any, x: int) -> Any:
        assert marker.path  # keeps the marker in the closure: unpickled (and noted) by each shard
        return await ctx.step("double", lambda: x * 2)

    engine = Engine(tmp_path / "data", system="multiproc", shards=1)
    engine.workflow(name="doubled")(doubled)
    failed: list[BaseException] = []

    def opener() -> None:
        try:
            engine.open()
        except BaseException as exc:  # noqa: BLE001 - the test's verdict
            failed.append(exc)

    t = threading.Thread(target=opener, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while not _pids(marks):
            assert time.monotonic() < deadline and t.is_alive(), "no shard loaded the workflows"
            time.sleep(0.01)
        victim = _pids(marks)[0]
        os.kill(victim, signal.SIGKILL)
        t.join(DEADLINE)
        assert not t.is_alive(), "open() did not return"
        assert not failed, f"open() failed after a shard was killed during it: {failed[0]!r}"
        rt: Any = engine._runtime()
        assert rt.shard_pids[0] != victim and _alive(rt.shard_pids[0])
        assert rt.shard_pids[0] in _pids(marks)  # the restarted shard loaded the workflows again
        assert engine.start("doubled", 21).result(timeout=60) == 42
    finally:
        if engine.is_open:
            engine.close()
        t.join(DEADLINE)
    assert not _alive(victim)
