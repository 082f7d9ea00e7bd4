"""Build item 4 of issue 12: a workflow that a shard process cannot load fails `open()` with a
ConfigError naming it, and the engine leaves no process behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigError, Engine
from actorflow._multiproc import MultiprocRuntime

from .conftest import alive


def _explode() -> Any:
    raise RuntimeError("this workflow's code cannot be loaded here")


class Unloadable:
    """Pickles fine in the engine's process; loading it in a shard process raises (a bad deploy)."""

    def __reduce__(self) -> Any:
        return (_explode, ())


def test_a_workflow_a_shard_cannot_load_fails_open_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = Unloadable()
    started: list[Any] = []  # the engine's multiprocess runtime, to check its processes by PID
    real_start = MultiprocRuntime.start

    def start(self: Any) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(MultiprocRuntime, "start", start)

    async def broken_deploy(ctx: Any) -> Any:
        return marker  # the closure carries it to the shard processes

    engine = Engine(tmp_path / "data", system="multiproc", shards=2, sync=False)
    engine.workflow()(broken_deploy)
    with pytest.raises(ConfigError, match="broken_deploy") as ei:
        engine.open()
    assert "cannot be loaded in the engine's processes" in str(ei.value)
    assert "this workflow's code cannot be loaded here" in str(ei.value)
    (rt,) = started
    pids = [*rt.shard_pids.values(), rt.admin_pid]
    assert len(pids) == 3 and all(p is not None for p in pids)  # both shards answered, then open failed
    assert not [p for p in pids if alive(p)], "processes left behind by a failed open"
    engine.close()
