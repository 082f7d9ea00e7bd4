"""Replay: a recorded history resolves without effects; a diverging one blocks with evidence."""

from __future__ import annotations

from typing import Any

from actorflow._context import WorkflowContext
from actorflow._messages import StepDone

from .sim import Sim


def noop() -> None:
    return None


seen_replaying: list[bool] = []


async def three(ctx: WorkflowContext, x: int) -> int:
    a = await ctx.step("a", noop)
    seen_replaying.append(ctx.is_replaying)
    b = await ctx.step("b", noop)
    c = await ctx.step("c", noop)
    return int(a) + int(b) + int(c) + x


def test_first_run_dispatches_one_step_per_message_and_journals_each_result() -> None:
    sim = Sim(three, 100)
    started = sim.start()
    assert started.dispatched() == [(0, "a", 1, "step")]
    assert started.events == [] and started.dirty  # pending -> running
    done = sim.step_ok(0, 1)
    assert done.events == [("step_completed", "a", 0)]
    assert done.dispatched() == [(1, "b", 1, "step")]
    assert [op[0] for op in done.ops] == ["append", "dispatch"]  # the hot path: two ops
    sim.step_ok(1, 2)
    last = sim.step_ok(2, 3)
    assert last.events == [("step_completed", "c", 2), ("run_completed", "", -1)]
    assert last.named("finished") == [("finished", "completed", 106, None)]
    assert sim.record.state == "completed" and sim.record.progress == 1.0
    assert sim.data("run_completed") == 106


def test_replay_of_a_recorded_history_issues_no_effect_for_completed_steps() -> None:
    first = Sim(three, 100)
    first.start()
    first.step_ok(0, 1)
    first.step_ok(1, 2)  # "crash" here: c was dispatched, its result never journaled
    seen_replaying.clear()
    again = Sim(three, 100, history=first.history)
    loaded = again.load()
    assert loaded.dispatched() == [(2, "c", 1, "step")]  # only the step without a result
    assert loaded.events == []  # nothing journaled twice
    assert seen_replaying == [True]
    # a late result of the pre-crash attempt of b (its position is resolved) is discarded
    assert again.send(StepDone("r", 1, 1, True, (b"", 99))).ops == []
    assert again.step_ok(2, 3).named("finished")[0][2] == 106


def test_replay_of_a_finished_history_completes_without_dispatching() -> None:
    first = Sim(three, 0)
    first.start()
    for pos, v in enumerate((1, 2, 3)):
        first.step_ok(pos, v)
    history = first.history[:-1]  # up to the last step: run_completed was not journaled yet
    again = Sim(three, 0, history=history)
    loaded = again.load()
    assert loaded.dispatched() == []
    assert loaded.events == [("run_completed", "", -1)]
    assert loaded.named("finished")[0][1:3] == ("completed", 6)


async def renamed(ctx: WorkflowContext, x: int) -> int:
    await ctx.step("a", noop)
    await ctx.step("B-renamed", noop)
    return x


def test_changed_code_blocks_with_nondeterminism_evidence_and_runs_nothing() -> None:
    first = Sim(three, 0)
    first.start()
    first.step_ok(0, 1)
    first.step_ok(1, 2)
    again = Sim(renamed, 0, history=first.history)
    loaded = again.load()
    assert loaded.dispatched() == []
    assert loaded.events == [("run_blocked", "", -1)]
    assert loaded.named("blocked") == [("blocked",)]
    evidence = again.data("run_blocked")
    assert evidence["seq"] == 1
    assert evidence["expected"] == "step 'B-renamed'"
    assert evidence["recorded"] == "step_completed 'b'"
    assert again.record.state == "blocked" and "B-renamed" in (again.record.error or "")
    assert again.run.coro is None and again.run.detached


async def returns_early(ctx: WorkflowContext) -> str:
    await ctx.step("a", noop)
    return "early"


def test_returning_before_the_recorded_history_ends_is_nondeterminism_too() -> None:
    first = Sim(three, 0)
    first.start()
    first.step_ok(0, 1)
    first.step_ok(1, 2)
    again = Sim(returns_early, history=first.history)
    loaded = again.load()
    assert loaded.events == [("run_blocked", "", -1)]
    assert again.data("run_blocked")["expected"] == "workflow return"
    assert again.data("run_blocked")["recorded"] == "step_completed 'b'"


async def patched_wf(ctx: WorkflowContext) -> Any:
    flags = [ctx.patched("v2")]
    await ctx.step("a", noop)
    await ctx.step("b", noop)
    return flags


async def unpatched_wf(ctx: WorkflowContext) -> Any:
    await ctx.step("a", noop)
    await ctx.step("b", noop)
    return None


def test_patched_is_true_new_false_on_old_history_and_true_on_its_own_history() -> None:
    new = Sim(patched_wf)
    started = new.start()
    assert started.events == [("patch", "v2", 0)]
    new.step_ok(1, None)
    new.step_ok(2, None)
    assert new.data("run_completed") == [True]
    # an old run (recorded without the patch) replayed by the new code: False, nothing journaled
    old = Sim(unpatched_wf)
    old.start()
    old.step_ok(0, None)
    replay_old = Sim(patched_wf, history=old.history)
    loaded = replay_old.load()
    assert loaded.events == [] and loaded.dispatched() == [(1, "b", 1, "step")]
    assert replay_old.step_ok(1, None).named("finished")[0][2] == [False]
    # the new run's own history replays to True without journaling the patch again
    replay_new = Sim(patched_wf, history=new.history[:3])
    loaded = replay_new.load()
    assert loaded.events == [] and loaded.dispatched() == [(2, "b", 1, "step")]
    assert replay_new.step_ok(2, None).named("finished")[0][2] == [True]


async def values(ctx: WorkflowContext) -> Any:
    t = ctx.time()
    r = ctx.random()
    u = ctx.uuid4()
    ctx.report_progress(0.5)
    await ctx.step("a", noop)
    ctx.report_progress(0.9)
    return t, r, str(u)


def test_journaled_values_and_progress_replay_as_recorded() -> None:
    first = Sim(values)
    started = first.start()
    assert [e[0] for e in started.events] == ["now", "random", "uuid4", "progress"]
    done = first.step_ok(3, None)
    assert [e[0] for e in done.events] == ["step_completed", "progress", "run_completed"]
    result = first.data("run_completed")
    first.clock.t += 50  # a later replay sees the recorded instant, not the clock
    again = Sim(values, history=first.history[:-1], clock=first.clock)
    loaded = again.load()
    assert loaded.events == [("run_completed", "", -1)]  # progress not journaled twice
    assert loaded.named("finished")[0][2] == result
