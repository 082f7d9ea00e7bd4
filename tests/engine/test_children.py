"""ctx.child: default ids, results, failures, conflicts, gather of children, parent links."""

from __future__ import annotations

from typing import Any

import pytest

import actorflow
from actorflow import Cancelled, Engine, RunConflict, WorkflowFailed, WorkflowNotRegistered

from .conftest import TIMEOUT, wait_state


class Boom(Exception):
    pass


def test_child_default_id_and_result(engine: Engine) -> None:
    @engine.workflow()
    async def child(ctx: Any, x: int) -> Any:
        return {"id": ctx.run_id, "x2": await ctx.step("double", lambda: 2 * x)}

    @engine.workflow()
    async def parent(ctx: Any) -> Any:
        await ctx.step("first", lambda: 1)
        r1 = await ctx.child(child, 5)
        r2 = await ctx.child(child.__qualname__, 6, run_id="explicit-child")
        return r1, r2

    h = engine.start(parent, run_id="p")
    r1, r2 = h.result(TIMEOUT)
    assert r1 == {"id": "p/1", "x2": 10}
    assert r2 == {"id": "explicit-child", "x2": 12}
    st = engine.status("p/1")
    assert st.state == actorflow.RunState.COMPLETED and st.parent == "p" and st.workflow == child.__qualname__
    assert engine.status("explicit-child").parent == "p"
    kinds = [(e.kind, e.name, e.pos) for e in h.history() if e.kind.startswith("child")]
    assert kinds == [
        ("child_started", child.__qualname__, 1),
        ("child_completed", child.__qualname__, 1),
        ("child_started", child.__qualname__, 2),
        ("child_completed", child.__qualname__, 2),
    ]
    started = [e for e in h.history() if e.kind == "child_started"]
    assert [e.data["run_id"] for e in started] == ["p/1", "explicit-child"]


def test_child_failure_raises_workflow_failed(engine: Engine) -> None:
    @engine.workflow()
    async def bad_child(ctx: Any) -> None:
        raise Boom("child broke")

    @engine.workflow()
    async def parent(ctx: Any) -> Any:
        try:
            await ctx.child(bad_child)
        except WorkflowFailed as exc:
            return exc.run_id, type(exc.__cause__).__name__, "child broke" in str(exc)
        return None

    assert engine.run(parent, run_id="pf", timeout=TIMEOUT) == ("pf/0", "Boom", True)
    assert engine.status("pf/0").state == actorflow.RunState.FAILED


def test_uncaught_child_failure_fails_parent(engine: Engine) -> None:
    @engine.workflow()
    async def bad_child(ctx: Any) -> None:
        raise Boom("deep")

    @engine.workflow()
    async def parent(ctx: Any) -> None:
        await ctx.child(bad_child)

    with pytest.raises(WorkflowFailed) as ei:
        engine.run(parent, run_id="pu", timeout=TIMEOUT)
    assert isinstance(ei.value.__cause__, WorkflowFailed)
    assert "deep" in str(ei.value)


def test_child_cancelled_directly_raises_cancelled_in_parent(engine: Engine) -> None:
    @engine.workflow()
    async def child(ctx: Any) -> None:
        await ctx.wait_signal("never")

    @engine.workflow()
    async def parent(ctx: Any) -> str:
        try:
            await ctx.child(child)
        except Cancelled:
            return "child was cancelled"
        return "child finished"

    h = engine.start(parent, run_id="pc")
    wait_state(engine, "pc/0", "waiting")
    assert engine.cancel("pc/0") is True
    assert h.result(TIMEOUT) == "child was cancelled"


def test_child_unregistered_and_conflict(engine: Engine) -> None:
    @engine.workflow()
    async def other(ctx: Any) -> str:
        return "other"

    @engine.workflow()
    async def kid(ctx: Any) -> str:
        return "kid"

    @engine.workflow()
    async def parent(ctx: Any) -> list[str]:
        out = []
        try:
            await ctx.child("not-registered")
        except WorkflowNotRegistered:
            out.append("not registered")
        try:
            await ctx.child(kid, run_id="taken")
        except RunConflict as exc:
            out.append(f"conflict:{exc.existing}")
        return out

    engine.run(other, run_id="taken", timeout=TIMEOUT)
    assert engine.run(parent, timeout=TIMEOUT) == ["not registered", f"conflict:{other.__qualname__}"]


def test_child_with_existing_finished_run_id_returns_its_result(engine: Engine) -> None:
    @engine.workflow()
    async def kid(ctx: Any, x: int) -> int:
        return x

    @engine.workflow()
    async def parent(ctx: Any) -> int:
        return await ctx.child(kid, 2, run_id="kid-done")

    assert engine.run(kid, 1, run_id="kid-done", timeout=TIMEOUT) == 1
    assert engine.run(parent, timeout=TIMEOUT) == 1  # the existing run; its original args stand


def test_gather_children(engine: Engine) -> None:
    @engine.workflow()
    async def kid(ctx: Any, x: int) -> int:
        await ctx.sleep("nap", 0.05 * (5 - x))  # the last child finishes first
        return x * 10

    @engine.workflow()
    async def parent(ctx: Any) -> list[int]:
        return await ctx.gather(*(ctx.child(kid, i) for i in range(5)))

    assert engine.run(parent, run_id="gc", timeout=TIMEOUT) == [0, 10, 20, 30, 40]
    assert sorted(r.run_id for r in engine.runs(workflow=kid.__qualname__)) == [f"gc/{i}" for i in range(5)]


def test_child_given_as_a_function_registered_under_its_own_name(engine: Engine) -> None:
    @engine.workflow(name="kid-named")
    async def kid(ctx: Any, x: int) -> int:
        return x + 1

    @engine.workflow(name="parent-of-named")
    async def parent(ctx: Any) -> int:
        return await ctx.child(kid, 1)  # type: ignore[no-any-return]  # the function, not the name

    h = engine.start("parent-of-named")
    assert h.result(TIMEOUT) == 2
    assert engine.status(f"{h.run_id}/0").workflow == "kid-named"
