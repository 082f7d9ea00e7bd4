"""Bad input: unpicklable or oversized arguments, step results, workflow results and signal payloads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import actorflow
from actorflow import Engine, PayloadError, StepFailed, WorkflowFailed

from .conftest import TIMEOUT, Calls, wait_state


def test_unpicklable_argument_is_refused_before_anything_is_written(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any, x: Any) -> Any:
        return 1

    before = {r.run_id for r in engine.runs()}
    with pytest.raises(PayloadError) as ei:
        engine.start(wf, threading.Lock(), run_id="bad-arg")
    assert "lock" in str(ei.value).lower()
    assert {r.run_id for r in engine.runs()} == before
    with pytest.raises(actorflow.RunNotFound):
        engine.status("bad-arg")
    with pytest.raises(PayloadError):
        engine.start_many(wf, [(1,), (threading.Lock(),)], run_ids=["ok-1", "bad-2"])
    assert {r.run_id for r in engine.runs()} == before  # the whole batch was refused
    with pytest.raises(PayloadError):
        engine.run(wf, threading.Lock())

    import asyncio

    async def main() -> None:
        with pytest.raises(PayloadError):
            await engine.astart(wf, threading.Lock())

    asyncio.run(main())
    assert {r.run_id for r in engine.runs()} == before
    assert engine.run(wf, "fine", timeout=TIMEOUT) == 1  # the engine is unharmed


def test_unpicklable_step_result_fails_the_step(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)

    def make_lock() -> Any:
        calls.append(1)
        return threading.Lock()

    @engine.workflow()
    async def wf(ctx: Any, retry: actorflow.RetryPolicy) -> Any:
        try:
            await ctx.step("lock", make_lock, retry=retry)
        except StepFailed as exc:
            return type(exc.__cause__).__name__, "lock" in str(exc.__cause__).lower(), exc.attempts
        return "journaled?"

    # a failed attempt like any other: the retry policy applies (a result may fit next time) ...
    h = engine.start(wf, actorflow.RetryPolicy.linear(3, 0.01))
    assert h.result(TIMEOUT) == ("PayloadError", True, 3)
    assert calls == [1, 1, 1]
    assert "step_completed" not in [e.kind for e in h.history()]
    # ... and PayloadError can be made non-retryable
    calls.clear()
    h = engine.start(wf, actorflow.RetryPolicy.linear(3, 0.01, non_retryable=(PayloadError,)))
    assert h.result(TIMEOUT) == ("PayloadError", True, 1)
    assert calls == [1]


def test_unpicklable_workflow_result_fails_the_run(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return threading.Lock()

    h = engine.start(wf)
    with pytest.raises(WorkflowFailed) as ei:
        h.result(TIMEOUT)
    assert isinstance(ei.value.__cause__, PayloadError)
    assert h.status().state == actorflow.RunState.FAILED
    assert h.history()[-1].kind == "run_failed"


def test_unpicklable_signal_payload(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.wait_signal("s")

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    with pytest.raises(PayloadError):
        h.signal("s", threading.Lock())
    h.signal("s", "ok")
    assert h.result(TIMEOUT) == "ok"


def test_oversized_payloads(new_engine: Any) -> None:
    engine = new_engine(max_payload=10_000, open=False)

    @engine.workflow()
    async def wf(ctx: Any, x: Any) -> Any:
        try:
            await ctx.step("big", lambda: "y" * 50_000)
        except StepFailed as exc:
            assert isinstance(exc.__cause__, PayloadError)
        got = await ctx.wait_signal("s")
        return len(got)

    with engine:
        with pytest.raises(PayloadError) as ei:
            engine.start(wf, b"x" * 20_000)
        assert ei.value.size > ei.value.limit == 10_000
        assert engine.runs() == []
        h = engine.start(wf, b"x" * 100)
        wait_state(engine, h.run_id, "waiting")
        with pytest.raises(PayloadError):
            h.signal("s", "z" * 20_000)
        h.signal("s", "z" * 100)
        assert h.result(TIMEOUT) == 100


def test_oversized_workflow_result(new_engine: Any) -> None:
    engine = new_engine(max_payload=10_000, open=False)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return list(range(100_000))

    with engine:
        with pytest.raises(WorkflowFailed) as ei:
            engine.run(wf, timeout=TIMEOUT)
        assert isinstance(ei.value.__cause__, PayloadError)


def test_codec_settings_that_contradict_a_given_journal_are_refused() -> None:
    from actorflow import ConfigError, Engine
    from storage import Codec, MemoryJournal

    with pytest.raises(ConfigError, match="journal's Codec"):
        Engine(None, journal=MemoryJournal(), max_payload=1024)
    with pytest.raises(ConfigError, match="journal's Codec"):
        Engine(None, journal=MemoryJournal(), codec="json")
    Engine(None, journal=MemoryJournal(codec=Codec("json", 1024)), codec="json", max_payload=1024)  # consistent
