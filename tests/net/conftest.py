"""Fixtures: a real secured admin on a free port, its log file, and a check that nothing outlives it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from net_util import free_port  # noqa: E402

from actorflow._net import SecureActorSystem, open_actor_system  # noqa: E402


def log_config(path: Path) -> dict[str, Any]:
    """Thespian's logger process writes warnings (our rejections among them) to `path`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "level": "WARNING"}},
        "root": {"level": "WARNING", "handlers": ["file"]},
    }


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "run"
    monkeypatch.setenv("ACTORFLOW_RUNTIME_DIR", str(d))
    monkeypatch.delenv("ACTORFLOW_SECRET", raising=False)
    return d


@pytest.fixture
def open_system(runtime: Path, tmp_path: Path) -> Iterator[Callable[..., SecureActorSystem]]:
    """Opens systems on free ports; each is shut down after the test and must leave no process."""
    systems: list[SecureActorSystem] = []

    def opener(**kw: Any) -> SecureActorSystem:
        kw.setdefault("admin_port", free_port())
        kw.setdefault("log_config", log_config(tmp_path / "net.log"))
        kw.setdefault("secret", None)
        system = open_actor_system(**kw)
        systems.append(system)
        return system

    yield opener
    seen: set[int] = set()
    for system in reversed(systems):
        seen |= system.pids()
        system.shutdown()
    left = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    for pid in left:  # a failing test must not leak processes into the next ones
        os.kill(pid, signal.SIGKILL)
    assert not left
