"""Fault isolation: one run's bad data or bad code never stops the engine or another run.

Each poison below once took the whole engine down (or hung a run forever). For each: the call that
brings it in fails clearly (or only its run is affected), the engine keeps serving other runs, a
reopen of the same data directory works, and a poisoned run shows its evidence in status() and
history().
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest

import actorflow
from actorflow import ConfigError, Engine, PayloadError, RetryPolicy, StepFailed, WorkflowFailed
from actorflow.errors import InvalidRunId
from storage import Event, LmdbJournal, RunRecord

from .conftest import TIMEOUT, Calls, wait_state


def _explode() -> Any:
    raise RuntimeError("Poison cannot be loaded back")


class Poison:
    """Pickles fine; unpickling raises (a class whose loading fails, as after a bad deploy)."""

    def __reduce__(self) -> Any:
        return (_explode, ())


class NeedsTwoArgs(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ takes two arguments)."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}/{b}")


async def ordinary(ctx: Any, i: int) -> int:
    a = await ctx.step("a", lambda: i)
    b = await ctx.step("b", lambda: a + 1)
    return int(b) * 2


def _serves(engine: Engine, n: int = 5) -> None:
    """The engine still completes ordinary workflows."""
    engine.workflow()(ordinary)
    handles = [engine.start(ordinary, i) for i in range(n)]
    assert [h.result(timeout=TIMEOUT) for h in handles] == [(i + 1) * 2 for i in range(n)]


# --- 1. a payload that pickles but cannot be unpickled --------------------------------------------


def test_unloadable_argument_is_refused_before_anything_is_written(tmp_path: Path, new_engine: Any) -> None:
    engine = new_engine(tmp_path / "d", sync=False, open=False)
    engine.workflow()(ordinary)
    with engine:
        with pytest.raises(PayloadError) as ei:
            engine.start(ordinary, Poison(), run_id="poisoned")
        assert "Poison" in str(ei.value) and "cannot be read back" in str(ei.value)
        with pytest.raises(actorflow.RunNotFound):
            engine.status("poisoned")
        with pytest.raises(PayloadError):
            engine.start_many(ordinary, [(1,), (Poison(),)], run_ids=["fine-1", "bad-2"])
        with pytest.raises(actorflow.RunNotFound):
            engine.status("fine-1")  # the whole batch was refused

        async def main() -> None:
            with pytest.raises(PayloadError):
                await engine.astart(ordinary, Poison(), run_id="poisoned-async")

        asyncio.run(main())
        assert engine.runs() == []
        _serves(engine)
    with engine:  # and the directory reopens
        _serves(engine)


def test_unloadable_signal_payload_is_refused_before_anything_is_written(engine: Engine) -> None:
    @engine.workflow()
    async def waits(ctx: Any) -> Any:
        return await ctx.wait_signal("go", timeout=60)

    h = engine.start(waits)
    wait_state(engine, h.run_id, "waiting")
    with pytest.raises(PayloadError) as ei:
        engine.signal(h.run_id, "go", Poison())
    assert "Poison" in str(ei.value)
    engine.signal(h.run_id, "go", "fine")
    assert h.result(timeout=TIMEOUT) == "fine"


def test_unloadable_child_arguments_fail_in_the_parent_only(engine: Engine) -> None:
    engine.workflow()(ordinary)

    @engine.workflow()
    async def parent(ctx: Any) -> Any:
        try:
            await ctx.child(ordinary, Poison())
        except PayloadError as exc:
            return f"refused: {'Poison' in str(exc)}"
        return "started?"

    assert engine.run(parent, timeout=TIMEOUT) == "refused: True"
    assert [r.run_id for r in engine.runs(workflow="ordinary")] == []
    _serves(engine)


def _poisoned_dir(path: Path) -> None:
    """A data directory holding runs whose journals cannot be decoded (written by some other code):
    a run with unloadable arguments, one with a damaged record, one with an unloadable inbox signal."""
    with LmdbJournal(path, sync=False) as j:
        b = j.batch()
        b.create_run(RunRecord("bad-args", "ordinary"), Event(0, "run_started", "ordinary", {"args": (Poison(),)}, 0.0))
        b.create_run(RunRecord("bad-record", "ordinary"), Event(0, "run_started", "ordinary", {"args": (1,)}, 0.0))
        b.append("bad-record", Event(1, "step_completed", "a", 1, 0.0, 0))
        b.create_run(RunRecord("good-old", "ordinary"), Event(0, "run_started", "ordinary", {"args": (20,)}, 0.0))
        b.append("good-old", Event(1, "step_completed", "a", 20, 0.0, 0))
        j.commit(b)
    env = lmdb.open(str(path), max_dbs=16, subdir=True)
    events = env.open_db(b"events")
    key = b"bad-record\x00" + (1).to_bytes(8, "big")
    with env.begin(write=True) as txn:  # flip a byte inside the payload of bad-record's seq 1
        damaged = bytearray(txn.get(key, db=events))
        damaged[-2] ^= 0xFF
        txn.put(key, bytes(damaged), db=events)
    env.close()


def test_a_directory_with_poisoned_runs_opens_serves_and_finishes_old_runs(tmp_path: Path, new_engine: Any) -> None:
    d = tmp_path / "d"
    _poisoned_dir(d)
    for _ in range(2):  # and again after a reopen: still serving, evidence not journaled twice
        engine = new_engine(d, sync=False, open=False)
        engine.workflow()(ordinary)
        with engine:
            assert engine.result("good-old", timeout=TIMEOUT) == 42  # the old healthy run finished
            for rid, cause in (("bad-args", "Poison cannot be loaded back"), ("bad-record", "checksum")):
                st = wait_state(engine, rid, "blocked")
                assert st.error is not None and cause in st.error, st.error
                hist = engine.history(rid)
                blocked = [e for e in hist if e.kind == "run_blocked"]
                assert len(blocked) == 1, hist
                assert cause in blocked[0].data["error"]
            assert [e.kind for e in engine.history("bad-record")][:2] == ["run_started", "undecodable"]
            _serves(engine)
    engine = new_engine(d, sync=False, open=False)
    engine.workflow()(ordinary)
    with engine:  # a quarantined run can be cancelled without running its code
        assert engine.cancel("bad-args") is True
        assert engine.status("bad-args").state == "cancelled"


# --- 2. a step result that pickles but cannot be unpickled ----------------------------------------


def test_unloadable_step_result_fails_the_attempt_and_the_retry_policy_applies(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)

    def poison() -> Any:
        calls.append(1)
        return Poison() if len(calls) < 3 else "third time lucky"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.step("p", poison, retry=RetryPolicy.linear(3, 1.0))

    assert engine.run(wf, timeout=TIMEOUT) == "third time lucky"
    assert len(calls) == 3

    @engine.workflow()
    async def always(ctx: Any) -> Any:
        try:
            await ctx.step("p", Poison)
        except StepFailed as exc:
            return str(exc.__cause__)
        return "?"

    text = engine.run(always, timeout=TIMEOUT)
    assert "Poison" in text and "cannot be read back" in text
    _serves(engine)


def test_unloadable_exception_from_a_step_is_journaled_as_text(tmp_path: Path, new_engine: Any) -> None:
    def boom() -> Any:
        raise NeedsTwoArgs("x", "y")

    engine = new_engine(tmp_path / "d", sync=False, open=False)

    @engine.workflow(name="fails")
    async def fails(ctx: Any) -> Any:
        await ctx.step("boom", boom)

    with engine:
        h = engine.start(fails, run_id="f")
        with pytest.raises(WorkflowFailed) as ei:
            h.result(timeout=TIMEOUT)
        assert "NeedsTwoArgs: x/y" in str(ei.value)
    with engine:  # its journal reads back after a reopen
        with pytest.raises(WorkflowFailed) as ei:
            engine.result("f", timeout=TIMEOUT)
        assert "NeedsTwoArgs: x/y" in str(ei.value)
        assert [e.kind for e in engine.history("f")][-1] == "run_failed"


# --- 3. retry policies that are accepted but invalid ----------------------------------------------


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: RetryPolicy.custom(3, "soon"), "delay_for_attempt"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.exponential(non_retryable=("ValueError",)), "non_retryable"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.exponential(non_retryable=(int,)), "non_retryable"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.exponential(initial_delay=float("nan")), "initial_delay"),
        (lambda: RetryPolicy.exponential(initial_delay=math.inf), "initial_delay"),
        (lambda: RetryPolicy.exponential(max_delay=float("nan")), "max_delay"),
        (lambda: RetryPolicy.exponential(multiplier=float("nan")), "multiplier"),
        (lambda: RetryPolicy.linear(3, -1.0), "delay"),
        (lambda: RetryPolicy.linear(3.5, 1.0), "max_attempts"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.linear(True, 1.0), "max_attempts"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.exponential(max_attempts=0), "max_attempts"),
        (lambda: RetryPolicy.exponential(jitter="yes"), "jitter"),  # type: ignore[arg-type]
    ],
)
def test_invalid_retry_policies_are_refused_at_construction(make: Any, names: str) -> None:
    with pytest.raises(ConfigError) as ei:
        make()
    assert names in str(ei.value)


def test_a_single_exception_type_is_accepted_as_non_retryable() -> None:
    assert RetryPolicy.exponential(non_retryable=ValueError).non_retryable == (ValueError,)  # type: ignore[arg-type]


def test_a_custom_delay_that_misbehaves_fails_the_step_not_the_engine(engine: Engine) -> None:
    def flaky() -> Any:
        raise ValueError("transient")

    outcomes: dict[str, str] = {}
    delays: dict[str, Any] = {
        "garbage": lambda n: "soon",
        "negative": lambda n: -5,
        "nan": lambda n: float("nan"),
        "raises": lambda n: 1 / 0,
        "exits": lambda n: (_ for _ in ()).throw(SystemExit(3)),
    }

    @engine.workflow()
    async def wf(ctx: Any, key: str) -> Any:
        try:
            await ctx.step("s", flaky, retry=RetryPolicy.custom(3, delays[key]))
        except StepFailed as exc:
            return str(exc)
        return "?"

    for key in delays:
        outcomes[key] = engine.run(wf, key, timeout=TIMEOUT)
    for key, text in outcomes.items():
        assert "retry policy" in text and "delay_for_attempt" in text, (key, text)
    _serves(engine)


def test_a_step_given_something_other_than_a_retry_policy_is_a_config_error(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("s", lambda: 1, retry=3)
        except ConfigError as exc:
            return str(exc)
        return "?"

    assert "RetryPolicy" in engine.run(wf, timeout=TIMEOUT)


# --- 4. an async step raising KeyboardInterrupt or SystemExit -------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_async_step_raising_base_exceptions_fails_only_that_step(engine: Engine, exc_type: type) -> None:
    async def bad() -> Any:
        raise exc_type()

    async def good() -> Any:
        await asyncio.sleep(0)
        return "async ok"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("bad", bad)
        except StepFailed as exc:
            return type(exc.__cause__).__name__
        return "?"

    @engine.workflow()
    async def fine(ctx: Any) -> Any:
        return await ctx.step("good", good)

    assert engine.run(wf, timeout=TIMEOUT) == exc_type.__name__
    assert engine.run(fine, timeout=TIMEOUT) == "async ok"  # the async-steps loop is still alive
    assert engine.run(wf, timeout=TIMEOUT) == exc_type.__name__


# --- 5 and 6. run ids that are empty or not strings ----------------------------------------------


BAD_IDS: list[Any] = ["", None, 4.5, b"bytes-id", "a\x00b", "x" * 500]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda b: repr(b)[:12])
def test_bad_run_ids_are_a_clear_value_error_on_every_call(engine: Engine, bad: Any) -> None:
    engine.workflow()(ordinary)

    def calls() -> list[Any]:
        return [
            lambda: engine.status(bad),
            lambda: engine.result(bad, timeout=1),
            lambda: engine.history(bad),
            lambda: engine.cancel(bad),
            lambda: engine.monitor(bad),
            lambda: engine.amonitor(bad),
            lambda: engine.signal(bad, "go", 1),
            lambda: asyncio.run(engine.aresult(bad, timeout=1)),
        ] + ([] if bad is None else [lambda: engine.start(ordinary, 1, run_id=bad)])  # None: a fresh id

    for call in calls():
        with pytest.raises(InvalidRunId) as ei:
            call()
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, actorflow.ActorflowError)
        assert "run id" in str(ei.value)
    with pytest.raises(actorflow.RunNotFound):
        engine.status("well-formed-but-unknown")
    _serves(engine)


# --- the principle: all of the above in one engine, then 100 ordinary workflows ------------------


def test_no_poison_stops_the_engine(tmp_path: Path, new_engine: Any) -> None:
    d = tmp_path / "d"
    _poisoned_dir(d)
    engine = new_engine(d, sync=False, open=False)
    engine.workflow()(ordinary)

    async def async_exit() -> Any:
        raise SystemExit(1)

    @engine.workflow()
    async def poisoned_steps(ctx: Any) -> Any:
        out = []
        for name, fn, retry in (
            ("unloadable", Poison, None),
            ("exits", async_exit, None),
            ("interrupt", lambda: (_ for _ in ()).throw(KeyboardInterrupt()), None),
            ("bad-delay", lambda: 1 / 0, RetryPolicy.custom(2, lambda n: "soon")),
            ("needs-two", lambda: (_ for _ in ()).throw(NeedsTwoArgs(1, 2)), None),
        ):
            try:
                await ctx.step(name, fn, retry=retry)
            except StepFailed:
                out.append(name)
        return out

    with engine:
        for bad in BAD_IDS:
            with pytest.raises(InvalidRunId):
                engine.status(bad)
        with pytest.raises(PayloadError):
            engine.start(ordinary, Poison())
        h = engine.start(poisoned_steps)
        assert h.result(timeout=TIMEOUT) == ["unloadable", "exits", "interrupt", "bad-delay", "needs-two"]
        wait_state(engine, "bad-args", "blocked")
        wait_state(engine, "bad-record", "blocked")
        handles = engine.start_many(ordinary, [(i,) for i in range(100)])
        assert [x.result(timeout=TIMEOUT) for x in handles] == [(i + 1) * 2 for i in range(100)]
        assert threading.active_count() < 80  # no worker thread died and was replaced without bound


# --- the same rigour for every Engine option and ctx argument -------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("data_dir", 42),
        ("system", None),
        ("passivate_after", float("nan")),
        ("passivate_after", -1),
        ("passivate_after", "60"),
        ("sync", "yes"),
        ("shards", 1.5),
        ("shards", 0),
        ("shards", True),
        ("step_threads", 0),
        ("close_grace", math.inf),
        ("close_grace", -0.5),
        ("codec", "yaml"),
        ("max_payload", 0),
        ("max_payload", 1.5),
        ("timer_horizon", 0),
        ("gc_threshold", (1, 2)),
        ("gc_threshold", (0, 1, 1)),
        ("clock", "now"),
        ("journal", {}),
    ],
)
def test_invalid_engine_options_are_a_config_error_naming_them(tmp_path: Path, option: str, value: Any) -> None:
    kw: dict[str, Any] = {"data_dir": tmp_path / "d", option: value}
    with pytest.raises(ConfigError) as ei:
        Engine(**kw)
    assert option in str(ei.value) and ei.value.option == option
    assert not (tmp_path / "d").exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda ctx: ctx.sleep("s", math.inf), "finite"),
        (lambda ctx: ctx.sleep("s", float("nan")), "finite"),
        (lambda ctx: ctx.wait_signal("s", timeout=math.inf), "finite"),
        (lambda ctx: ctx.step("s", lambda: 1, timeout=float("nan")), "finite"),
        (lambda ctx: ctx.step("s", 42), "callable"),
        (lambda ctx: ctx.report_progress(float("nan")), "progress"),
        (lambda ctx: ctx.report_progress(1.5), "progress"),
        (lambda ctx: ctx.child("ordinary", 1, run_id=""), "run id"),
    ],
)
def test_invalid_ctx_arguments_raise_in_the_workflow(engine: Engine, call: Any, what: str) -> None:
    engine.workflow()(ordinary)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            result = call(ctx)
            if hasattr(result, "__await__"):
                await result
        except (ConfigError, ValueError) as exc:
            return str(exc)
        return "accepted?"

    assert what in engine.run(wf, timeout=TIMEOUT)
    _serves(engine)


# --- the mechanism itself: whatever raises while one run is handled stays with that run -----------


def test_a_run_whose_handling_raises_is_quarantined_and_the_engine_carries_on(
    new_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actorflow._core import RunMachine

    original = RunMachine.on_step_result

    def buggy(self: Any, pos: int, attempt: int, ok: bool, payload: Any) -> None:
        if self.run_id == "victim" and pos == 1:
            raise RuntimeError("a bug that only this run's data reaches")
        original(self, pos, attempt, ok, payload)

    monkeypatch.setattr(RunMachine, "on_step_result", buggy)
    engine: Engine = new_engine(workflows=[ordinary])  # opened after the patch: a shard process forks with it
    victim = engine.start(ordinary, 1, run_id="victim")
    others = [engine.start(ordinary, i) for i in range(20)]
    st = wait_state(engine, "victim", "blocked")
    assert st.error is not None and "a bug that only this run's data reaches" in st.error
    kinds = [e.kind for e in victim.history()]
    assert kinds == ["run_started", "step_completed", "run_blocked"], kinds  # step b's result was undone
    assert [h.result(timeout=TIMEOUT) for h in others] == [(i + 1) * 2 for i in range(20)]
    assert engine._rt is not None and engine._rt.fatal is None
    monkeypatch.setattr(RunMachine, "on_step_result", original)
    assert engine.cancel("victim") is True
    with pytest.raises(actorflow.Cancelled):
        victim.result(timeout=TIMEOUT)
