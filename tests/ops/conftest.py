"""Helpers for the operator tests: the real `actorflow` entry point in a subprocess, and a live
engine holding a data directory in another process (stopped by its PID at the end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def actorflow_cli(*args: str, data_dir: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (the same `main` the `actorflow` command runs)."""
    exe = Path(sys.executable).with_name("actorflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "actorflow._cli"]
    if data_dir is not None:
        args = (*args, "--data-dir", str(data_dir))
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    env.pop("ACTORFLOW_DATA_DIR", None)
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class LiveEngine:
    def __init__(self, data_dir: Path, *extra: str, version: str = "v1") -> None:
        env = {**os.environ, "APP_VERSION": version, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "live_engine.py"), str(data_dir), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise AssertionError(f"live engine did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def live_engine(tmp_path: Path) -> Iterator[Any]:
    started: list[LiveEngine] = []

    def start(data_dir: Path, *extra: str, version: str = "v1") -> LiveEngine:
        eng = LiveEngine(data_dir, *extra, version=version)
        started.append(eng)
        return eng

    yield start
    for eng in started:
        eng.stop()


def calls(data_dir: Path) -> list[tuple[str, str]]:
    path = data_dir / "calls.log"
    if not path.exists():
        return []
    return [(line.split()[1], line.split()[2]) for line in path.read_text().splitlines()]
