"""Waits on the outside world: gather, children, sleeps, signals; and when a run may passivate."""

from __future__ import annotations

from typing import Any

from actorflow._context import WorkflowContext
from actorflow._messages import (
    CancelRun,
    ChildCreated,
    ChildDone,
    CreateChild,
    SignalArrived,
    TimerFired,
    WatchChild,
)
from actorflow.errors import ConfigError, StepFailed, WorkflowFailed

from .sim import Sim


def noop() -> None:
    return None


async def fan_out(ctx: WorkflowContext) -> Any:
    try:
        return await ctx.gather(ctx.step("x", noop), ctx.step("y", noop), ctx.step("z", noop))
    except StepFailed as exc:
        return f"first error: {exc.evidence['step']}: {exc.evidence['error']}"


def test_gather_dispatches_together_and_returns_results_in_argument_order() -> None:
    sim = Sim(fan_out)
    started = sim.start()
    assert started.dispatched() == [(0, "x", 1, "step"), (1, "y", 1, "step"), (2, "z", 1, "step")]
    assert sim.step_ok(2, "Z").ops[0][0] == "append" and not sim.run.idle()
    sim.step_ok(0, "X")
    done = sim.step_ok(1, "Y")
    assert done.named("finished")[0][2] == ["X", "Y", "Z"]
    # replayed in completion order from the journal: same result
    again = Sim(fan_out, history=sim.history[:-1])
    assert again.load().named("finished")[0][2] == ["X", "Y", "Z"]


def test_gather_reraises_the_first_error_in_argument_order_after_all_finish() -> None:
    sim = Sim(fan_out)
    sim.start()
    sim.step_failed(2, ValueError("z broke"))
    sim.step_failed(1, ValueError("y broke"))
    assert sim.run.phase == "running"  # x still running: gather waits for all
    done = sim.step_ok(0, "X")
    assert done.named("finished")[0][2] == "first error: y: ValueError: y broke"


async def kid(ctx: WorkflowContext, n: int) -> int:
    return n * 2


async def parent(ctx: WorkflowContext) -> Any:
    await ctx.step("prep", noop)
    try:
        return await ctx.child(kid, 5)
    except WorkflowFailed as exc:
        return f"child failed: {exc.error}"


def test_child_is_created_with_a_positional_id_watched_and_its_outcome_journaled() -> None:
    sim = Sim(parent, workflows={"kid": kid})
    sim.start()
    started = sim.step_ok(0, None)
    assert started.events[-1] == ("child_started", "kid", 1)
    assert sim.data("child_started") == {"run_id": "r/1"}
    [(_, child_id, name, args, args_copy, pos)] = started.named("create_child")
    assert (child_id, name, args, args_copy, pos) == ("r/1", "kid", (5,), (5,), 1)
    assert started.named("send") == [("send", WatchChild("r/1", "r", 1))]
    assert sim.run.idle()  # waiting on a child only: may passivate
    done = sim.send(ChildDone("r", 1, "child_completed", 10))
    assert done.events == [("child_completed", "kid", 1), ("run_completed", "", -1)]
    assert done.named("finished")[0][2] == 10
    # replay re-attaches to the same child without creating it again
    again = Sim(parent, workflows={"kid": kid}, history=sim.history[:3])
    loaded = again.load()
    assert loaded.named("create_child") == [] and loaded.named("send") == [("send", WatchChild("r/1", "r", 1))]


def _elsewhere(run_id: str) -> bool:
    return True  # every child's journal is another process's (a shard on a member node)


def test_a_child_journaled_elsewhere_is_asked_of_its_owner_and_child_started_journaled_once_it_answered() -> None:
    sim = Sim(parent, workflows={"kid": kid}, elsewhere=_elsewhere)
    sim.start()
    asked = sim.step_ok(0, None)
    assert asked.events == [("step_completed", "prep", 0)]  # nothing of the child yet
    assert asked.named("create_elsewhere") == [("create_elsewhere", CreateChild("r/1", "kid", (5,), "r", 1))]
    assert asked.named("create_child") == [] and asked.named("send") == []
    assert sim.run.record.state == "running" and not sim.run.idle()  # a recovery loads it, to ask again
    # an outcome before the answer is not journaled (child_started is not): it comes again, watched
    assert sim.send(ChildDone("r", 1, "child_completed", 10)).events == []
    # replayed before the answer (a crash): the same child is asked for again
    again = Sim(parent, workflows={"kid": kid}, history=sim.history, elsewhere=_elsewhere)
    assert again.load().named("create_elsewhere") == asked.named("create_elsewhere")
    created = sim.send(ChildCreated("r", 1, "r/1"))
    assert created.events == [("child_started", "kid", 1)] and sim.data("child_started") == {"run_id": "r/1"}
    assert created.named("send") == [("send", WatchChild("r/1", "r", 1))]
    assert sim.run.record.state == "waiting" and sim.run.idle()
    assert sim.send(ChildCreated("r", 1, "r/1")).ops == []  # a repeated request's answer
    done = sim.send(ChildDone("r", 1, "child_completed", 10))
    assert done.events == [("child_completed", "kid", 1), ("run_completed", "", -1)]
    assert done.named("finished")[0][2] == 10
    # replayed once child_started is journaled: watched again, not asked again
    again = Sim(parent, workflows={"kid": kid}, history=sim.history[:3], elsewhere=_elsewhere)
    loaded = again.load()
    assert loaded.named("create_elsewhere") == [] and loaded.named("send") == [("send", WatchChild("r/1", "r", 1))]


