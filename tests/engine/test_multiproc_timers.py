"""A multiprocess shard's timers fire on its actor's Thespian wakeupAfter (actorflow/_multiproc/_timer_wake.py).

The coalescing rules are unit-tested on `TimerWakeups`; the engine tests run durable sleeps on a
multiprocess engine (real clock) and wait on results with deadlines: sleeps of different lengths
fire in due order and on time, a short sleep that comes after a long one re-arms the wakeup for
its earlier time, and timers survive kill -9 of the shard process that holds them.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine
from actorflow._multiproc._timer_wake import TimerWake, TimerWakeups

from .conftest import alive, close_checked, wait_state

TIMEOUT = 30.0  # real seconds a result may take before the test fails (a loaded 2-core machine)
LATE_MEDIAN = 0.5  # generous: the shard's 1 s housekeeping/health wakeups would show as ~0.5 s and more
LATE_MAX = 3.0


# --- the coalescing rules ------------------------------------------------------------------------


def test_one_wakeup_for_the_earliest_due_time() -> None:
    w = TimerWakeups()
    assert w.arm(100.0) is None  # nothing due: no wakeup
    assert w.due(105.0) is True  # nothing pending: the actor must arm one
    armed = w.arm(100.0)
    assert armed is not None and armed[0] == pytest.approx(5.0)
    assert w.arm(100.0) is None  # pending for that time already
    assert w.due(107.0) is False and w.arm(100.5) is None  # a later time: the pending one fires first
    assert w.due(103.0) is True  # an earlier timer: a new wakeup, for its time
    earlier = w.arm(101.0)
    assert earlier is not None and earlier[0] == pytest.approx(2.0) and w.armed == 103.0
    # the first wakeup was superseded: when it fires it is ignored, the current one ticks the wheel
    assert w.fired(armed[1]) is False
    assert w.fired(earlier[1]) is True and w.armed == math.inf
    assert w.fired(earlier[1]) is False  # once


def test_a_wakeup_that_finds_nothing_due_re_arms() -> None:
    w = TimerWakeups()
    w.due(50.0)
    first = w.arm(49.0)
    assert first is not None
    assert w.fired(first[1])  # a hair early: the tick fires nothing and the wheel publishes 50.0 again
    assert w.due(50.0) is True
    again = w.arm(49.999)
    assert again is not None and again[0] == pytest.approx(0.001) and again[1] != first[1]
    assert w.arm(51.0) is None  # one pending; overdue times ask for a wakeup now, not a negative delay
    w.fired(again[1])
    w.due(40.0)
    late = w.arm(51.0)
    assert late is not None and late[0] == 0.0


def test_a_payload_is_only_its_own_arming() -> None:
    w = TimerWakeups()
    assert w.fired(TimerWake(0)) is False  # nothing armed: a stray payload ticks nothing


# --- on a multiprocess engine --------------------------------------------------------------------


async def nap(ctx: Any, seconds: float) -> float:
    await ctx.sleep("nap", seconds)
    return await ctx.step("woke", time.time)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def mp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    e = Engine(tmp_path_factory.mktemp("mp-timers") / "data", system="multiproc", shards=2, sync=False)
    e.workflow()(nap)
    e.open()
    yield e
    close_checked(e)


def _on_shard(rt: Any, shard: int, prefix: str) -> str:
    """A run id that the engine places on `shard`."""
    return next(f"{prefix}-{i}" for i in range(1000) if rt.shard_of(f"{prefix}-{i}") == shard)


def _due(handle: Any) -> float:
    (started,) = [ev for ev in handle.history() if ev.kind == "timer_started"]
    due: float = started.data
    return due


def _fired_at(handle: Any) -> float:
    (fired,) = [ev for ev in handle.history() if ev.kind == "timer_fired"]
    at: float = fired.at
    return at


def test_sleeps_of_different_lengths_fire_in_order_and_on_time(mp: Engine) -> None:
    lengths = [1.6, 0.4, 2.0, 0.8, 1.2, 2.4, 0.6, 1.0]  # both shards get some
    handles = mp.start_many(nap, [(s,) for s in lengths], run_ids=[f"order-{i}" for i in range(len(lengths))])
    woke = [h.result(timeout=TIMEOUT) for h in handles]
    dues = [_due(h) for h in handles]
    fired = [_fired_at(h) for h in handles]
    by_due = sorted(range(len(lengths)), key=lambda i: dues[i])
    assert by_due == sorted(range(len(lengths)), key=lambda i: lengths[i])
    assert [fired[i] for i in by_due] == sorted(fired), "timers fired out of due order"
    late = [fired[i] - dues[i] for i in range(len(lengths))]
    assert min(late) >= 0.0, f"a timer fired early: {late}"
    assert statistics.median(late) < LATE_MEDIAN and max(late) < LATE_MAX, f"timers fired late: {late}"
    assert all(w >= d for w, d in zip(woke, dues))


def test_a_shorter_sleep_after_a_long_one_re_arms_the_wakeup(mp: Engine) -> None:
    long = mp.start(nap, 20.0, run_id="rearm-long")  # the shard's wakeup is armed ~20 s ahead
    wait_state(mp, "rearm-long", "sleeping", timeout=TIMEOUT)
    # a short sleep on the same shard as the long one, so that its wakeup is the one to move earlier
    rt: Any = mp._runtime()
    short = mp.start(nap, 0.5, run_id=_on_shard(rt, rt.shard_of("rearm-long"), "rearm-short"))
    woke = short.result(timeout=TIMEOUT)
    assert _fired_at(short) - _due(short) < LATE_MAX  # not at the long one's time (~20 s)
    assert woke < _due(long)
    assert mp.status("rearm-long").state.value == "sleeping"
    mp.cancel("rearm-long")


def test_timers_survive_kill_9_of_the_shard_process(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", shards=2, sync=True)
    engine.workflow()(nap)
    with engine:
        rt: Any = engine._runtime()
        ids = [f"k-{i}" for i in range(40)]
        mine = [rid for rid in ids if rt.shard_of(rid) == 0]
        assert len(mine) >= 5
        # some due while the shard is down or restarting, some well after it is back
        lengths = [1.0 + (i % 4) * 1.5 for i in range(len(ids))]
        handles = engine.start_many(nap, [(s,) for s in lengths], run_ids=ids)
        for rid in ids:
            wait_state(engine, rid, "sleeping", timeout=TIMEOUT)
        victim = rt.shard_pids[0]
        os.kill(victim, signal.SIGKILL)
        woke = [h.result(timeout=TIMEOUT) for h in handles]
        assert rt.restarts >= 1 and rt.shard_pids[0] != victim
        assert not alive(victim)
        dues = [_due(h) for h in handles]
        assert all(w >= d for w, d in zip(woke, dues))
        for h in handles:  # each timer fired once, and its run went on once
            kinds = [ev.kind for ev in h.history()]
            assert kinds.count("timer_fired") == 1 and kinds.count("run_completed") == 1, (h.run_id, kinds)
        # a sleep started on the restarted shard fires on its new actor's wakeups
        after = engine.start(nap, 0.3, run_id=_on_shard(rt, 0, "after"))
        after.result(timeout=TIMEOUT)
        assert _fired_at(after) - _due(after) < LATE_MAX
