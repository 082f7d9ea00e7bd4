"""cancel(): pending step/sleep/wait raise Cancelled in the run, states, catching, children, errors."""

from __future__ import annotations

from typing import Any

import pytest

import actorflow
from actorflow import Cancelled, Engine, RunNotFound

from .conftest import TIMEOUT, Calls, FileGate, wait_state, wait_until


def test_cancelled_is_base_exception() -> None:
    assert issubclass(Cancelled, BaseException)
    assert not issubclass(Cancelled, Exception)
    assert actorflow.Cancelled is actorflow.errors.Cancelled


@pytest.mark.parametrize("what", ["step", "sleep", "wait"])
def test_cancel_pending_operation(new_engine: Any, what: str, tmp_path: Any) -> None:
    engine = new_engine(clock=actorflow.MockClock())  # no autojump: the sleep must not elapse
    gate = FileGate(tmp_path)
    seen = Calls(tmp_path)

    @engine.workflow(name=f"cancel-{what}")
    async def wf(ctx: Any) -> None:
        try:
            if what == "step":
                await ctx.step("hold", gate)
            elif what == "sleep":
                await ctx.sleep("long", 10**9)
            else:
                await ctx.wait_signal("never")
        except Cancelled as exc:
            seen.append(type(exc).__name__)
            raise

    h = engine.start(wf)
    if what == "step":
        assert gate.entered.wait(TIMEOUT)
    else:
        wait_state(engine, h.run_id, "sleeping" if what == "sleep" else "waiting")
    assert h.cancel() is True
    with pytest.raises(Cancelled) as ei:
        h.result(TIMEOUT)
    assert ei.value.run_id == h.run_id
    assert seen == ["Cancelled"]
    st = h.status()
    assert st.state == actorflow.RunState.CANCELLED
    kinds = [e.kind for e in h.history()]
    assert "cancel_requested" in kinds and kinds[-1] == "run_cancelled"
    assert h.cancel() is False  # already ended
    gate.release.set()
    if what == "sleep":
        assert engine.journal.timer_count() == 0


def test_workflow_catching_cancelled_completes(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        try:
            await ctx.wait_signal("never")
        except Cancelled:
            return "cleaned up"
        return "signalled"

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    assert h.cancel() is True
    assert h.result(TIMEOUT) == "cleaned up"
    assert h.status().state == actorflow.RunState.COMPLETED


def test_cancel_ended_runs_returns_false(engine: Engine) -> None:
    @engine.workflow()
    async def ok(ctx: Any) -> int:
        return 1

    @engine.workflow()
    async def bad(ctx: Any) -> None:
        raise ValueError("x")

    h1 = engine.start(ok)
    h1.result(TIMEOUT)
    assert engine.cancel(h1.run_id) is False
    h2 = engine.start(bad)
    with pytest.raises(actorflow.WorkflowFailed):
        h2.result(TIMEOUT)
    assert h2.cancel() is False
    assert h2.status().state == actorflow.RunState.FAILED


def test_cancel_twice(engine: Engine, tmp_path: Any) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.step("a", lambda: "a", compensate=gate)
        await ctx.wait_signal("never")

    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    assert h.cancel() is True
    assert gate.entered.wait(TIMEOUT)  # compensating
    assert h.cancel() is True  # still being cancelled: not ended yet
    gate.release.set()
    with pytest.raises(Cancelled):
        h.result(TIMEOUT)
    assert h.cancel() is False


def test_cancel_unknown_run(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        engine.cancel("no-such-run")


def test_cancel_propagates_to_children(engine: Engine) -> None:
    @engine.workflow()
    async def child(ctx: Any) -> str:
        await ctx.wait_signal("never")
        return "child done"

    @engine.workflow()
    async def grandparent(ctx: Any) -> str:
        return await ctx.child(parent)

    @engine.workflow()
    async def parent(ctx: Any) -> str:
        return await ctx.child(child)

    h = engine.start(grandparent, run_id="gp")
    wait_state(engine, "gp/0/0", "waiting")
    assert engine.status("gp/0").state == actorflow.RunState.WAITING  # waiting on its child
    assert h.cancel() is True
    with pytest.raises(Cancelled):
        h.result(TIMEOUT)
    with pytest.raises(Cancelled):
        engine.result("gp/0", TIMEOUT)
    with pytest.raises(Cancelled):
        engine.result("gp/0/0", TIMEOUT)
    for rid in ("gp", "gp/0", "gp/0/0"):
        assert engine.status(rid).state == actorflow.RunState.CANCELLED


def test_cancel_while_pending_retry(new_engine: Any, tmp_path: Any) -> None:
    calls = Calls(tmp_path)

    def fail() -> None:
        calls.append(1)
        raise ValueError("no")

    async def wf(ctx: Any) -> Any:
        await ctx.step("r", fail, retry=actorflow.RetryPolicy.linear(5, delay=10**8))

    e = new_engine(clock=actorflow.MockClock(), workflows=[wf])  # no autojump: the retry stays pending
    h = e.start(wf)
    wait_until(lambda: any(ev.kind == "step_attempt_failed" for ev in h.history()), what="first failure")
    assert h.cancel() is True
    with pytest.raises(Cancelled):
        h.result(TIMEOUT)
    assert calls == [1]
