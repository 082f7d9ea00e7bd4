"""Durable sleep and signals: history, virtual time, ordering per name, early signals, timeouts, errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import actorflow
from actorflow import ConfigError, Engine, MockClock, RunFinished, RunNotFound, WaitTimeout

from .conftest import TIMEOUT, FileGate, embedded_only, wait_state, wait_until


def test_sleep_is_durable_and_takes_its_time(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> float:
        t0 = ctx.time()
        await ctx.sleep("hour", 0.1)
        await ctx.sleep("day", dt.timedelta(milliseconds=150))
        await ctx.sleep("zero", 0)
        return ctx.time() - t0

    h = engine.start(wf)
    assert h.result(TIMEOUT) >= 0.25
    hist = h.history()
    timers = [(e.kind, e.name) for e in hist if e.kind.startswith("timer")]
    assert timers == [
        ("timer_started", "hour"),
        ("timer_fired", "hour"),
        ("timer_started", "day"),
        ("timer_fired", "day"),
        ("timer_started", "zero"),
        ("timer_fired", "zero"),
    ]
    started = {e.name: e for e in hist if e.kind == "timer_started"}
    fired = {e.name: e for e in hist if e.kind == "timer_fired"}
    assert started["hour"].data == pytest.approx(started["hour"].at + 0.1, abs=0.005)  # due time journaled
    assert fired["hour"].at >= started["hour"].data
    assert fired["day"].at >= started["day"].at + 0.15
    assert engine.journal.timer_count() == 0  # fired timers leave the index


@embedded_only("MockClock advanced by hand: asleep at 99 s of a 100 s sleep, awake at 100 s")
def test_sleep_state_and_manual_clock(make_engine: Any) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock)

    @engine.workflow()
    async def wf(ctx: Any) -> str:
        await ctx.sleep("nap", 100)
        return "awake"

    h = engine.start(wf)
    wait_state(engine, h.run_id, "sleeping")
    assert engine.journal.timer_count() == 1
    clock.advance(99)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)
    assert h.status().state == actorflow.RunState.SLEEPING
    clock.advance(1)
    assert h.result(TIMEOUT) == "awake"


def test_negative_or_bad_sleep_is_config_error(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> list[str]:
        out = []
        for bad in (-1, dt.timedelta(seconds=-5), "10", float("nan")):
            try:
                await ctx.sleep("bad", bad)
            except ConfigError:
                out.append("config")
        try:
            await ctx.wait_signal("s", timeout=-1)
        except ConfigError:
            out.append("config")
        return out

    assert engine.run(wf, timeout=TIMEOUT) == ["config"] * 5


def test_uncaught_config_error_fails_the_run(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.sleep("bad", -1)

    with pytest.raises(actorflow.WorkflowFailed) as ei:
        engine.run(wf, timeout=TIMEOUT)
    assert isinstance(ei.value.__cause__, ConfigError)


def test_signals_in_order_per_name_sent_before_the_wait(engine: Engine, tmp_path: Any) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        await ctx.step("hold", gate)
        xs = [await ctx.wait_signal("x") for _ in range(3)]
        y = await ctx.wait_signal("y")
        return xs, y

    h = engine.start(wf)
    assert gate.entered.wait(TIMEOUT)  # the run is busy in a step, not waiting
    h.signal("x", 1)
    engine.signal(h.run_id, "y", {"v": "y1"})
    h.signal("x", 2)
    engine.signal(h.run_id, "y", "y2-unused")
    h.signal("x", [3])
    gate.release.set()
    assert h.result(TIMEOUT) == ([1, 2, [3]], {"v": "y1"})
    received = [(e.name, e.data["payload"]) for e in h.history() if e.kind == "signal_received"]
    assert received == [("x", 1), ("x", 2), ("x", [3]), ("y", {"v": "y1"})]


def test_signal_to_waiting_run_and_default_payload(new_engine: Any) -> None:
    engine = new_engine(clock=MockClock())  # no autojump: the wait's timeout must not elapse

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        a = await ctx.wait_signal("go")
        b = await ctx.wait_signal("go", timeout=dt.timedelta(hours=1))
        return a, b

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    h.signal("go")
    wait_until(lambda: any(e.kind == "wait_started" for e in h.history()), what="second wait")
    h.signal("go", "second")
    assert h.result(TIMEOUT) == (None, "second")
    assert engine.journal.timer_count() == 0  # the wait's timeout timer was removed


def test_signal_unknown_and_finished_runs(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> int:
        return 1

    with pytest.raises(RunNotFound) as ei:
        engine.signal("nobody", "x", 1)
    assert ei.value.run_id == "nobody"
    h = engine.start(wf)
    h.result(TIMEOUT)
    with pytest.raises(RunFinished) as ei2:
        h.signal("x", 1)
    assert ei2.value.run_id == h.run_id and ei2.value.state == "completed"


def test_wait_timeout(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.wait_signal("approve", timeout=0.1)
        except WaitTimeout as exc:
            return ("timeout", exc.signal, exc.timeout, exc.run_id)
        return "approved"

    h = engine.start(wf, run_id="wt-1")
    assert h.result(TIMEOUT) == ("timeout", "approve", 0.1, "wt-1")
    kinds = [e.kind for e in h.history()]
    assert "wait_started" in kinds and "wait_timeout" in kinds
    assert issubclass(WaitTimeout, actorflow.ActorflowError)


def test_uncaught_wait_timeout_fails_run(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.wait_signal("approve", timeout=0.05)

    with pytest.raises(actorflow.WorkflowFailed) as ei:
        engine.run(wf, timeout=TIMEOUT)
    assert isinstance(ei.value.__cause__, WaitTimeout)


@embedded_only("MockClock advanced by hand: the signal lands at 59 s of a 60 s timeout")
def test_signal_arriving_before_timeout_wins(make_engine: Any) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.wait_signal("s", timeout=60)

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    clock.advance(59)
    h.signal("s", "just in time")
    assert h.result(TIMEOUT) == "just in time"
    clock.advance(10)  # the cancelled timeout must not disturb anything
    assert [e.kind for e in h.history()].count("wait_timeout") == 0


def test_gather_waits_and_sleeps(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.gather(ctx.wait_signal("a"), ctx.sleep("s", 0.05), ctx.wait_signal("b"))

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting", "sleeping")
    h.signal("b", "B")
    h.signal("a", "A")
    assert h.result(TIMEOUT) == ["A", None, "B"]
