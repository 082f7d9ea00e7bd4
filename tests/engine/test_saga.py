"""Saga compensations: reverse order on failure and on cancel, journaled, failures reported, result() waits."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import actorflow
from actorflow import Cancelled, Engine, WorkflowFailed

from .conftest import TIMEOUT, Calls, FileGate, wait_state


class Boom(Exception):
    pass


def _saga(engine: Engine, log: list[str], *, fail_comp: str | None = None, wait: bool = False) -> Any:
    def comp(name: str) -> Any:
        def undo() -> None:
            log.append(f"undo-{name}")
            if name == fail_comp:
                raise Boom(f"cannot undo {name}")

        return undo

    @engine.workflow(name=f"saga-{fail_comp}-{wait}")
    async def saga(ctx: Any) -> str:
        await ctx.step("a", lambda: log.append("a"), compensate=comp("a"))
        await ctx.step("no-comp", lambda: log.append("no-comp"))
        await ctx.step("b", lambda: log.append("b"), compensate=comp("b"))
        await ctx.step("c", lambda: log.append("c"), compensate=comp("c"))
        if wait:
            await ctx.wait_signal("never")
        await ctx.step("d", _raise, compensate=comp("d"))  # fails: its compensation must not run
        return "unreachable"

    return saga


def _raise() -> None:
    raise Boom("d exploded")


def test_compensations_run_in_reverse_on_failure(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)
    wf = _saga(engine, log)
    h = engine.start(wf)
    with pytest.raises(WorkflowFailed) as ei:
        h.result(TIMEOUT)
    assert log == ["a", "no-comp", "b", "c", "undo-c", "undo-b", "undo-a"]
    assert isinstance(ei.value.__cause__, actorflow.StepFailed)
    assert ei.value.run_id == h.run_id
    hist = h.history()
    comps = [(e.kind, e.name) for e in hist if e.kind.startswith("compensation")]
    assert comps == [("compensation_completed", "c"), ("compensation_completed", "b"), ("compensation_completed", "a")]
    # compensations are journaled before the run's final event
    kinds = [e.kind for e in hist]
    assert kinds[-1] == "run_failed"
    assert max(i for i, k in enumerate(kinds) if k.startswith("compensation")) < kinds.index("run_failed")
    st = h.status()
    assert st.state == actorflow.RunState.FAILED and "d exploded" in st.error


def test_compensations_run_in_reverse_on_cancel(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)
    wf = _saga(engine, log, wait=True)
    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    assert h.cancel() is True
    with pytest.raises(Cancelled):
        h.result(TIMEOUT)
    assert log == ["a", "no-comp", "b", "c", "undo-c", "undo-b", "undo-a"]
    kinds = [(e.kind, e.name) for e in h.history()]
    assert [k for k in kinds if k[0].startswith("compensation")] == [
        ("compensation_completed", "c"),
        ("compensation_completed", "b"),
        ("compensation_completed", "a"),
    ]
    assert kinds[-1][0] == "run_cancelled"
    assert h.status().state == actorflow.RunState.CANCELLED


def test_failing_compensation_is_recorded_and_reported(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)
    wf = _saga(engine, log, fail_comp="b")
    h = engine.start(wf)
    with pytest.raises(WorkflowFailed) as ei:
        h.result(TIMEOUT)
    assert log[-3:] == ["undo-c", "undo-b", "undo-a"]  # the others still ran
    hist = h.history()
    failed = [e for e in hist if e.kind == "compensation_failed"]
    assert len(failed) == 1 and failed[0].name == "b"
    assert "cannot undo b" in failed[0].data["error"]
    final = hist[-1]
    assert final.kind == "run_failed"
    assert any("cannot undo b" in s for s in final.data["compensation_errors"])
    assert "cannot undo b" in str(ei.value)
    assert "cannot undo b" in h.status().error


def test_result_only_after_compensations_journaled(engine: Engine, tmp_path: Any) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.step("reserve", lambda: "r", compensate=lambda: gate("released"))
        raise Boom("after reserve")

    h = engine.start(wf)
    assert gate.entered.wait(TIMEOUT)  # the compensation is running
    with pytest.raises(TimeoutError):
        h.result(timeout=0.1)  # not yet: the compensation is not journaled
    assert not h.status().finished
    outcome: list[BaseException] = []
    t = threading.Thread(target=lambda: outcome.append(pytest.raises(WorkflowFailed, h.result, TIMEOUT).value))
    t.start()
    gate.release.set()
    t.join(TIMEOUT)
    assert isinstance(outcome[0], WorkflowFailed)
    assert isinstance(outcome[0].__cause__, Boom)
    kinds = [e.kind for e in h.history()]
    assert kinds[-2:] == ["compensation_completed", "run_failed"]


def test_successful_run_does_not_compensate(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any) -> str:
        await ctx.step("a", lambda: "a", compensate=lambda: log.append("undo"))
        return "done"

    assert engine.run(wf, timeout=TIMEOUT) == "done"
    assert log == []


def test_async_compensation(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)

    async def undo() -> None:
        log.append("async-undo")

    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.step("a", lambda: "a", compensate=undo)
        raise Boom("x")

    with pytest.raises(WorkflowFailed):
        engine.run(wf, timeout=TIMEOUT)
    assert log == ["async-undo"]


def test_failing_compensation_on_cancel_is_reported(engine: Engine, tmp_path: Any) -> None:
    log = Calls(tmp_path)
    wf = _saga(engine, log, fail_comp="c", wait=True)
    h = engine.start(wf)
    wait_state(engine, h.run_id, "waiting")
    assert h.cancel() is True
    with pytest.raises(Cancelled) as ei:
        h.result(TIMEOUT)
    assert "cannot undo c" in str(ei.value)
    assert log[-3:] == ["undo-c", "undo-b", "undo-a"]
    st = h.status()
    assert st.state == actorflow.RunState.CANCELLED and "cannot undo c" in st.error
    assert [e.name for e in h.history() if e.kind == "compensation_failed"] == ["c"]
