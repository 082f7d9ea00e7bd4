"""Fixtures for the engine tests: plain-traceback logging, engines that are always closed, helpers.

Both actor systems: a test that takes `engine` (or `system`, or `new_engine`) runs once on each of
`embedded` and `multiproc`, unless marked `@embedded_only("why")` (the reason shows in the test's
marker; `pytest -m embedded_only` lists them). Embedded engines are in-memory with an autojumping
MockClock; multiprocess ones are LMDB on the real clock, one per module (`mp_engine`, closed at the
module's end with its processes checked gone by PID), so tests sharing it use distinct run ids.
Steps of a multiprocess engine run in its shard processes: what a test observes of them goes through
files (`FileGate`, `Calls`), which work the same in both systems.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import pickle
import sys
import threading
import time
import uuid
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
SYSTEMS = ("embedded", "multiproc")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "embedded_only(reason): the test is about an embedded-only mechanism (MemoryJournal fault "
        "injection, MockClock semantics, in-process internals); it runs on the embedded system only",
    )


def embedded_only(reason: str) -> pytest.MarkDecorator:
    """Mark a test (or `pytestmark` a module) as embedded-only, saying why."""
    if not reason:
        raise ValueError("embedded_only needs a reason")
    return pytest.mark.embedded_only(reason)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses `system` runs on both systems, except those marked embedded_only."""
    if "system" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("embedded_only")
    if marker is not None and not (marker.args and marker.args[0]):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: embedded_only needs a reason")
    metafunc.parametrize("system", ["embedded"] if marker is not None else list(SYSTEMS), indirect=True)


@pytest.fixture
def system(request: pytest.FixtureRequest) -> str:
    """The actor system this test runs on ("embedded" or "multiproc")."""
    value: str = request.param
    return value


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


class FileFlag:
    """A threading.Event-like flag kept as a file: set in one process, seen in any other."""

    def __init__(self, path: str) -> None:
        self.path = path

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


class Calls:
    """A list that steps append to from any process (one pickled line per value, O_APPEND).

    A module-level one (for module-level workflows) is made without a directory and `reset(tmp_path)`
    by a fixture before the test's engines start their processes (which then inherit the path)."""

    def __init__(self, directory: Path | str | None = None, name: str = "calls") -> None:
        self.name = name
        self.path = ""
        if directory is not None:
            self.reset(directory)

    def reset(self, directory: Path | str) -> None:
        self.path = os.path.join(directory, f"{self.name}-{uuid.uuid4().hex[:8]}.log")

    def append(self, value: Any) -> None:
        if not self.path:
            raise RuntimeError(f"Calls {self.name!r}: reset(directory) it first")
        line = base64.b64encode(pickle.dumps(value)) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def values(self) -> list[Any]:
        try:
            with open(self.path, "rb") as f:
                return [pickle.loads(base64.b64decode(line)) for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    def __len__(self) -> int:
        return len(self.values())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def __getitem__(self, i: Any) -> Any:
        return self.values()[i]

    def __eq__(self, other: object) -> bool:
        return self.values() == (other.values() if isinstance(other, Calls) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Calls({self.values()!r})"


class Tally(Calls):
    """A collections.Counter over any process: `append(key)` counts one, `[key]` reads, == a dict."""

    def __getitem__(self, key: Any) -> int:
        return self.values().count(key)

    def __eq__(self, other: object) -> bool:
        return collections.Counter(self.values()) == (other if isinstance(other, dict) else other)

    __hash__ = None  # type: ignore[assignment]


class FileGate:
    """`Gate` for steps in any process: `entered` is set when the step starts, it then waits `release`;
    `calls` counts the calls. Picklable (paths only), so a workflow closure can carry it."""

    def __init__(self, directory: Path | str, name: str = "gate") -> None:
        base = os.path.join(directory, f"{name}-{uuid.uuid4().hex[:8]}")
        self.entered = FileFlag(base + ".entered")
        self.release = FileFlag(base + ".release")
        self._calls = Calls(directory, f"{name}-calls")

    @property
    def calls(self) -> int:
        return len(self._calls)

    def __call__(self, value: Any = None) -> Any:
        self._calls.append(os.getpid())
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            raise RuntimeError("gate never released")
        return value


def engine_pids(e: Engine) -> list[int]:
    rt: Any = e._actors  # type: ignore[attr-defined]
    if rt is None or not hasattr(rt, "shard_pids"):
        return []
    return [p for p in (*rt.shard_pids.values(), rt.admin_pid) if p is not None]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def close_checked(e: Engine, grace: float = 1.0) -> None:
    """Close `e`; for a multiprocess engine, fail unless every process it started is gone."""
    pids = engine_pids(e)
    e.close(grace=grace)
    left = [p for p in pids if alive(p)]
    assert left == [], f"engine processes left behind: {left}"


def _mp(data_dir: Path | str, **kw: Any) -> Engine:
    kw.pop("clock", None)  # multiproc runs on the real clock
    kw.setdefault("sync", False)  # a test engine needs no fsync (crash tests open their own)
    return Engine(data_dir, system="multiproc", **kw)


@pytest.fixture(scope="module")
def mp_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One open multiprocess engine per test module (its processes take ~0.5 s to start)."""
    e = _mp(tmp_path_factory.mktemp("mp") / "data")
    e.open()
    yield e
    close_checked(e)


@pytest.fixture
def engine(system: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An open engine on `system`: in-memory with an autojumping MockClock (long sleeps take no real
    time) when embedded; the module's shared multiprocess engine (real clock) when multiproc."""
    if system == "multiproc":
        yield request.getfixturevalue("mp_engine")
        return
    e = memory_engine()
    with e:
        yield e


@pytest.fixture
def new_engine(system: str, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Factory of engines of their own on `system` (closed and, multiproc, checked gone at teardown).

    embedded: in-memory with an autojumping MockClock unless a data_dir or journal is given;
    multiproc: LMDB in `data_dir` (default: a fresh directory under tmp_path), real clock (a given
    `clock` is dropped). `workflows` are registered before open."""
    made: list[Engine] = []
    n = [0]

    def make(data_dir: Any = None, *, open: bool = True, workflows: Any = (), **kw: Any) -> Engine:
        if system == "multiproc":
            if data_dir is None:
                n[0] += 1
                data_dir = tmp_path / f"mp-{n[0]}"
            e = _mp(data_dir, **kw)
        elif data_dir is None and "journal" not in kw:
            kw.setdefault("clock", MockClock(autojump=True))
            e = memory_engine(**kw)
        else:
            e = Engine(data_dir, **kw)
        for wf in workflows:
            e.workflow()(wf)
        made.append(e)
        if open:
            e.open()
        return e

    yield make
    for e in reversed(made):
        close_checked(e)


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


from _node_cluster import leader_port, nodes  # noqa: E402,F401 - fixtures of the node tests
