"""ctx.step: journaled copies, sync/async functions, retries, timeouts, gather, current_step()."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import actorflow
from actorflow import (
    ConfigError,
    Engine,
    MockClock,
    RetryPolicy,
    StepFailed,
    StepTimeout,
    SystemClock,
    WorkflowFailed,
)

from .conftest import TIMEOUT, Calls, FileFlag, FileGate, Gate, embedded_only, wait_until


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


def test_step_result_is_the_journaled_copy(engine: Engine) -> None:
    original = {"items": [1, 2, 3]}

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        value = await ctx.step("make", lambda: original)
        same = value is original  # the workflow gets the decoded journal copy, not the live object
        original["items"].append(4)  # mutating the step's object afterwards changes nothing
        return value, same

    h = engine.start(wf)
    assert h.result(TIMEOUT) == ({"items": [1, 2, 3]}, False)
    ev = [e for e in engine.history(h.run_id) if e.kind == "step_completed"][0]
    assert ev.name == "make" and ev.data == {"items": [1, 2, 3]} and ev.pos == 0


def test_sync_async_and_coroutine_returning_steps(engine: Engine, tmp_path: Any) -> None:
    threads = Calls(tmp_path)

    def sync_fn() -> str:
        threads.append(threading.current_thread().name)
        return "sync"

    async def async_fn() -> str:
        await asyncio.sleep(0)
        threads.append(threading.current_thread().name)
        return "async"

    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @engine.workflow()
    async def wf(ctx: Any) -> list[Any]:
        a = await ctx.step("sync", sync_fn)
        b = await ctx.step("async", async_fn)
        c = await ctx.step("lambda-coro", lambda: coro(41))
        d = await ctx.step("none", lambda: None)
        return [a, b, c, d]

    assert engine.run(wf, timeout=TIMEOUT) == ["sync", "async", 42, None]
    # steps run off the actor (pump) thread
    assert len(threads) == 2 and all(t != "actorflow-pump" for t in threads)
    assert threading.current_thread().name not in threads


def test_step_bad_arguments_are_config_errors(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> list[str]:
        out = []
        for kwargs in ({"fn": 42}, {"fn": lambda: 1, "compensate": 3}, {"fn": lambda: 1, "timeout": -1}, {"fn": lambda: 1, "timeout": 0}):
            try:
                await ctx.step("bad", **kwargs)
            except ConfigError:
                out.append("config")
        return out

    assert engine.run(wf, timeout=TIMEOUT) == ["config"] * 4


def _failing(n_failures: int, calls: list[int], exc: type[Exception] = Boom, value: Any = "ok") -> Any:
    def fn() -> Any:
        calls.append(actorflow.current_step().attempt)
        if len(calls) <= n_failures:
            raise exc(f"failure {len(calls)}")
        return value

    return fn


def test_retry_none_is_one_attempt(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("once", _failing(5, calls))
        except StepFailed as exc:
            return exc.attempts, type(exc.__cause__).__name__, str(exc.__cause__)
        return None

    assert engine.run(wf, timeout=TIMEOUT) == (1, "Boom", "failure 1")
    assert calls == [1]


def test_exponential_retry_succeeds_and_journals_attempts(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)
    policy = RetryPolicy.exponential(max_attempts=5, initial_delay=0.02, multiplier=3.0, jitter=False)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.step("flaky", _failing(3, calls), retry=policy)

    h = engine.start(wf)
    assert h.result(TIMEOUT) == "ok"
    assert calls == [1, 2, 3, 4]
    hist = h.history()
    failed = [e for e in hist if e.kind == "step_attempt_failed"]
    assert [e.data["attempt"] for e in failed] == [1, 2, 3]
    assert [e.data["retry_at"] - e.at for e in failed] == pytest.approx([0.02, 0.06, 0.18], abs=0.005)
    assert all("Boom: failure" in e.data["error"] for e in failed)
    done = [e for e in hist if e.kind == "step_completed"]
    assert len(done) == 1 and done[0].data == "ok"
    # the successful attempt ran no earlier than the last retry_at
    assert done[0].at >= failed[-1].data["retry_at"]


def test_retries_exhausted_raise_step_failed_with_cause(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)
    policy = RetryPolicy.linear(max_attempts=3, delay=0.05, jitter=False)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        await ctx.step("always", _failing(100, calls), retry=policy)

    h = engine.start(wf)
    with pytest.raises(WorkflowFailed) as ei:
        h.result(TIMEOUT)
    assert calls == [1, 2, 3]  # max_attempts counts the first try
    step_err = ei.value.__cause__
    assert isinstance(step_err, StepFailed)
    assert step_err.attempts == 3 and step_err.step == "always" and step_err.run_id == h.run_id
    assert isinstance(step_err.__cause__, Boom)
    assert str(step_err.__cause__) == "failure 3"
    hist = h.history()
    failed = [e for e in hist if e.kind == "step_attempt_failed"]
    assert [e.data["retry_at"] - e.at for e in failed] == pytest.approx([0.05, 0.05], abs=0.005)
    final = [e for e in hist if e.kind == "step_failed"]
    assert len(final) == 1 and final[0].data["attempts"] == 3
    assert h.status().state == actorflow.RunState.FAILED
    assert "always" in h.status().error


def test_custom_retry_delays(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)
    policy = RetryPolicy.custom(4, lambda n: 0.02 * n)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.step("custom", _failing(3, calls), retry=policy)

    h = engine.start(wf)
    assert h.result(TIMEOUT) == "ok"
    failed = [e for e in h.history() if e.kind == "step_attempt_failed"]
    assert [e.data["retry_at"] - e.at for e in failed] == pytest.approx([0.02, 0.04, 0.06], abs=0.005)


def test_non_retryable_errors_fail_at_once(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)
    policy = RetryPolicy.exponential(max_attempts=5, initial_delay=1.0, non_retryable=(Fatal,))

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("fatal", _failing(5, calls, exc=Fatal), retry=policy)
        except StepFailed as exc:
            return exc.attempts, type(exc.__cause__).__name__
        return None

    assert engine.run(wf, timeout=TIMEOUT) == (1, "Fatal")
    assert calls == [1]


def test_workflow_can_catch_step_failure_and_continue(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        try:
            await ctx.step("bad", _failing(1, []))
        except StepFailed:
            pass
        return await ctx.step("good", lambda: "recovered")

    assert engine.run(wf, timeout=TIMEOUT) == "recovered"


@embedded_only("MockClock moved by the test (time stands still between its steps); real clock: below")
def test_step_timeout_and_late_result_discarded(make_engine: Any) -> None:
    clock = MockClock()  # no autojump: the test moves time
    engine = make_engine(clock=clock)
    gate = Gate()

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("slow", lambda: gate("late"), timeout=5.0)
        except StepTimeout as exc:
            return ("timeout", exc.attempts, isinstance(exc, StepFailed))
        return "no timeout"

    h = engine.start(wf)
    assert gate.entered.wait(TIMEOUT)
    clock.advance(4.0)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)  # not timed out yet at 4 s of 5
    clock.advance(2.0)
    assert h.result(TIMEOUT) == ("timeout", 1, True)
    gate.release.set()  # the late result arrives after the run finished
    hist_kinds = [e.kind for e in h.history()]
    assert "step_completed" not in hist_kinds
    failed = [e for e in h.history() if e.kind == "step_failed"][0]
    assert failed.data["timeout"] is True


def test_step_timeout_on_the_real_clock_discards_the_late_result(new_engine: Any, tmp_path: Any) -> None:
    engine = new_engine(clock=SystemClock())
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.step("slow", lambda: gate("late"), timeout=0.2)
        except StepTimeout as exc:
            return ("timeout", exc.attempts, isinstance(exc, StepFailed))
        return "no timeout"

    h = engine.start(wf)
    assert gate.entered.wait(TIMEOUT)
    assert h.result(TIMEOUT) == ("timeout", 1, True)
    gate.release.set()  # the late result arrives after the run finished
    assert "step_completed" not in [e.kind for e in h.history()]
    failed = [e for e in h.history() if e.kind == "step_failed"][0]
    assert failed.data["timeout"] is True


@embedded_only("MockClock moved by the test (time stands still between its steps)")
def test_step_timeout_retried_late_result_of_first_attempt_ignored(make_engine: Any) -> None:
    clock = MockClock()
    engine = make_engine(clock=clock)
    first = Gate()
    attempts: list[int] = []

    def fn() -> str:
        attempt = actorflow.current_step().attempt
        attempts.append(attempt)
        if attempt == 1:
            return first(f"attempt-{attempt}")
        return f"attempt-{attempt}"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.step("slow", fn, timeout=5.0, retry=RetryPolicy.linear(2, delay=1.0, jitter=False))

    h = engine.start(wf)
    assert first.entered.wait(TIMEOUT)
    clock.advance(6.0)  # attempt 1 times out; its retry is due 1 s later
    # let the timeout be journaled before moving time on
    wait_until(lambda: any(e.kind == "step_attempt_failed" for e in h.history()), what="attempt 1 timed out")
    clock.advance(2.0)
    assert h.result(TIMEOUT) == "attempt-2"
    first.release.set()  # attempt 1's late result: discarded
    completed = [e for e in h.history() if e.kind == "step_completed"]
    assert [e.data for e in completed] == ["attempt-2"]
    att_failed = [e for e in h.history() if e.kind == "step_attempt_failed"][0]
    assert "StepTimeout" in att_failed.data["error"]
    assert attempts == [1, 2]


def test_current_step_info_and_stable_idempotency_key(engine: Engine, tmp_path: Any) -> None:
    infos = Calls(tmp_path)

    def fn() -> str:
        info = actorflow.current_step()
        infos.append(info)
        if info.attempt < 3:
            raise Boom("again")
        return info.idempotency_key

    async def afn() -> Any:
        return actorflow.current_step()

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        await ctx.step("first", lambda: 1)
        key = await ctx.step("keyed", fn, retry=RetryPolicy.linear(3, 0.01))
        ainfo = await ctx.step("async-info", afn)
        return key, ainfo

    h = engine.start(wf, run_id="cs-1")
    key, ainfo = h.result(TIMEOUT)
    assert [i.attempt for i in infos] == [1, 2, 3]
    assert {i.idempotency_key for i in infos} == {key}
    assert all(i.run_id == "cs-1" and i.name == "keyed" and i.seq == 1 for i in infos)
    assert "cs-1" in key
    assert ainfo.name == "async-info" and ainfo.run_id == "cs-1" and ainfo.attempt == 1
    assert ainfo.idempotency_key != key
    with pytest.raises(RuntimeError):
        actorflow.current_step()  # outside a step


def test_gather_returns_in_argument_order(engine: Engine, tmp_path: Any) -> None:
    order = Calls(tmp_path)
    b_done = FileFlag(str(tmp_path / "b_done"))

    def a() -> str:
        assert b_done.wait(TIMEOUT)  # a finishes after b
        order.append("a")
        return "A"

    def b() -> str:
        order.append("b")
        b_done.set()
        return "B"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        return await ctx.gather(ctx.step("a", a), ctx.step("b", b), ctx.sleep("nap", 0.05), ctx.step("c", lambda: "C"))

    h = engine.start(wf)
    assert h.result(TIMEOUT) == ["A", "B", None, "C"]
    assert order == ["b", "a"]
    steps = [(e.name, e.pos) for e in h.history() if e.kind == "step_completed"]
    assert sorted(steps, key=lambda s: s[1]) == [("a", 0), ("b", 1), ("c", 3)]


def test_gather_raises_first_failure_in_argument_order(engine: Engine, tmp_path: Any) -> None:
    c_failed = FileFlag(str(tmp_path / "c_failed"))
    ran = Calls(tmp_path)

    def b() -> None:
        assert c_failed.wait(TIMEOUT)  # b fails after c did
        ran.append("b")
        raise Boom("b failed")

    def c() -> None:
        ran.append("c")
        c_failed.set()
        raise Fatal("c failed")

    def d() -> str:
        ran.append("d")
        return "d"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.gather(ctx.step("a", lambda: "a"), ctx.step("b", b), ctx.step("c", c), ctx.step("d", d))
        except StepFailed as exc:
            return exc.step, type(exc.__cause__).__name__
        return None

    h = engine.start(wf)
    assert h.result(TIMEOUT) == ("b", "Boom")
    assert sorted(ran) == ["b", "c", "d"]  # every awaitable ran to its end
    kinds = {(e.name, e.kind) for e in h.history() if e.kind.startswith("step")}
    assert {("a", "step_completed"), ("b", "step_failed"), ("c", "step_failed"), ("d", "step_completed")} <= kinds


class Foreign:
    def __await__(self) -> Any:
        yield None


def test_gather_rejects_foreign_awaitables(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        try:
            await ctx.gather(Foreign())
        except ConfigError:
            return "rejected"
        return "accepted"

    assert engine.run(wf, timeout=TIMEOUT) == "rejected"


def test_awaiting_asyncio_in_workflow_is_an_error(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        try:
            await asyncio.sleep(0)
        except ConfigError:
            return "refused"
        return "allowed"

    assert engine.run(wf, timeout=TIMEOUT) == "refused"


def test_sync_callable_returning_a_coroutine_does_not_hold_a_pool_thread(new_engine: Any) -> None:
    """`lambda: some_async(x)` is awaited on the step loop; the single pool thread stays free."""
    import asyncio as _asyncio

    engine = new_engine(step_threads=1, open=False)
    opened: list[bool] = []  # both steps run in one process (the run's), so a plain list is shared

    async def wait_open() -> str:
        while not opened:
            await _asyncio.sleep(0.001)  # real asyncio inside a step function: allowed
        return "opened"

    @engine.workflow()
    async def wf(ctx: Any) -> Any:
        waiting = ctx.step("wait", lambda: wait_open())
        opener = ctx.step("open", lambda: opened.append(True) or "done")
        return await ctx.gather(waiting, opener)

    with engine:
        assert engine.run(wf, timeout=10) == ["opened", "done"]


@embedded_only("Runtime.help: the worker that ran a step journals it, an embedded fast path seen in a MemoryJournal")
def test_a_lone_sequential_workflow_journals_each_step_on_the_worker_that_ran_it(make_engine: Any) -> None:
    """With nothing else running, the worker that finished step N runs the actors itself: it
    journals the result, commits, and takes step N+1 (Runtime.help) - no hand-off to the pump
    thread and back per step."""
    from storage import MemoryJournal
    from storage._journal import OP_APPEND

    committers: list[str] = []

    class Recording(MemoryJournal):
        def commit(self, batch: Any, timeout: float | None = None) -> list[Any]:
            if any(op[0] == OP_APPEND for op in batch.ops):  # event appends (not the start's create, not barriers)
                committers.append(threading.current_thread().name)
            return super().commit(batch, timeout)

    engine = make_engine(journal=Recording(), clock=MockClock(autojump=True))
    ran_on: list[str] = []

    @engine.workflow()
    async def wf(ctx: Any, n: int) -> int:
        total = 0
        for i in range(n):
            total += await ctx.step(f"s{i}", lambda i=i: ran_on.append(threading.current_thread().name) or i)
        return total

    assert engine.run(wf, 40, timeout=TIMEOUT) == sum(range(40))
    assert [e.name for e in engine.history(engine.runs()[0].run_id) if e.kind == "step_completed"] == [
        f"s{i}" for i in range(40)
    ]
    on_workers = [name for name in committers if name.startswith("actorflow-step-")]
    # the pump thread commits only what it happens to take first (a clock-jump or housekeeping round)
    assert len(on_workers) >= 30, committers
    assert set(on_workers) <= set(ran_on)


@embedded_only("its steps call the engine object of the test's process, which no other process has")
def test_steps_that_start_and_await_other_runs_while_many_run(make_engine: Any) -> None:
    """A step that calls engine.start (so runs the actors on its worker) among concurrent runs: no item lost."""
    engine = make_engine()

    @engine.workflow()
    async def child(ctx: Any, x: int) -> int:
        return await ctx.step("double", lambda: 2 * x)

    started: list[Any] = []

    @engine.workflow()
    async def parent(ctx: Any, x: int) -> int:
        assert await ctx.step("spawn", lambda: started.append(engine.start(child, x)) or f"spawned {x}") == f"spawned {x}"
        a = await ctx.step("a", lambda: x + 1)
        b = await ctx.step("b", lambda: a + 1)
        return b

    handles = [engine.start(parent, i) for i in range(60)]
    assert [h.result(TIMEOUT) for h in handles] == [i + 2 for i in range(60)]
    wait_until(lambda: len(started) == 60, what="all children started")
    assert sorted(h.result(TIMEOUT) for h in started) == [2 * i for i in range(60)]
