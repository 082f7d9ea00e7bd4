"""Hostile and bad input (issue 18 item 5): each is a clear error at the call and loses nothing -
fuzzed with hypothesis where the input has a shape to fuzz.

- run ids: any value; a usable one starts exactly that run, anything else (empty, NUL, a lone
  surrogate, over 400 bytes, not a str) is InvalidRunId before anything is written;
- payloads (arguments, signal payloads): anything picklable that loads back round-trips, the rest
  (over the limit, unpicklable, too deep) is PayloadError before anything is written;
- durations and progress: NaN, infinities, negatives, wrong types are a ConfigError inside the
  workflow (catchable there), finite values work; task delays likewise at enqueue;
- two engines on one data directory in one process; a data directory that is a file, under a
  file, or on a read-only file system;
- concurrent start of one run id from many threads: exactly one run, one execution of its step.

Garbage, crafted pickles and wrong-HMAC frames on every port: tests/engine/test_multiproc_security.py
and tests/net/.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import ConfigError, Engine, InvalidRunId, PayloadError, StorageError
from actorflow.testing import MockClock, memory_engine

TIMEOUT = 30.0
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def lmdb_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(tmp_path_factory.mktemp("hostile") / "data", sync=False)

    @engine.workflow(name="echo")
    async def echo(ctx: Any, x: Any) -> Any:
        return x

    @engine.workflow(name="inbox")
    async def inbox(ctx: Any) -> Any:
        return await ctx.wait_signal("in", timeout=TIMEOUT)

    with engine:
        yield engine


def _runs(engine: Engine) -> int:
    return engine._runtime().journal.run_counts()[0]


def _usable(run_id: Any) -> bool:
    if not isinstance(run_id, str) or not run_id or "\x00" in run_id:
        return False
    try:
        return len(run_id.encode()) <= 400
    except UnicodeEncodeError:
        return False


RUN_IDS = st.one_of(
    st.text(max_size=20),
    st.text(min_size=380, max_size=420),  # around the 400-byte limit
    st.text(alphabet=st.characters(codec=None), max_size=5),  # lone surrogates included
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 401, "é" * 200, "é" * 201]),
    st.binary(max_size=10),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.text(max_size=3), max_size=2),
)


@FUZZ
@given(run_id=RUN_IDS)
def test_any_run_id_starts_that_run_or_is_refused_before_writing(lmdb_engine: Engine, run_id: Any) -> None:
    before = _runs(lmdb_engine)
    if not _usable(run_id):
        with pytest.raises(InvalidRunId):
            lmdb_engine.start("echo", "x", run_id=run_id)
        assert _runs(lmdb_engine) == before
        with pytest.raises(InvalidRunId):
            lmdb_engine.signal(run_id, "in", 1)
        return
    h = lmdb_engine.start("echo", run_id, run_id=run_id)
    assert h.run_id == run_id and h.result(timeout=TIMEOUT) == run_id
    assert lmdb_engine.status(run_id).run_id == run_id
    assert _runs(lmdb_engine) in (before, before + 1)  # +0: the same id again returns that run


class Unloadable:
    """Pickles, but does not load back."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("no")


def _deep(n: int) -> Any:
    out: Any = []
    for _ in range(n):
        out = [out]
    return out


PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
              st.binary(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4),
                            st.frozensets(st.integers(), max_size=4)),
    max_leaves=12,
)
HOSTILE = st.sampled_from(["lock", "unloadable", "deep", "big", "generator", "module"])


def _hostile(kind: str) -> Any:
    return {
        "lock": lambda: threading.Lock(),
        "unloadable": lambda: {"ok": 1, "bad": Unloadable()},
        "deep": lambda: _deep(50_000),
        "big": lambda: "x" * 30_000,  # the engine below allows 20,000 bytes
        "generator": lambda: (i for i in range(3)),
        "module": lambda: os,
    }[kind]()


@pytest.fixture(scope="module")
def mem_engine() -> Iterator[Engine]:
    # a clock that does not jump: with autojump, an idle engine jumps to the inbox's 3600 s timeout
    # whenever this thread pauses between start and signal, and the waiter fails (flaky under load)
    engine = memory_engine(MockClock(), max_payload=20_000)

    @engine.workflow(name="echo")
    async def echo(ctx: Any, x: Any) -> Any:
        return x

    @engine.workflow(name="inbox")
    async def inbox(ctx: Any) -> Any:
        return await ctx.wait_signal("in", timeout=3600)

    with engine:
        yield engine


@FUZZ
@given(value=st.one_of(PLAIN, HOSTILE.map(_hostile)))
def test_any_payload_round_trips_or_is_refused_before_writing(mem_engine: Engine, value: Any) -> None:
    before = _runs(mem_engine)
    try:
        h = mem_engine.start("echo", value)
    except PayloadError as exc:
        assert exc.evidence.get("type_name"), exc  # names what it could not keep
        assert _runs(mem_engine) == before
    else:
        assert h.result(timeout=TIMEOUT) == value
    waiter = mem_engine.start("inbox")
    try:
        mem_engine.signal(waiter.run_id, "in", value)
    except PayloadError:
        assert mem_engine._runtime().journal.signals(waiter.run_id) == []  # nothing queued
        mem_engine.signal(waiter.run_id, "in", "fallback")
        assert waiter.result(timeout=TIMEOUT) == "fallback"
    else:
        assert waiter.result(timeout=TIMEOUT) == value


# durations: up to 1e10 s (about 317 years) they are used; beyond it they are refused (a MockClock
# that jumped to 1e20 left the timer window stuck: now + horizon == now in floating point)
DURATIONS = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9),
    st.integers(min_value=-10**6, max_value=10**6),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1e-9, 1e-300, "5", None, True, b"1", [1],
                     1e10, 1e10 + 1e4, 1e20, 10**30]),
)