def test_a_parent_cancelled_while_its_child_is_created_elsewhere_cancels_it_once_it_exists() -> None:
    sim = Sim(parent, workflows={"kid": kid}, elsewhere=_elsewhere)
    sim.start()
    sim.step_ok(0, None)
    cancel = sim.send(CancelRun("r"))
    assert ("send", CancelRun("r/1")) in cancel.effects  # may reach the owner before the child exists
    created = sim.send(ChildCreated("r", 1, "r/1"))
    assert created.effects == [("send", CancelRun("r/1"))] and created.events == []


def test_a_child_journaled_elsewhere_whose_id_belongs_to_another_workflow_fails_at_the_parent() -> None:
    sim = Sim(parent, workflows={"kid": kid}, elsewhere=_elsewhere)
    sim.start()
    sim.step_ok(0, None)
    done = sim.send(ChildCreated("r", 1, "r/1", conflict="other"))
    assert [k for k, _, _ in done.events][:2] == ["child_started", "child_failed"]
    assert sim.data("child_failed")["conflict"] == "other"


def test_a_failed_child_raises_workflow_failed_in_the_parent() -> None:
    sim = Sim(parent, workflows={"kid": kid})
    sim.start()
    sim.step_ok(0, None)
    done = sim.send(ChildDone("r", 1, "child_failed", {"run_id": "r/1", "error": "ValueError: bad"}))
    assert done.named("finished")[0][2] == "child failed: ValueError: bad"


def test_cancelling_a_parent_cancels_its_child() -> None:
    sim = Sim(parent, workflows={"kid": kid})
    sim.start()
    sim.step_ok(0, None)
    cancel = sim.send(CancelRun("r"))
    assert ("send", CancelRun("r/1")) in cancel.effects


async def unknown_child(ctx: WorkflowContext) -> Any:
    return await ctx.child("nobody")


def test_an_unregistered_child_fails_the_parent_before_journaling_anything() -> None:
    sim = Sim(unknown_child)
    started = sim.start()
    assert started.events == [("run_failed", "", -1)]
    assert "nobody" in sim.data("run_failed")["error"]


async def sleeper(ctx: WorkflowContext) -> Any:
    await ctx.sleep("nap", 60)
    return await ctx.wait_signal("go")


def test_sleep_arms_a_durable_timer_and_a_fired_one_is_rederivable() -> None:
    sim = Sim(sleeper)
    started = sim.start()
    due = sim.clock.now() + 60
    assert started.events == [("timer_started", "nap", 0)]
    assert started.named("put_timer") == [("put_timer", due, 0, "sleep")]
    [(_, arm, guard)] = started.named("arm")
    assert (arm.due, arm.pos, arm.tag, arm.durable) == (due, 0, "sleep", True) and guard is sim.run.pending[0]
    assert sim.run.idle() and sim.record.state == "sleeping"
    fired = sim.send(TimerFired("r", 0, "sleep"))
    assert fired.events == [("timer_fired", "nap", 0)]
    assert fired.named("del_timer") == [("del_timer", due, 0)]
    assert fired.rederivable == 2 and guard.done  # the guard keeps a stale arm from being sent
    assert sim.record.state == "waiting"


def test_signals_are_taken_in_inbox_order_once_each() -> None:
    sim = Sim(sleeper)
    sim.start()
    sim.send(SignalArrived("r", "go", 8, "second"))  # arrives while sleeping: kept in the inbox
    sim.send(SignalArrived("r", "go", 5, "first"))
    assert sim.send(SignalArrived("r", "go", 5, "first")).ops == []  # a duplicate delivery
    woke = sim.send(TimerFired("r", 0, "sleep"))
    assert woke.named("del_signal") == [("del_signal", "go", 5)]
    assert woke.named("finished")[0][2] == "first"
    assert sim.data("signal_received") == {"payload": "first", "seq": 5}


def test_a_loaded_run_takes_signals_that_were_durable_before_it_loaded() -> None:
    first = Sim(sleeper)
    first.start()
    first.send(TimerFired("r", 0, "sleep"))
    again = Sim(sleeper, history=first.history, signals=[("go", 3, "hello")])
    loaded = again.load()
    assert loaded.events == [("signal_received", "go", 1), ("run_completed", "", -1)]
    assert loaded.named("del_signal") == [("del_signal", "go", 3)]


async def waits_with_timeout(ctx: WorkflowContext) -> Any:
    try:
        return await ctx.wait_signal("go", timeout=5)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__


def test_a_wait_times_out_on_its_durable_timer_or_disarms_it_when_signalled() -> None:
    sim = Sim(waits_with_timeout)
    sim.start()
    timed_out = sim.send(TimerFired("r", 0, "wait"))
    assert timed_out.events == [("wait_timeout", "go", 0), ("run_completed", "", -1)]
    assert timed_out.named("finished")[0][2] == "WaitTimeout"
    other = Sim(waits_with_timeout)
    other.start()
    got = other.send(SignalArrived("r", "go", 1, "yes"))
    [(_, disarm)] = got.named("disarm")
    assert (disarm.pos, disarm.tag) == (0, "wait") and got.named("del_timer")
    assert got.named("finished")[0][2] == "yes"


async def awaits_asyncio(ctx: WorkflowContext) -> Any:
    import asyncio

    try:
        await asyncio.sleep(0)
    except ConfigError as exc:
        return str(exc)
    return "accepted?"


def test_awaiting_anything_but_a_ctx_operation_raises_config_error_in_the_workflow() -> None:
    sim = Sim(awaits_asyncio)
    assert "no asyncio primitives" in sim.start().named("finished")[0][2]
