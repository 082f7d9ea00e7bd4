"""Passivation: idle sleeping/waiting runs leave memory and come back by replay when woken."""

from __future__ import annotations

import collections
import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import actorflow
from actorflow import Engine, MockClock, RunState, _host
from actorflow._messages import PumpCall

from .conftest import TIMEOUT, embedded_only, wait_state, wait_until

pytestmark = embedded_only(
    "looks at which runs each in-process RunHost holds, on a MockClock moved by hand; a multiprocess "
    "engine's hosts live in other processes (its passivation: test_systems.py)"
)

CALLS: collections.Counter[str] = collections.Counter()


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_host.RunHost]]:
    """Every RunHost created while the test runs (to look at which runs are in memory)."""
    made: list[_host.RunHost] = []
    orig = _host.RunHost.__init__

    def init(self: _host.RunHost, *a: Any, **kw: Any) -> None:
        orig(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(_host.RunHost, "__init__", init)
    CALLS.clear()
    yield made


def in_memory(hosts: list[_host.RunHost]) -> set[str]:
    return {rid for h in hosts for rid in list(h.runs)}


def step(name: str) -> Any:
    def fn() -> str:
        CALLS[name] += 1
        return name

    return fn


def make(make_engine: Any, clock: MockClock, **kw: Any) -> Engine:
    engine = make_engine(clock=clock, passivate_after=5.0, open=False, **kw)

    @engine.workflow(name="waiter")
    async def waiter(ctx: Any, i: int) -> Any:
        a = await ctx.step("a", step(f"a{i}"))
        got = await ctx.wait_signal("go")
        b = await ctx.step("b", step(f"b{i}"))
        return a, got, b

    @engine.workflow(name="sleeper")
    async def sleeper(ctx: Any) -> Any:
        a = await ctx.step("a", step("sa"))
        await ctx.sleep("nap", 3600)
        b = await ctx.step("b", step("sb"))
        return a, b

    @engine.workflow(name="busy")
    async def busy(ctx: Any) -> Any:
        return await ctx.wait_signal("go")

    engine.open()
    return engine


def test_idle_waiting_runs_leave_memory_and_resume_on_signal(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    clock = MockClock()
    engine = make(make_engine, clock)
    for i in range(10):
        engine.start("waiter", i, run_id=f"w{i}")
    wait_until(lambda: len(engine.runs(state="waiting")) == 10, what="10 waiting runs")
    assert in_memory(hosts) == {f"w{i}" for i in range(10)}
    clock.advance(3.0)  # not idle long enough yet
    engine.start("busy", run_id="fresh")  # started now: younger than the others
    wait_state(engine, "fresh", "waiting")
    clock.advance(3.0)
    wait_until(lambda: in_memory(hosts) == {"fresh"}, what="the 10 idle runs passivated")
    assert engine.status("w3").state == RunState.WAITING  # passivation does not change the state
    clock.advance(6.0)
    wait_until(lambda: not in_memory(hosts), what="everything passivated")
    for i in range(10):
        engine.signal(f"w{i}", "go", i * 100)
    results = [engine.result(f"w{i}", TIMEOUT) for i in range(10)]
    assert results == [(f"a{i}", i * 100, f"b{i}") for i in range(10)]
    assert all(CALLS[f"a{i}"] == 1 and CALLS[f"b{i}"] == 1 for i in range(10))  # replay ran no step again
    engine.signal("fresh", "go", "x")
    assert engine.result("fresh", TIMEOUT) == "x"


def test_passivated_sleeper_resumes_when_timer_fires(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    clock = MockClock()
    engine = make(make_engine, clock)
    h = engine.start("sleeper", run_id="s")
    wait_state(engine, "s", "sleeping")
    clock.advance(10.0)
    wait_until(lambda: not in_memory(hosts), what="the sleeper passivated")
    clock.advance(3600.0)
    assert h.result(TIMEOUT) == ("sa", "sb")
    assert CALLS == {"sa": 1, "sb": 1}
    kinds = [e.kind for e in h.history()]
    assert kinds.count("timer_fired") == 1 and kinds.count("step_completed") == 2


def test_passivated_run_can_be_cancelled(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    clock = MockClock()
    engine = make(make_engine, clock)
    h = engine.start("waiter", 1, run_id="pc")
    wait_state(engine, "pc", "waiting")
    clock.advance(10.0)
    wait_until(lambda: not in_memory(hosts), what="passivated")
    assert h.cancel() is True
    with pytest.raises(actorflow.Cancelled):
        h.result(TIMEOUT)
    assert CALLS == {"a1": 1}


def test_runs_with_steps_in_flight_stay(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    from .conftest import Gate

    gate = Gate()
    clock = MockClock()
    engine = make_engine(clock=clock, passivate_after=1.0, open=False)

    @engine.workflow(name="stepper")
    async def stepper(ctx: Any) -> Any:
        return await ctx.step("hold", gate)

    engine.open()
    h = engine.start("stepper", run_id="busy-step")
    assert gate.entered.wait(TIMEOUT)
    clock.advance(10.0)
    # wait until a housekeeping round that saw the advanced clock has run: a second, later round
    ran: list[float] = []
    orig = _host.RunHost._housekeep

    def spy(self: _host.RunHost) -> None:
        orig(self)
        ran.append(clock.now())

    for host in hosts:
        host._housekeep = spy.__get__(host)  # type: ignore[method-assign]
    clock.advance(2.0)
    wait_until(lambda: len(ran) >= len(hosts), what="housekeeping")
    assert in_memory(hosts) == {"busy-step"}  # a run with a step in flight is not idle
    gate.release.set()
    assert h.result(TIMEOUT) is None


def test_passivate_after_none_keeps_runs(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock, passivate_after=None, open=False)

    @engine.workflow(name="w")
    async def w(ctx: Any) -> Any:
        return await ctx.wait_signal("go")

    engine.open()
    engine.start("w", run_id="keep")
    wait_state(engine, "keep", "waiting")
    ran: list[int] = []
    orig = _host.RunHost._housekeep

    def spy(self: _host.RunHost) -> None:
        orig(self)
        ran.append(1)

    for host in hosts:
        host._housekeep = spy.__get__(host)  # type: ignore[method-assign]
    clock.advance(1000.0)
    wait_until(lambda: len(ran) >= len(hosts), what="housekeeping")
    assert in_memory(hosts) == {"keep"}
    engine.signal("keep", "go", 5)
    assert engine.result("keep", TIMEOUT) == 5


def test_woken_sleeper_is_loaded_once(make_engine: Any, hosts: list[_host.RunHost]) -> None:
    """Replaying a run woken by its timer re-arms that timer; it must not fire a second time."""
    clock = MockClock()
    engine = make_engine(clock=clock, passivate_after=5.0, open=False)

    @engine.workflow(name="nap")
    async def nap(ctx: Any) -> str:
        await ctx.sleep("nap", 3600)
        return "rested"

    engine.open()
    h = engine.start("nap", run_id="n")
    wait_state(engine, "n", "sleeping")
    clock.advance(10.0)
    wait_until(lambda: not in_memory(hosts), what="the sleeper passivated")
    loads: list[str] = []
    journal = engine.journal
    assert journal is not None
    orig_load = journal.load_run

    def counting_load(run_id: str) -> Any:
        loads.append(run_id)
        return orig_load(run_id)

    journal.load_run = counting_load  # type: ignore[method-assign]
    clock.advance(3600.0)
    assert h.result(TIMEOUT) == "rested"
    for _ in range(3):  # let the pump run a few more rounds: a duplicate fire would show up here
        settled = threading.Event()
        engine._runtime().post(PumpCall(settled.set))
        assert settled.wait(TIMEOUT)
    assert loads == ["n"]



def test_a_crowd_of_passivated_sleepers_is_read_back_in_one_go(
    make_engine: Any, hosts: list[_host.RunHost], tmp_path: Any
) -> None:
    """Timers firing together wake their passivated runs with one journal read for the lot."""
    clock = MockClock()
    engine = make_engine(tmp_path / "crowd", clock=clock, passivate_after=5.0, open=False)

    @engine.workflow(name="nap")
    async def nap(ctx: Any, i: int) -> int:
        await ctx.sleep("nap", 3600)
        return await ctx.step("after", lambda: i * 2)  # type: ignore[no-any-return]

    engine.open()
    handles = engine.start_many(nap, [(i,) for i in range(40)])
    for h in handles:
        wait_state(engine, h.run_id, "sleeping")
    clock.advance(10.0)
    wait_until(lambda: not in_memory(hosts), what="the sleepers passivated")
    journal = engine.journal
    assert journal is not None
    batches: list[list[str]] = []
    singles: list[str] = []
    orig_many, orig_one = journal.load_runs, journal.load_run

    def load_runs(run_ids: list[str]) -> Any:
        batches.append(list(run_ids))
        return orig_many(run_ids)

    def load_run(run_id: str) -> Any:
        singles.append(run_id)
        return orig_one(run_id)

    journal.load_runs = load_runs  # type: ignore[method-assign]
    journal.load_run = load_run  # type: ignore[method-assign]
    clock.advance(3600.0)
    assert [h.result(TIMEOUT) for h in handles] == [i * 2 for i in range(40)]
    loaded = [r for b in batches for r in b] + singles
    assert sorted(loaded) == sorted(h.run_id for h in handles)  # each run read exactly once
    assert batches and max(len(b) for b in batches) > 1


def test_a_passivated_run_leaves_memory_without_waiting_for_a_gc_pass(
    make_engine: Any, hosts: list[_host.RunHost]
) -> None:
    """Its coroutine is let go at once (reference counting), so a crowd of passivated runs is no
    pile of cyclic garbage for the collector to chew through when their timers fire."""
    clock = MockClock()
    engine = make(make_engine, clock)
    engine.start("busy", run_id="p")
    wait_state(engine, "p", "waiting")
    host = next(h for h in hosts if "p" in h.runs)
    coro = weakref.ref(host.runs["p"].coro)
    gc.disable()
    try:
        clock.advance(10.0)
        wait_until(lambda: not in_memory(hosts), what="the run passivated")
        assert coro() is None
    finally:
        gc.enable()
    engine.signal("p", "go", 7)
    assert engine.result("p", TIMEOUT) == 7


@pytest.mark.parametrize("workflow", ["sleeper", "busy"])
def test_a_passivated_run_machine_is_freed_by_reference_counting(
    make_engine: Any, hosts: list[_host.RunHost], workflow: str
) -> None:
    """The whole machine, not only its coroutine: the last activation's operations (an armed timer
    holds its Command, whose run is the machine) must not keep it in a cycle. With the GC's
    thresholds raised (the engine's default) such cycles piled up for a whole burst: ~600 bytes per
    run of pymalloc arenas held after a million sleepers (issue 17)."""
    from actorflow._core import RunMachine

    def machines() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is RunMachine)

    clock = MockClock()
    engine = make(make_engine, clock)
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            engine.start(workflow, run_id=f"m{i}")
        wait_until(lambda: all(engine.status(f"m{i}").state in ("sleeping", "waiting") for i in range(20)),
                   what="20 parked runs")
        assert machines() >= 20
        clock.advance(10.0)
        wait_until(lambda: not in_memory(hosts), what="the runs passivated")
        assert machines() == 0  # freed at once; a cycle would keep them until a collection
    finally:
        gc.enable()


def test_finally_block_of_a_passivated_run_journals_nothing_until_it_really_runs(
    make_engine: Any, hosts: list[_host.RunHost]
) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock, passivate_after=5.0, open=False)

    @engine.workflow(name="tidy")
    async def tidy(ctx: Any) -> str:
        try:
            await ctx.sleep("nap", 3600)
        finally:
            ctx.report_progress(0.5)  # journals an event without awaiting anything
            await ctx.step("cleanup", step("cleanup"))
        return "done"

    engine.open()
    h = engine.start("tidy", run_id="t")
    wait_state(engine, "t", "sleeping")
    clock.advance(10.0)
    wait_until(lambda: not in_memory(hosts), what="the sleeper passivated")
    assert [e.kind for e in h.history()] == ["run_started", "timer_started"]
    assert CALLS["cleanup"] == 0
    clock.advance(3600.0)
    assert h.result(TIMEOUT) == "done"
    assert CALLS["cleanup"] == 1
    kinds = [e.kind for e in h.history()]
    assert kinds[:3] == ["run_started", "timer_started", "timer_fired"]
    assert kinds.count("step_completed") == 1 and kinds.count("progress") == 1