def _finite_non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1e10


@pytest.fixture(scope="module")
def clock_engine() -> Iterator[Engine]:
    engine = memory_engine()  # MockClock(autojump): a year-long sleep takes no time

    @engine.workflow(name="uses")
    async def uses(ctx: Any, what: str, v: Any) -> str:
        try:
            if what == "sleep":
                await ctx.sleep("s", v)
            elif what == "wait":
                await ctx.wait_signal("never", timeout=v)
            elif what == "step":
                await ctx.step("s", lambda: 1, timeout=v)
            else:
                ctx.report_progress(v)
        except ConfigError as exc:
            return f"refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - the wait timing out is an answer too
            return f"{type(exc).__name__}"
        return "ok"

    with engine:
        yield engine


@FUZZ
@given(what=st.sampled_from(["sleep", "wait", "step", "progress"]), v=DURATIONS)
def test_any_duration_or_progress_is_used_or_refused_in_the_workflow(clock_engine: Engine, what: str, v: Any) -> None:
    if what == "wait" and v is None:
        return  # no timeout: it would wait for a signal that never comes (nothing to check)
    got = clock_engine.run("uses", what, v, timeout=TIMEOUT)
    if what == "progress":  # a fraction (a bool counts as 0 or 1, as in Python arithmetic)
        ok = isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1
    elif what == "step":
        ok = v is None or (_finite_non_negative(v) and v > 0)
    elif what == "wait":
        ok = _finite_non_negative(v)
    else:
        ok = _finite_non_negative(v)
    if ok:
        assert not got.startswith("refused"), (what, v, got)
        assert got in ("ok", "WaitTimeout", "StepTimeout"), (what, v, got)  # a tiny timeout may fire
    else:
        assert got.startswith("refused"), (what, v, got)


@FUZZ
@given(delay=DURATIONS)
def test_task_delays_are_used_or_refused_at_enqueue(delay: Any) -> None:
    engine = memory_engine()

    @engine.task(name="t")
    def t(ctx: Any, input: dict[str, Any]) -> int:
        return 1

    with engine:
        before = _runs(engine)
        if delay is None or _finite_non_negative(delay):
            engine.enqueue("t", {}, delay=delay)
        else:
            with pytest.raises(ConfigError, match="delay"):
                engine.enqueue("t", {}, delay=delay)
            assert _runs(engine) == before


def test_concurrent_start_of_one_run_id_makes_exactly_one_run(tmp_path: Path) -> None:
    calls: list[int] = []
    engine = Engine(tmp_path, sync=False)

    @engine.workflow(name="once")
    async def once(ctx: Any) -> str:
        await ctx.step("side-effect", lambda: calls.append(1))
        return ctx.run_id

    with engine:
        for attempt in range(5):
            run_id = f"the-one-{attempt}"
            barrier = threading.Barrier(16)
            handles: list[Any] = []
            errors: list[BaseException] = []

            def go(rid: str = run_id, b: threading.Barrier = barrier, hs: list[Any] = handles,
                   errs: list[BaseException] = errors) -> None:
                b.wait()
                try:
                    hs.append(engine.start(once, run_id=rid))
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errs.append(exc)

            threads = [threading.Thread(target=go) for _ in range(16)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(TIMEOUT)
            assert not errors, errors
            assert {h.run_id for h in handles} == {run_id} and len(handles) == 16
            assert all(h.result(timeout=TIMEOUT) == run_id for h in handles)
        assert len(calls) == 5  # one run, one execution of its step, per id
        assert _runs(engine) == 5
        assert [e.kind for e in engine.history("the-one-0")].count("run_started") == 1


def test_two_engines_on_one_data_dir_in_one_process(tmp_path: Path) -> None:
    first = Engine(tmp_path, sync=False)
    second = Engine(tmp_path, sync=False)
    for e in (first, second):
        e.workflow(name="echo")(_echo)
    with first:
        with pytest.raises(ConfigError, match="already runs on"):
            second.open()
        assert first.run("echo", 1, timeout=TIMEOUT) == 1  # the first is unharmed
    with second:  # and the directory is free once the first closed
        assert second.run("echo", 2, timeout=TIMEOUT) == 2


async def _echo(ctx: Any, x: Any) -> Any:
    return x


def test_data_dir_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    for bad in (f, f / "sub"):
        engine = Engine(bad)
        engine.workflow(name="echo")(_echo)
        with pytest.raises(ConfigError, match="not a directory"):
            engine.open()
    assert f.read_text() == "not a directory"


@pytest.fixture
def read_only_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"ro-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_data_dir_on_a_read_only_file_system(read_only_fs: Path) -> None:
    engine = Engine(read_only_fs / "data")
    engine.workflow(name="echo")(_echo)
    with pytest.raises(StorageError, match="Read-only file system") as info:
        engine.open()
    assert info.value.evidence["path"] == str(read_only_fs / "data")


_HOLDER = """
import sys
from actorflow import Engine
engine = Engine(sys.argv[1], sync=False)
with engine:
    print("open", flush=True)
    sys.stdin.read()
"""


def test_two_engines_on_one_data_dir_in_two_processes(tmp_path: Path) -> None:
    """The second process's open() is refused naming the holder's pid; the holder's journal is
    untouched; once the holder exits (even by kill -9) the directory opens again."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        second = Engine(tmp_path, sync=False)
        second.workflow(name="echo")(_echo)
        with pytest.raises(ConfigError, match=f"another engine \\(pid {holder.pid}\\) already runs on"):
            second.open()
        assert not second.is_open
        holder.kill()  # the kernel releases the lock of a killed holder
        holder.wait(30)
        with second:
            assert second.run("echo", 3, timeout=TIMEOUT) == 3
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
