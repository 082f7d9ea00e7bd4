"""Fixtures for the engine tests: plain-traceback logging, engines that are always closed, helpers."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import actorflow  # noqa: E402
from actorflow import Engine, MockClock  # noqa: E402
from actorflow.testing import memory_engine  # noqa: E402

# structlog's default dev renderer pretty-prints tracebacks with locals (rich), which is very slow on
# the big objects an engine has in its frames; plain tracebacks keep failing-path tests fast.
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
    ],
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=False,
)

TIMEOUT = 20.0  # real seconds any single wait in these tests may take before the test fails


def wait_until(pred: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll `pred` until it is truthy; fail the test after `timeout` real seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def wait_state(engine: Engine, run_id: str, *states: str, timeout: float = TIMEOUT) -> actorflow.RunStatus:
    """Poll `engine.status` until the run is in one of `states` (fails the test on timeout)."""
    wanted = {actorflow.RunState(s) for s in states}
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = engine.status(run_id)
        except actorflow.RunNotFound:  # not created yet (a child run)
            time.sleep(0.002)
            continue
        if st.state in wanted:
            return st
        last = st
        time.sleep(0.002)
    raise AssertionError(f"run {run_id!r} never reached {states}; last status {last}")


class Gate:
    """A threading.Event pair a step can use: `entered` is set when the step starts, it then waits `release`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, value: Any = None) -> Any:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            raise RuntimeError("gate never released")
        return value


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An open in-memory engine with an autojumping MockClock (long sleeps take no real time)."""
    e = memory_engine()
    with e:
        yield e


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Engine]]:
    """Factory of engines (memory by default, or Engine(data_dir=...)); every one is closed at teardown."""
    made: list[Engine] = []

    def make(data_dir: Any = None, *, open: bool = True, **kw: Any) -> Engine:
        if data_dir is None and "journal" not in kw:
            kw.setdefault("clock", MockClock(autojump=True))
            e = memory_engine(**kw)
        else:
            e = Engine(data_dir, **kw)
        made.append(e)
        if open:
            e.open()
        return e

    yield make
    for e in reversed(made):
        e.close(grace=1.0)
