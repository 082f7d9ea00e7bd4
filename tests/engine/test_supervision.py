"""Supervision: a host actor that fails is restarted by the supervisor and its runs recover by replay.

On a multiprocess engine the failure is injected (monkeypatch) before the engine opens, so its shard
processes fork with it; there the shard's own supervisor restarts the host, and when the shard gives
up the engine's supervisor restarts the shard process (kill -9 of one: test_multiproc_crash.py)."""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actorflow import MockClock, _host, _timers
from actorflow._messages import SignalArrived, StartRun, StepDone

from .conftest import TIMEOUT, FileFlag, Tally, embedded_only, wait_state

CALLS = Tally(name="calls")  # steps may run in shard processes


class Injected(Exception):
    pass


@pytest.fixture(autouse=True)
def _reset(tmp_path: Any) -> Iterator[None]:
    CALLS.reset(tmp_path)  # before the test's engines fork their processes
    yield


def counted(name: str) -> Any:
    def fn() -> str:
        CALLS.append(name)
        return f"{name}!"

    return fn


def fail_once_on(monkeypatch: pytest.MonkeyPatch, kind: type, step_pos: int | None = None) -> FileFlag:
    """Make RunHost.handle raise once, on the first batch that carries a message of type `kind`
    (in every process forked after this: patch before the engine opens)."""
    fired = FileFlag(os.path.join(os.path.dirname(CALLS.path), f"fired-{kind.__name__}"))
    orig = _host.RunHost.handle

    def handle(self: _host.RunHost, items: list[Any]) -> Any:
        if not fired.is_set() and any(type(i) is kind and (step_pos is None or i.pos == step_pos) for i in items):
            fired.set()
            raise Injected(f"injected failure on {kind.__name__}")
        return orig(self, items)

    monkeypatch.setattr(_host.RunHost, "handle", handle)
    return fired


