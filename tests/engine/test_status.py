"""status(), monitor()/amonitor(), history(), runs(), and RunNotFound for unknown ids."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

import actorflow
from actorflow import Engine, MockClock, RunNotFound, RunState, RunStatus

from .conftest import TIMEOUT, FileGate, wait_state, wait_until


def test_status_fields(engine: Engine) -> None:
    before = engine.clock.now()

    @engine.workflow()
    async def wf(ctx: Any) -> str:
        ctx.report_progress(0.25)
        await ctx.wait_signal("go")
        return "ok"

    h = engine.start(wf, run_id="st-1")
    st = wait_state(engine, "st-1", "waiting")
    assert isinstance(st, RunStatus)
    assert st.run_id == "st-1" and st.workflow == wf.__qualname__
    assert st.state == RunState.WAITING and st.state == "waiting"
    assert st.progress == 0.25
    assert before <= st.created_at <= engine.clock.now()
    assert st.updated_at >= st.created_at
    assert st.error is None
    assert not st.finished
    h.signal("go")
    assert h.result(TIMEOUT) == "ok"
    done = h.status()
    assert done.state == RunState.COMPLETED and done.progress == 1.0 and done.finished
    assert done.created_at == st.created_at and st.updated_at <= done.updated_at <= engine.clock.now()
    assert json.loads(json.dumps(done.to_dict()))["state"] == "completed"


def test_report_progress_validation(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> int:
        bad = 0
        for value in (-0.1, 1.5, "half"):
            try:
                ctx.report_progress(value)
            except actorflow.ConfigError:
                bad += 1
        return bad

    assert engine.run(wf, timeout=TIMEOUT) == 3


def _collect(it: Any, out: list[RunStatus], done: threading.Event) -> None:
    try:
        for st in it:
            out.append(st)
    finally:
        done.set()


def test_monitor_yields_current_then_changes_until_completed(engine: Engine, tmp_path: Any) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> str:
        await ctx.wait_signal("go")
        ctx.report_progress(0.5)
        await ctx.step("work", gate)
        ctx.report_progress(0.9)
        await ctx.wait_signal("finish")
        return "done"

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    seen: list[RunStatus] = []  # the monitor runs in this process
    done = threading.Event()
    it = engine.monitor(h.run_id, timeout=TIMEOUT)
    t = threading.Thread(target=_collect, args=(it, seen, done))
    t.start()
    wait_until(lambda: seen, what="the monitor's first status")  # it starts when the thread first iterates
    h.signal("go")
    assert gate.entered.wait(TIMEOUT)
    gate.release.set()
    wait_state(engine, h.run_id, "waiting")  # second wait (progress 0.9 reported before it)
    h.signal("finish")
    assert done.wait(TIMEOUT)
    t.join(TIMEOUT)
    assert seen[0].state == RunState.WAITING and seen[0].progress == 0.0
    assert seen[-1].state == RunState.COMPLETED and seen[-1].progress == 1.0
    pairs = [(s.state.value, s.progress) for s in seen]
    assert ("running", 0.5) in pairs
    assert any(p == 0.9 for _, p in pairs)
    # every yielded status differs from the previous one, and time does not go back
    assert all(a != b for a, b in zip(pairs, pairs[1:]))
    assert all(a.updated_at <= b.updated_at for a, b in zip(seen, seen[1:]))


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_monitor_ends_at_failed_or_cancelled(engine: Engine, end: str) -> None:
    @engine.workflow(name=f"mon-{end}")
    async def wf(ctx: Any) -> None:
        await ctx.wait_signal("go")
        raise ValueError("bad")

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    seen: list[RunStatus] = []  # the monitor runs in this process
    done = threading.Event()
    t = threading.Thread(target=_collect, args=(engine.monitor(h.run_id, timeout=TIMEOUT), seen, done))
    t.start()
    wait_until(lambda: seen, what="the monitor's first status")  # it starts when the thread first iterates
    if end == "failed":
        h.signal("go")
    else:
        h.cancel()
    assert done.wait(TIMEOUT)
    t.join(TIMEOUT)
    assert seen[0].state == RunState.WAITING
    assert seen[-1].state == RunState(end)
    if end == "failed":
        assert "bad" in seen[-1].error


def test_monitor_of_finished_run_yields_once(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> int:
        return 3

    h = engine.start(wf)
    h.result(TIMEOUT)
    seen = list(engine.monitor(h.run_id))
    assert [s.state for s in seen] == [RunState.COMPLETED]
    assert [s.state for s in h.monitor()] == [RunState.COMPLETED]


def test_amonitor(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        await ctx.wait_signal("go")
        ctx.report_progress(0.5)
        await ctx.wait_signal("go")
        return "ok"

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")

    async def main() -> list[RunStatus]:
        out: list[RunStatus] = []
        agen = engine.amonitor(h.run_id)
        out.append(await agen.__anext__())
        h.signal("go")
        h.signal("go")
        async for st in agen:
            out.append(st)
        return out

    seen = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert seen[0].state == RunState.WAITING
    assert seen[-1].state == RunState.COMPLETED


def test_history_events_and_json(engine: Engine) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    @engine.workflow()
    async def wf(ctx: Any, arg: Any) -> Any:
        await ctx.step("s", lambda: {"set": {1, 2}, "obj": Opaque(), 3: (1, 2)})
        ctx.report_progress(0.5)
        await ctx.sleep("z", 1)
        return "r"

    h = engine.start(wf, b"bytes-arg", run_id="hist-1")
    h.result(TIMEOUT)
    hist = engine.history("hist-1")
    assert [e.seq for e in hist] == list(range(len(hist)))
    assert [e.kind for e in hist] == ["run_started", "step_completed", "progress", "timer_started", "timer_fired", "run_completed"]
    for e in hist:
        assert isinstance(e, actorflow.Event)
        assert isinstance(e.kind, str) and isinstance(e.name, str) and isinstance(e.at, float)
        d = e.to_dict()
        assert set(d) >= {"seq", "kind", "name", "data", "at"}
        json.dumps(d)  # JSON-safe whatever the data
    assert hist[0].data == {"args": (b"bytes-arg",)}
    assert hist[1].name == "s" and hist[1].data["set"] == {1, 2}
    assert hist[2].data == 0.5
    assert hist[-1].data == "r"
    assert all(a.at <= b.at for a, b in zip(hist, hist[1:]))


def test_runs_filters(new_engine: Any) -> None:
    engine = new_engine()  # its own: runs() lists every run of the engine

    @engine.workflow()
    async def ok(ctx: Any) -> int:
        return 1

    @engine.workflow()
    async def waits(ctx: Any) -> None:
        await ctx.wait_signal("never")

    @engine.workflow()
    async def fails(ctx: Any) -> None:
        raise RuntimeError("x")

    for i in range(3):
        engine.run(ok, run_id=f"ok-{i}", timeout=TIMEOUT)
    w = engine.start(waits, run_id="w-0")
    with pytest.raises(actorflow.WorkflowFailed):
        engine.run(fails, run_id="f-0", timeout=TIMEOUT)
    wait_state(engine, "w-0", "waiting")
    assert sorted(r.run_id for r in engine.runs()) == ["f-0", "ok-0", "ok-1", "ok-2", "w-0"]
    assert all(isinstance(r, RunStatus) for r in engine.runs())
    assert sorted(r.run_id for r in engine.runs(state="completed")) == ["ok-0", "ok-1", "ok-2"]
    assert [r.run_id for r in engine.runs(state=RunState.WAITING)] == ["w-0"]
    assert [r.run_id for r in engine.runs(state="failed")] == ["f-0"]
    assert [r.run_id for r in engine.runs(workflow=waits.__qualname__)] == ["w-0"]
    assert engine.runs(state="completed", workflow=fails.__qualname__) == []
    assert engine.runs(workflow="unknown") == []
    with pytest.raises(ValueError):
        engine.runs(state="bogus")
    w.cancel()


def test_unknown_run_ids_raise_run_not_found(engine: Engine) -> None:
    calls = [
        lambda: engine.signal("ghost", "x"),
        lambda: engine.cancel("ghost"),
        lambda: engine.status("ghost"),
        lambda: engine.result("ghost", timeout=1),
        lambda: engine.history("ghost"),
        lambda: engine.monitor("ghost"),
        lambda: engine.amonitor("ghost"),
        lambda: asyncio.run(engine.aresult("ghost", timeout=1)),
    ]
    for call in calls:
        with pytest.raises(RunNotFound) as ei:
            call()
        assert ei.value.run_id == "ghost"


def test_status_shows_running_during_a_long_first_step(new_engine: Any, tmp_path: Any, system: str) -> None:
    """The pending->running record rides along with the step's commit, but never longer than a housekeeping round."""

    gate = FileGate(tmp_path)
    clock = MockClock()
    engine = new_engine(clock=clock, passivate_after=1.0, open=False)  # multiproc: the real clock

    @engine.workflow(name="long")
    async def long(ctx: Any) -> Any:
        return await ctx.step("hold", gate)

    engine.open()
    h = engine.start("long", run_id="long-1")
    assert gate.entered.wait(TIMEOUT)
    if system == "embedded":
        clock.advance(1.0)  # one housekeeping round (every passivate_after/2 of clock time)
    wait_state(engine, "long-1", "running")
    gate.release.set()
    assert h.result(TIMEOUT) is None
