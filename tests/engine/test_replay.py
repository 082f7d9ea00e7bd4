"""Recovery by replay on a real LMDB journal: reopen a new Engine on the same data_dir and continue.

Covers: completed steps never re-run, consistent history, ctx.now/random/uuid4 and patched on replay,
durable sleeps across restarts (including overdue ones), non-determinism -> blocked -> fixed code resumes,
cancel of a blocked run, children across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow
from actorflow import Engine, MockClock, NondeterminismError, RunState

from .conftest import TIMEOUT, Calls, FileFlag, FileGate, Tally, embedded_only, wait_state, wait_until

# what module-level workflows and steps record, in files: they may run in an engine's shard processes
CALLS = Tally(name="calls")
SEEN = Calls(name="seen")
FLAKY_ATTEMPTS = Calls(name="flaky")

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _reset(tmp_path: Path) -> None:
    for c in (CALLS, SEEN, FLAKY_ATTEMPTS):
        c.reset(tmp_path)  # before the test's engines fork their processes


def count(name: str, value: Any = None) -> Callable[[], Any]:
    def fn() -> Any:
        CALLS.append(name)
        return value if value is not None else f"{name}-result"

    return fn


def open_engine(new_engine: Any, data_dir: Path, workflows: dict[str, Any], clock: Any = None, **kw: Any) -> Engine:
    e = new_engine(data_dir, clock=clock or MockClock(T0, autojump=True), open=False, **kw)
    for name, fn in workflows.items():
        e.workflow(name=name)(fn)
    e.open()
    return e


def _after(due: float) -> float:
    """Wait (real clock) until `due` has passed - the engine is closed meanwhile: the downtime."""
    wait_until(lambda: time.time() > due + 0.05, what="the downtime past the due time")
    return time.time()


def dicts(events: list[actorflow.Event]) -> list[dict[str, Any]]:
    return [ev.to_dict() for ev in events]


# --- workflows (module level: the same code is registered again on the reopened engine) ----------


async def order_v1(ctx: Any, order: str) -> Any:
    a = await ctx.step("reserve", count("reserve", {"order": order}))
    b = await ctx.step("charge", count("charge", 42))
    ok = await ctx.wait_signal("confirm")
    c = await ctx.step("ship", count("ship"))
    return a, b, ok, c


async def order_renamed(ctx: Any, order: str) -> Any:  # "charge" renamed: non-deterministic for old runs
    a = await ctx.step("reserve", count("reserve", {"order": order}))
    b = await ctx.step("bill", count("bill", 42))
    ok = await ctx.wait_signal("confirm")
    c = await ctx.step("ship", count("ship"))
    return a, b, ok, c


async def order_short(ctx: Any, order: str) -> Any:  # returns while recorded calls remain
    a = await ctx.step("reserve", count("reserve", {"order": order}))
    return a


async def values_wf(ctx: Any) -> Any:
    vals = (ctx.now(), ctx.random(), ctx.uuid4(), ctx.time())
    SEEN.append(vals)
    await ctx.wait_signal("go")
    return vals


async def patched_v1(ctx: Any) -> Any:
    await ctx.step("a", count("a"))
    await ctx.step("c", count("c"))
    await ctx.wait_signal("go")
    return "v1"


async def patched_v2(ctx: Any) -> Any:
    await ctx.step("a", count("a"))
    new = ctx.patched("add-b")  # between two journaled steps of old runs
    SEEN.append(new)
    if new:
        await ctx.step("b", count("b"))
    await ctx.step("c", count("c"))
    await ctx.wait_signal("go")
    return "v2-new" if new else "v2-old"


async def patched_v2_at_end(ctx: Any) -> Any:
    await ctx.step("a", count("a"))
    await ctx.step("c", count("c"))
    new = ctx.patched("at-end")  # where old runs stopped (waiting): they reach it with the new code
    SEEN.append(new)
    await ctx.wait_signal("go")
    return "v2-new" if new else "v2-old"


async def sleeper(ctx: Any, seconds: float = 3600) -> Any:
    await ctx.step("before", count("before"))
    await ctx.sleep("long", seconds)
    after = await ctx.step("after", count("after"))
    return after


async def child_wf(ctx: Any, x: int) -> Any:
    await ctx.step("child-step", count("child-step"))
    got = await ctx.wait_signal("child-go")
    return x, got


async def parent_wf(ctx: Any) -> Any:
    await ctx.step("parent-step", count("parent-step"))
    r = await ctx.child(child_wf, 7)
    return "parent", r


# --- tests ---------------------------------------------------------------------------------------


def test_recovery_continues_without_rerunning_steps(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    h = e1.start("order", "o-1", run_id="r1")
    wait_state(e1, "r1", "waiting")
    hist1 = dicts(e1.history("r1"))
    e1.close()
    assert CALLS == {"reserve": 1, "charge": 1}

    e2 = open_engine(new_engine, tmp_path, {"order": order_v1})
    assert e2.status("r1").state == RunState.WAITING
    e2.signal("r1", "confirm", True)
    assert e2.result("r1", TIMEOUT) == ({"order": "o-1"}, 42, True, "ship-result")
    assert CALLS == {"reserve": 1, "charge": 1, "ship": 1}
    hist2 = dicts(e2.history("r1"))
    assert hist2[: len(hist1)] == hist1  # the journal only grew
    assert [e["kind"] for e in hist2[len(hist1):]] == ["signal_received", "step_completed", "run_completed"]
    assert [e["seq"] for e in hist2] == list(range(len(hist2)))
    assert h.run_id == "r1"


def test_recovery_of_run_in_flight_at_close(tmp_path: Path, new_engine: Any) -> None:
    gate = FileGate(tmp_path)
    keys = Calls(tmp_path)

    def step_b() -> str:
        keys.append(actorflow.current_step().idempotency_key)
        return gate("b-result")

    async def wf(ctx: Any) -> Any:
        a = await ctx.step("a", count("a"))
        b = await ctx.step("b", step_b)
        return a, b

    e1 = open_engine(new_engine, tmp_path, {"wf": wf})
    e1.start("wf", run_id="inflight")
    assert gate.entered.wait(TIMEOUT)
    e1.close(grace=0.01)  # step b abandoned while running
    gate.release.set()
    e2 = open_engine(new_engine, tmp_path, {"wf": wf})
    assert e2.result("inflight", TIMEOUT) == ("a-result", "b-result")  # recovered at open: state running
    assert CALLS["a"] == 1
    assert gate.calls == 2
    assert len(keys) == 2 and keys[0] == keys[1]  # the idempotency key is stable across the re-run


def test_open_returns_before_recovery_replays_the_runs(tmp_path: Path, new_engine: Any) -> None:
    """Recovery is the actors' first item, not part of open(): a restart with many unfinished runs
    is usable at once (here, replay sits in workflow code until the test has seen open() return)."""
    gate = FileGate(tmp_path)
    opened = FileFlag(str(tmp_path / "opened"))
    armed = Calls(tmp_path)
    seen_open_first = Calls(tmp_path)

    async def wf(ctx: Any) -> Any:
        a = await ctx.step("a", count("a"))
        if armed:  # replaying in the second engine
            seen_open_first.append(opened.wait(TIMEOUT))
        return a, await ctx.step("b", lambda: gate("b-result"))

    e1 = open_engine(new_engine, tmp_path, {"wf": wf})
    e1.start("wf", run_id="r")
    assert gate.entered.wait(TIMEOUT)
    e1.close(grace=0.01)  # step b abandoned while running: the run is recovered at the next open
    gate.release.set()
    armed.append(True)
    e2 = open_engine(new_engine, tmp_path, {"wf": wf})
    opened.set()
    assert e2.result("r", TIMEOUT) == ("a-result", "b-result")
    assert seen_open_first == [True]  # the replay was under way when open() had already returned
    assert CALLS["a"] == 1


def test_now_random_uuid_identical_on_replay(tmp_path: Path, new_engine: Any, system: str) -> None:
    e1 = open_engine(new_engine, tmp_path, {"values": values_wf}, clock=MockClock(T0))
    e1.start("values", run_id="v")
    wait_state(e1, "v", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"values": values_wf}, clock=MockClock(T0 + 12345))
    e2.signal("v", "go")
    result = e2.result("v", TIMEOUT)
    assert len(SEEN) == 2  # first execution + replay
    assert SEEN[0] == SEEN[1] == result
    now, rnd, uid, t = result
    if system == "embedded":
        assert now.timestamp() == T0 == t  # the first engine's clock, not the reopened one's
    else:
        assert abs(now.timestamp() - t) < 5 and t < e2.history("v")[-1].at  # read (once) by the first
    assert now.tzinfo is not None
    assert 0.0 <= rnd < 1.0
    assert uid.version == 4
    kinds = [e.kind for e in e2.history("v")]
    assert kinds[1:5] == ["now", "random", "uuid4", "now"]


def test_patched_true_for_new_runs_false_for_old_journals(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"p": patched_v1})
    e1.start("p", run_id="old")
    wait_state(e1, "old", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"p": patched_v2})
    e2.signal("old", "go")
    assert e2.result("old", TIMEOUT) == "v2-old"
    assert SEEN == [False]
    assert [e.kind for e in e2.history("old")].count("patch") == 0
    h = e2.start("p", run_id="new")
    wait_state(e2, "new", "waiting")
    h.signal("go")
    assert h.result(TIMEOUT) == "v2-new"
    assert SEEN == [False, True]
    assert CALLS == {"a": 2, "b": 1, "c": 2}
    assert [(e.kind, e.name) for e in e2.history("new") if e.kind == "patch"] == [("patch", "add-b")]
    # the new run replays with patched() True again
    e2.close()
    e3 = open_engine(new_engine, tmp_path, {"p": patched_v2})
    assert e3.result("new", TIMEOUT) == "v2-new"


def test_patched_at_the_point_an_old_run_waits_is_true(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"p": patched_v1})
    e1.start("p", run_id="old")
    wait_state(e1, "old", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"p": patched_v2_at_end})
    e2.signal("old", "go")
    assert e2.result("old", TIMEOUT) == "v2-new"
    assert SEEN == [True]


def test_patched_replay_of_a_new_journal(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"p": patched_v2})
    e1.start("p", run_id="pn")
    wait_state(e1, "pn", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"p": patched_v2})
    e2.signal("pn", "go")
    assert e2.result("pn", TIMEOUT) == "v2-new"
    assert SEEN == [True, True]
    assert CALLS == {"a": 1, "b": 1, "c": 1}
    assert [(e.kind, e.name, e.pos) for e in e2.history("pn") if e.kind == "patch"] == [("patch", "add-b", 1)]


@embedded_only("MockClock: reopened 100 s into a 3600 s sleep, then moved past its due time")
def test_long_sleep_survives_restart(tmp_path: Path, make_engine: Any) -> None:
    new_engine = make_engine
    e1 = open_engine(new_engine, tmp_path, {"sleeper": sleeper}, clock=MockClock(T0))
    e1.start("sleeper", run_id="s")
    wait_state(e1, "s", "sleeping")
    e1.close()
    clock = MockClock(T0 + 100)
    e2 = open_engine(new_engine, tmp_path, {"sleeper": sleeper}, clock=clock)
    assert e2.status("s").state == RunState.SLEEPING
    with pytest.raises(TimeoutError):
        e2.result("s", timeout=0.05)
    clock.advance(3500)
    assert e2.result("s", TIMEOUT) == "after-result"
    assert CALLS == {"before": 1, "after": 1}


def test_overdue_sleep_fires_after_downtime(tmp_path: Path, new_engine: Any, system: str) -> None:
    e1 = open_engine(new_engine, tmp_path, {"sleeper": sleeper}, clock=MockClock(T0))
    e1.start("sleeper", 3600 if system == "embedded" else 0.3, run_id="late")
    wait_state(e1, "late", "sleeping")
    due = [e.data for e in e1.history("late") if e.kind == "timer_started"][0]
    e1.close()
    # reopened long after the timer was due: it fires late, it is never lost
    later = T0 + 10 * 3600 if system == "embedded" else _after(due)
    e2 = open_engine(new_engine, tmp_path, {"sleeper": sleeper}, clock=MockClock(later))
    assert e2.result("late", TIMEOUT) == "after-result"
    fired = [e for e in e2.history("late") if e.kind == "timer_fired"]
    assert len(fired) == 1 and fired[0].at >= later


def test_nondeterminism_blocks_then_fixed_code_resumes(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    e1.start("order", "o-2", run_id="nd")
    wait_state(e1, "nd", "waiting")
    e1.close()

    e2 = open_engine(new_engine, tmp_path, {"order": order_renamed})
    e2.signal("nd", "confirm", "yes")  # wakes the run: it replays with the changed code
    st = wait_state(e2, "nd", "blocked")
    assert "'nd'" in st.error and "charge" in st.error and "bill" in st.error
    assert "position 1" in st.error
    ev = e2.history("nd")[-1]
    assert ev.kind == "run_blocked"
    assert ev.data["seq"] == 1
    assert "bill" in ev.data["expected"] and "charge" in ev.data["recorded"]
    assert [s.state for s in e2.monitor("nd")] == [RunState.BLOCKED]  # monitor ends at blocked
    with pytest.raises(TimeoutError):
        e2.result("nd", timeout=0.05)
    assert CALLS == {"reserve": 1, "charge": 1}  # the changed code ran no step
    e2.close()

    e3 = open_engine(new_engine, tmp_path, {"order": order_v1})
    assert e3.result("nd", TIMEOUT) == ({"order": "o-2"}, 42, "yes", "ship-result")
    assert e3.status("nd").error is None
    assert CALLS == {"reserve": 1, "charge": 1, "ship": 1}


def test_nondeterminism_error_evidence_type() -> None:
    err = NondeterminismError("r", 3, "step 'x'", "step_completed 'y'")
    assert (err.run_id, err.seq, err.expected, err.recorded) == ("r", 3, "step 'x'", "step_completed 'y'")


def test_workflow_returning_early_is_nondeterministic(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    e1.start("order", "o-3", run_id="short")
    wait_state(e1, "short", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"order": order_short})
    e2.signal("short", "confirm", True)
    st = wait_state(e2, "short", "blocked")
    assert "workflow return" in st.error
    assert e2.history("short")[-1].kind == "run_blocked"


def test_cancel_blocked_run_runs_no_code(tmp_path: Path, new_engine: Any) -> None:
    comp_calls = Calls(tmp_path)

    async def with_comp(ctx: Any) -> Any:
        await ctx.step("a", count("a"), compensate=lambda: comp_calls.append("undo"))
        await ctx.wait_signal("go")
        return "x"

    async def with_comp_changed(ctx: Any) -> Any:
        await ctx.step("A", count("A"), compensate=lambda: comp_calls.append("undo"))
        await ctx.wait_signal("go")
        return "x"

    e1 = open_engine(new_engine, tmp_path, {"wf": with_comp})
    e1.start("wf", run_id="cb")
    wait_state(e1, "cb", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"wf": with_comp_changed})
    e2.signal("cb", "go")
    wait_state(e2, "cb", "blocked")
    e2.close()
    # reopened with the still-wrong code: the blocked run is blocked again at recovery
    e3 = open_engine(new_engine, tmp_path, {"wf": with_comp_changed})
    wait_state(e3, "cb", "blocked")
    assert e3.cancel("cb") is True
    with pytest.raises(actorflow.Cancelled):
        e3.result("cb", TIMEOUT)
    assert e3.status("cb").state == RunState.CANCELLED
    assert e3.history("cb")[-1].kind == "run_cancelled"
    assert CALLS == {"a": 1}
    assert comp_calls == []  # no code ran
    assert e3.cancel("cb") is False


def test_cancel_right_after_blocking(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    e1.start("order", "o", run_id="cb2")
    wait_state(e1, "cb2", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"order": order_renamed})
    e2.signal("cb2", "confirm")
    wait_state(e2, "cb2", "blocked")
    assert e2.cancel("cb2", timeout=TIMEOUT) is True
    assert e2.status("cb2").state == RunState.CANCELLED
    kinds = [e.kind for e in e2.history("cb2")]
    assert kinds[-2:] == ["run_blocked", "run_cancelled"]
    e2.close()
    e3 = open_engine(new_engine, tmp_path, {"order": order_v1})  # stays cancelled
    assert e3.status("cb2").state == RunState.CANCELLED
    with pytest.raises(actorflow.Cancelled):
        e3.result("cb2", TIMEOUT)


def test_blocked_run_cancelled_with_workflow_unregistered(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    e1.start("order", "o", run_id="orphan")
    wait_state(e1, "orphan", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {})
    assert e2.status("orphan").state == RunState.WAITING
    assert e2.cancel("orphan") is True
    assert e2.status("orphan").state == RunState.CANCELLED


def test_parent_and_child_recover(tmp_path: Path, new_engine: Any) -> None:
    wfs = {"parent": parent_wf, "child": child_wf}
    e1 = open_engine(new_engine, tmp_path, wfs)
    e1.start("parent", run_id="P")
    wait_state(e1, "P/1", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, wfs)
    e2.signal("P/1", "child-go", "go!")
    assert e2.result("P", TIMEOUT) == ("parent", (7, "go!"))
    assert CALLS == {"parent-step": 1, "child-step": 1}


def test_signals_sent_while_closed_run_is_passivated_or_recovering(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    for i in range(20):
        e1.start("order", f"o{i}", run_id=f"many-{i}")
    wait_until(lambda: len(e1.runs(state="waiting")) == 20, what="20 waiting runs")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"order": order_v1})
    for i in range(20):
        e2.signal(f"many-{i}", "confirm", i)
    assert [e2.result(f"many-{i}", TIMEOUT)[2] for i in range(20)] == list(range(20))
    assert CALLS == {"reserve": 20, "charge": 20, "ship": 20}


def test_signal_journaled_but_not_delivered_before_a_crash(tmp_path: Path, new_engine: Any) -> None:
    """A signal that is in the inbox when the engine stops reaches the waiting run after reopening."""
    from storage import LmdbJournal

    e1 = open_engine(new_engine, tmp_path, {"order": order_v1})
    e1.start("order", "o", run_id="inbox")
    wait_state(e1, "inbox", "waiting")
    e1.close()
    journal = LmdbJournal(tmp_path)  # what signal() made durable just before a crash
    batch = journal.batch()
    batch.put_signal("inbox", "confirm", "from-the-inbox")
    journal.commit(batch)
    journal.close()
    e2 = open_engine(new_engine, tmp_path, {"order": order_v1}, clock=MockClock(T0))  # no autojump
    assert e2.result("inbox", TIMEOUT)[2] == "from-the-inbox"
    assert CALLS == {"reserve": 1, "charge": 1, "ship": 1}


async def progress_wf(ctx: Any) -> Any:
    await ctx.step("a", count("a"))
    ctx.report_progress(0.3)
    await ctx.wait_signal("go")
    ctx.report_progress(0.6)
    return "done"


def test_progress_not_journaled_again_on_replay(tmp_path: Path, new_engine: Any) -> None:
    e1 = open_engine(new_engine, tmp_path, {"p": progress_wf})
    e1.start("p", run_id="prog")
    wait_state(e1, "prog", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"p": progress_wf})
    assert e2.status("prog").progress == 0.3
    e2.signal("prog", "go")
    assert e2.result("prog", TIMEOUT) == "done"
    assert [e.data for e in e2.history("prog") if e.kind == "progress"] == [0.3, 0.6]


def flaky() -> str:
    attempt = actorflow.current_step().attempt
    FLAKY_ATTEMPTS.append(attempt)
    if attempt == 1:
        raise RuntimeError("first attempt fails")
    return f"ok on attempt {attempt}"


async def retry_wf(ctx: Any) -> Any:
    return await ctx.step("flaky", flaky, retry=actorflow.RetryPolicy.linear(3, delay=1000.0, jitter=False))


@embedded_only("MockClock: reopened 10 s into a 1000 s retry backoff, then moved past it")
def test_retry_backoff_survives_restart(tmp_path: Path, make_engine: Any) -> None:
    new_engine = make_engine
    e1 = open_engine(new_engine, tmp_path, {"r": retry_wf}, clock=MockClock(T0))
    e1.start("r", run_id="retry")
    wait_until(lambda: any(e.kind == "step_attempt_failed" for e in e1.history("retry")), what="attempt 1 failed")
    e1.close()
    clock = MockClock(T0 + 10)
    e2 = open_engine(new_engine, tmp_path, {"r": retry_wf}, clock=clock)
    with pytest.raises(TimeoutError):
        e2.result("retry", timeout=0.05)  # the retry is not due yet
    clock.advance(1000)
    assert e2.result("retry", TIMEOUT) == "ok on attempt 2"
    assert FLAKY_ATTEMPTS == [1, 2]


async def wait_timeout_wf(ctx: Any, timeout: float = 600) -> Any:
    try:
        return await ctx.wait_signal("answer", timeout=timeout)
    except actorflow.WaitTimeout:
        return "timed out"


def test_wait_timeout_due_during_downtime(tmp_path: Path, new_engine: Any, system: str) -> None:
    e1 = open_engine(new_engine, tmp_path, {"w": wait_timeout_wf}, clock=MockClock(T0))
    e1.start("w", 600 if system == "embedded" else 0.3, run_id="wt")
    wait_state(e1, "wt", "waiting")
    due = [e.data for e in e1.history("wt") if e.kind == "wait_started"][0]
    e1.close()
    later = T0 + 3600 if system == "embedded" else _after(due)
    e2 = open_engine(new_engine, tmp_path, {"w": wait_timeout_wf}, clock=MockClock(later))
    assert e2.result("wt", TIMEOUT) == "timed out"


def test_cancelling_a_blocked_child_fails_its_waiting_parent(tmp_path: Path, new_engine: Any) -> None:
    async def child_v1(ctx: Any) -> Any:
        await ctx.step("a", lambda: 1)
        return await ctx.wait_signal("go")

    async def child_v2(ctx: Any) -> Any:
        await ctx.step("renamed", lambda: 1)
        return await ctx.wait_signal("go")

    async def parent(ctx: Any) -> Any:
        try:
            return await ctx.child("child")
        except actorflow.Cancelled:
            return "child cancelled"

    e1 = open_engine(new_engine, tmp_path, {"child": child_v1, "parent": parent})
    e1.start("parent", run_id="p")
    wait_state(e1, "p/0", "waiting")
    e1.close()
    e2 = open_engine(new_engine, tmp_path, {"child": child_v2, "parent": parent})
    e2.signal("p/0", "go", "x")  # wakes the passivated child: its replay diverges
    wait_state(e2, "p/0", "blocked")
    assert e2.cancel("p/0", timeout=TIMEOUT) is True
    assert e2.result("p", TIMEOUT) == "child cancelled"
