"""Steps: retry scheduling on a timer, attempt timeouts, unjournalable results; detach and idle."""

from __future__ import annotations

import threading
from typing import Any

from actorflow import RetryPolicy
from actorflow._context import WorkflowContext
from actorflow._messages import Rearm, TimerFired
from actorflow.errors import StepFailed

from .sim import Sim


def noop() -> None:
    return None


POLICY = RetryPolicy.exponential(max_attempts=3, initial_delay=2.0, multiplier=3.0, jitter=False)


async def flaky(ctx: WorkflowContext) -> Any:
    try:
        return await ctx.step("call", noop, retry=POLICY)
    except StepFailed as exc:
        return f"gave up after {exc.evidence['attempts']}"


def test_a_failed_attempt_is_journaled_and_retried_when_its_timer_fires() -> None:
    sim = Sim(flaky)
    sim.start()
    failed = sim.step_failed(0, OSError("down"))
    assert failed.events == [("step_attempt_failed", "call", 0)]
    assert failed.dispatched() == []
    [(_, arm, guard)] = failed.named("arm")
    assert (arm.due, arm.tag, arm.durable, guard) == (sim.clock.now() + 2.0, ("retry", 2), False, None)
    assert sim.data("step_attempt_failed") == {"attempt": 1, "error": "OSError: down", "retry_at": 1002.0}
    assert not sim.run.idle()  # a retry timer lives only in memory: the run must stay
    assert sim.send(TimerFired("r", 0, ("retry", 3))).ops == []  # not the retry it waits for
    retried = sim.send(TimerFired("r", 0, ("retry", 2)))
    assert retried.dispatched() == [(0, "call", 2, "step")]
    second = sim.step_failed(0, OSError("down"), attempt=2)
    assert second.named("arm")[0][1].due == sim.clock.now() + 6.0  # 2 * 3
    sim.send(TimerFired("r", 0, ("retry", 3)))
    last = sim.step_failed(0, OSError("still down"), attempt=3)
    assert last.events == [("step_failed", "call", 0), ("run_completed", "", -1)]
    assert last.named("finished")[0][2] == "gave up after 3"


def test_replay_resumes_the_retry_schedule_from_the_journal() -> None:
    sim = Sim(flaky)
    sim.start()
    sim.step_failed(0, OSError("down"))
    again = Sim(flaky, history=sim.history, clock=sim.clock)
    loaded = again.load()  # retry_at still ahead: wait for it, do not run the step now
    assert loaded.dispatched() == [] and loaded.named("arm")[0][1].tag == ("retry", 2)
    sim.clock.t += 5  # reloaded after retry_at: run attempt 2 at once
    late = Sim(flaky, history=sim.history, clock=sim.clock)
    assert late.load().dispatched() == [(0, "call", 2, "step")]


async def slow(ctx: WorkflowContext) -> Any:
    try:
        return await ctx.step("slow", noop, timeout=10)
    except StepFailed as exc:
        return type(exc).__name__


def test_an_attempt_times_out_on_its_timer_and_its_late_result_is_dropped() -> None:
    sim = Sim(slow)
    started = sim.start()
    [(_, arm, _)] = started.named("arm")
    assert (arm.due, arm.tag) == (sim.clock.now() + 10, ("timeout", 1))
    timed_out = sim.send(TimerFired("r", 0, ("timeout", 1)))
    assert timed_out.events == [("step_failed", "slow", 0), ("run_completed", "", -1)]
    assert timed_out.named("finished")[0][2] == "StepTimeout"
    assert sim.data("step_failed")["timeout"] is True


async def returns_a_lock(ctx: WorkflowContext) -> Any:
    await ctx.step("a", noop)
    return threading.Lock()


def test_an_unjournalable_result_fails_the_run_instead_of_completing_it() -> None:
    sim = Sim(returns_a_lock)
    sim.start()
    done = sim.step_ok(0, None)
    assert done.events == [("step_completed", "a", 0), ("run_failed", "", -1)]
    assert "PayloadError" in sim.data("run_failed")["error"]


async def tidy(ctx: WorkflowContext) -> Any:
    try:
        await ctx.sleep("nap", 3600)
    finally:
        ctx.report_progress(0.5)


def test_detach_closes_the_coroutine_and_its_finally_block_journals_nothing() -> None:
    sim = Sim(tidy)
    sim.start()
    assert sim.run.idle()
    before = list(sim.run.out.ops)
    sim.run.detach()  # what the host does to passivate it
    assert sim.run.coro is None and sim.run.out.ops == before  # the finally block wrote nothing
    assert sim.run.next_seq == len(sim.history)


async def three_waits(ctx: WorkflowContext) -> Any:
    return await ctx.gather(ctx.sleep("s", 5), ctx.wait_signal("w", timeout=9), ctx.step("x", noop, timeout=4))


def test_rearm_asks_again_for_every_timer_the_run_waits_on() -> None:
    sim = Sim(three_waits)
    sim.start()
    rearmed = sim.send(Rearm())
    tags = sorted((a[1].pos, str(a[1].tag)) for a in rearmed.named("arm"))
    assert tags == [(0, "sleep"), (1, "wait"), (2, "('timeout', 1)")]
    assert rearmed.events == []
