"""Saga and cancellation: compensations in reverse completion order, journaled; cancel at any wait."""

from __future__ import annotations

from typing import Any

from actorflow._context import WorkflowContext
from actorflow._messages import CancelRun, CompDone, StepDone, TimerFired
from actorflow.errors import Cancelled

from .sim import Sim


def noop() -> None:
    return None


def undo_a() -> None:
    return None


def undo_b() -> None:
    return None


async def trip(ctx: WorkflowContext) -> Any:
    await ctx.step("a", noop, compensate=undo_a)
    await ctx.step("b", noop, compensate=undo_b)
    await ctx.step("plain", noop)  # completed, no compensation
    await ctx.step("c", noop)
    return "booked"


def run_to_failure() -> Sim:
    sim = Sim(trip)
    sim.start()
    for pos in range(3):
        sim.step_ok(pos, None)
    return sim


def test_a_failed_step_compensates_completed_steps_in_reverse_order() -> None:
    sim = run_to_failure()
    failed = sim.step_failed(3, ValueError("no seats"))
    assert failed.events == [("step_failed", "c", 3)]
    assert failed.dispatched() == [(1, "b", 1, "comp")]  # the latest completed step first
    assert sim.run.phase == "compensating"
    comp_b = sim.send(CompDone("r", 1, True, None))
    assert comp_b.events == [("compensation_completed", "b", 1)]
    assert comp_b.dispatched() == [(0, "a", 1, "comp")]
    comp_a = sim.send(CompDone("r", 0, False, RuntimeError("refund refused")))
    assert comp_a.events == [("compensation_failed", "a", 0), ("run_failed", "", -1)]
    [(_, state, value, data)] = comp_a.named("finished")
    assert (state, value) == ("failed", None)
    assert data["compensation_errors"] == ["a: RuntimeError: refund refused"]
    assert "no seats" in (sim.record.error or "") and "refund refused" in (sim.record.error or "")


def test_replayed_compensations_are_not_dispatched_again() -> None:
    sim = run_to_failure()
    sim.step_failed(3, ValueError("no seats"))
    sim.send(CompDone("r", 1, True, None))  # "crash" while a's compensation runs
    again = Sim(trip, history=sim.history)
    loaded = again.load()
    assert loaded.events == [] and loaded.dispatched() == [(0, "a", 1, "comp")]
    done = again.send(CompDone("r", 0, True, None))
    assert done.events == [("compensation_completed", "a", 0), ("run_failed", "", -1)]


async def sleepy(ctx: WorkflowContext) -> Any:
    await ctx.step("a", noop, compensate=undo_a)
    try:
        await ctx.sleep("nap", 60)
    except Cancelled:
        raise
    return "woke"


def test_cancel_during_a_sleep_drops_its_timer_compensates_and_replies() -> None:
    sim = Sim(sleepy)
    sim.start()
    slept = sim.step_ok(0, None)
    [(_, due, pos, tag)] = slept.named("put_timer")
    assert (pos, tag) == (1, "sleep") and due == sim.clock.now() + 60
    cancel = sim.send(CancelRun("r", reply=7))
    assert cancel.events == [("cancel_requested", "", 1)]  # at the awaited position
    assert cancel.named("del_timer") == [("del_timer", due, 1)]
    assert cancel.dispatched() == [(0, "a", 1, "comp")]
    assert cancel.effects[-1] == ("reply", 7, True)
    end = sim.send(CompDone("r", 0, True, None))
    assert end.events[-1] == ("run_cancelled", "", -1)
    assert end.named("finished")[0][1] == "cancelled"
    assert sim.send(TimerFired("r", 1, "sleep")).ops == []  # the timer, had it fired anyway


def test_cancel_during_a_step_discards_its_late_result() -> None:
    sim = Sim(trip)
    sim.start()
    cancel = sim.send(CancelRun("r"))
    assert cancel.events == [("cancel_requested", "", 0), ("run_cancelled", "", -1)]
    assert not cancel.named("reply")  # nobody asked
    assert sim.run.steps_inflight == 0
    assert sim.send(StepDone("r", 0, 1, True, (b"", None))).ops == []


async def catches(ctx: WorkflowContext) -> Any:
    try:
        await ctx.wait_signal("go", timeout=30)
    except Cancelled:
        return await ctx.step("cleanup", noop)  # a workflow may handle its cancellation
    return "signalled"


def test_cancel_during_a_wait_is_delivered_there_and_recorded_for_replay() -> None:
    sim = Sim(catches)
    started = sim.start()
    [(_, due, _, _)] = started.named("put_timer")
    cancel = sim.send(CancelRun("r", reply=1))
    assert cancel.events == [("cancel_requested", "", 0)]
    assert cancel.named("del_timer") == [("del_timer", due, 0)]
    assert cancel.dispatched() == [(1, "cleanup", 1, "step")]
    # replay: the recorded cancel is delivered at the same position, without a new request
    again = Sim(catches, history=sim.history)
    loaded = again.load()
    assert loaded.events == [] and loaded.dispatched() == [(1, "cleanup", 1, "step")]
    assert again.step_ok(1, "tidied").named("finished")[0][1:3] == ("completed", "tidied")
    # and a second cancel is no new request
    assert sim.send(CancelRun("r", reply=2)).effects == [("reply", 2, True)]


def test_cancel_of_a_finished_run_says_false() -> None:
    sim = Sim(trip)
    sim.start()
    sim.send(CancelRun("r"))
    assert sim.run.phase == "finished"
    assert sim.send(CancelRun("r", reply=3)).effects == [("reply", 3, False)]