def test_host_failure_on_step_result_is_recovered(new_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fired = fail_once_on(monkeypatch, StepDone, step_pos=1)

    async def wf(ctx: Any) -> Any:
        a = await ctx.step("a", counted("a"))
        b = await ctx.step("b", counted("b"))  # its result message is lost with the failing host
        c = await ctx.step("c", counted("c"))
        return a, b, c

    engine = new_engine(workflows=[wf])

    h = engine.start(wf)
    assert h.result(TIMEOUT) == ("a!", "b!", "c!")
    assert fired.is_set()
    assert CALLS["a"] == 1 and CALLS["c"] == 1
    assert CALLS["b"] == 2  # at-least-once: the step whose result was lost ran again after recovery
    kinds = [e.kind for e in h.history()]
    assert kinds.count("step_completed") == 3


def test_host_failure_on_start_is_recovered(new_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fired = fail_once_on(monkeypatch, StartRun)

    async def wf(ctx: Any, x: int) -> int:
        return await ctx.step("x", lambda: x + 1)  # type: ignore[no-any-return]

    engine = new_engine(workflows=[wf])

    handles = [engine.start(wf, i) for i in range(5)]
    assert [h.result(TIMEOUT) for h in handles] == [1, 2, 3, 4, 5]
    assert fired.is_set()


def test_host_failure_on_signal_keeps_the_signal(new_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fired = fail_once_on(monkeypatch, SignalArrived)  # the run's first SignalArrived is the one below

    async def wf(ctx: Any) -> Any:
        a = await ctx.step("a", counted("a"))
        got = await ctx.wait_signal("go")
        return a, got

    engine = new_engine(clock=MockClock(), workflows=[wf])
    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    h.signal("go", "payload")  # durable in the inbox: the restarted host finds it when it recovers the run
    assert fired.wait(TIMEOUT)
    assert h.result(TIMEOUT) == ("a!", "payload")
    assert CALLS["a"] == 1


@embedded_only("MockClock: the timer actor fails at 60 s of a 100 s sleep")
def test_timer_actor_failure_rearms(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock)
    fired = threading.Event()
    orig = _timers.TimerService.tick

    def tick(self: _timers.TimerService, now: float) -> Any:
        if now >= 1_700_000_000.0 + 50 and not fired.is_set():
            fired.set()
            raise Injected("timer actor failure")
        return orig(self, now)

    monkeypatch.setattr(_timers.TimerService, "tick", tick)

    @engine.workflow()
    async def wf(ctx: Any) -> str:
        await ctx.sleep("nap", 100)
        return "woke"

    h = engine.start(wf)
    wait_state(engine, h.run_id, "sleeping")
    clock.advance(60)
    assert fired.wait(TIMEOUT)
    clock.advance(60)
    assert h.result(TIMEOUT) == "woke"


def test_supervisor_giving_up_fails_waiters_and_refuses_new_work(
    new_engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A host that fails on every message exhausts the restart budget: callers get an error, not a hang."""
    from actorflow import ActorflowError, WorkflowFailed

    armed = FileFlag(str(tmp_path / "armed"))  # from then on the host fails (in any process)
    orig = _host.RunHost.handle

    def always_fail(self: _host.RunHost, items: list[tuple[Any, ...]]) -> Any:
        if armed.is_set():
            raise Injected("host keeps failing")
        return orig(self, items)

    monkeypatch.setattr(_host.RunHost, "handle", always_fail)

    async def wf(ctx: Any) -> Any:
        return await ctx.wait_signal("go")

    engine = new_engine(workflows=[wf])
    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    outcome: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _catch(outcome, h.result, TIMEOUT))
    waiter.start()

    armed.set()
    engine.signal(h.run_id, "go", 1)  # the host fails on it, and on every recovery after each restart
    waiter.join(TIMEOUT)
    with pytest.raises(ActorflowError, match="restart budget"):
        engine.signal(h.run_id, "go", 2)
    assert outcome and isinstance(outcome[0], WorkflowFailed)
    assert "engine stopped" in str(outcome[0])


def _catch(out: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        out.append(exc)


@embedded_only("MemoryJournal fault injection (a commit that fails once)")
def test_failed_journal_commit_reloads_its_runs(make_engine: Any) -> None:
    """A commit that fails (disk full, I/O error) loses nothing journaled: its runs replay and go on."""
    from actorflow import StorageError
    from storage import MemoryJournal

    from .conftest import Gate

    journal = MemoryJournal()
    gate = Gate()
    engine = make_engine(journal=journal, clock=MockClock(autojump=True), open=False)

    @engine.workflow(name="two")
    async def two(ctx: Any) -> Any:
        a = await ctx.step("a", counted("a"))
        b = await ctx.step("b", gate)
        return a, b

    engine.open()
    h = engine.start("two")
    assert gate.entered.wait(TIMEOUT)
    orig = journal._apply
    failed = threading.Event()

    def fail_once(batch: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise StorageError("injected: disk full")
        return orig(batch)

    journal._apply = fail_once  # type: ignore[method-assign]
    gate.release.set()  # b's result goes into the failing commit: the run reloads and runs b again
    assert h.result(TIMEOUT) == ("a!", None)
    assert failed.is_set() and CALLS["a"] == 1 and gate.calls == 2
    kinds = [e.kind for e in h.history()]
    assert kinds.count("step_completed") == 2


@embedded_only("the embedded pump's direct delivery to host actors in this process")
def test_host_messages_go_by_direct_delivery_and_what_a_host_sends_still_arrives(make_engine: Any) -> None:
    """In one process the pump delivers a batch to a live host actor by a direct call (no simple-system
    dispatch); messages the host sends meanwhile (here: timers to arm) are run by one tell after it."""
    engine = make_engine(clock=MockClock(autojump=True))
    told: collections.Counter[str] = collections.Counter()

    @engine.workflow()
    async def wf(ctx: Any, n: int) -> int:
        for i in range(n):
            await ctx.step(f"s{i}", counted(f"s{i}"))
        await ctx.sleep("nap", 3600)  # the host sends the timer actor an arm message
        return n

    actors = engine._actors
    assert actors is not None
    asys = actors.asys
    hosts = {str(a) for name, a in engine._runtime().addresses.items() if name.startswith("host-")}
    real_tell = asys.tell

    def tell(addr: Any, msg: Any) -> None:
        told["host" if str(addr) in hosts else "other"] += 1
        real_tell(addr, msg)

    asys.tell = tell
    try:
        assert engine.run(wf, 20, timeout=TIMEOUT) == 20
    finally:
        asys.tell = real_tell
    assert all(CALLS[f"s{i}"] == 1 for i in range(20))
    # 20 step results and a start went to the host: none of them through the simple system's tell
    # (the pump's housekeeping, if a round falls due meanwhile, still tells each host)
    assert told["host"] <= 2 * engine._runtime().shards, told
