"""Leases and heartbeats: a stalled handler and a killed step worker lose their attempt (journaled),
the task runs again, and exactly one success is journaled; services heartbeat until cancelled."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import Cancelled, Engine
from actorflow.tasks import TaskCancelled, TaskContext, TaskRunning

from . import _qhandlers as q
from ._handlers import lines

T = 60.0


def _wait_for(cond: object, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _handler_events(e: Engine, eid: str) -> list[tuple[str, str]]:
    return [(ev.kind, str((ev.data or {}).get("error", "")) if isinstance(ev.data, dict) else "")
            for ev in e.history(eid) if ev.name == "handler"]


@pytest.mark.parametrize(("system", "procs"), [("embedded", 0), ("embedded", 1), ("multiproc", 1)])
def test_stalled_handler_loses_its_lease_and_runs_again_once(tmp_path: Path, system: str, procs: int) -> None:
    e = Engine(tmp_path / "d", system=system, sync=False, shards=2, step_processes=procs)
    # long enough that the healthy second attempt keeps its lease on a loaded machine (a 0.5 s lease
    # once expired before the thread of a healthy attempt was scheduled at load 12)
    e.task(lease=2.0)(q.stall_first)
    log = str(tmp_path / "run.log")
    with e:
        eid = e.enqueue("stall_first", {"path": log, "stall": 30})
        assert e.result(eid, T) == "done"
        events = _handler_events(e, eid)
        assert [k for k, _ in events] == ["step_failed", "step_completed"]  # one lost attempt, one success
        assert events[0][1].startswith("LeaseLost") and "2s lease" in events[0][1]
        # the lost thread's own end line may come before or after the second attempt's: not ordered
        assert [w for w in (ln.split()[0] for ln in lines(log)) if w != "stalled-ended"] == ["stall", "ok"]
        stalled_pid = int(lines(log)[0].split()[2])
        if procs:  # the stalled worker process was killed: its late result can never arrive
            _wait_for(lambda: not _alive(stalled_pid))
        else:  # a thread cannot be killed: it is told (ctx.cancelled) and its late result is discarded
            _wait_for(lambda: "stalled-ended cancelled=True" in lines(log))
            assert e.result(eid, T) == "done"
        assert sum(1 for k, _ in _handler_events(e, eid) if k == "step_completed") == 1


@pytest.mark.parametrize(("system", "procs"), [("embedded", 2), ("multiproc", 1)])
def test_kill_9_of_a_step_worker_mid_task_retries_it_with_one_success(tmp_path: Path, system: str, procs: int) -> None:
    e = Engine(tmp_path / "d", system=system, sync=False, shards=2, step_processes=procs)
    e.task(lease=30)(q.die_first)  # a long lease: the death itself must be noticed, not a timeout
    log = str(tmp_path / "run.log")
    with e:
        eid = e.enqueue("die_first", {"path": log})
        _wait_for(lambda: bool(lines(log)))
        victim = int(lines(log)[0].split()[1])
        assert victim != os.getpid()
        os.kill(victim, signal.SIGKILL)
        assert e.result(eid, T) == "survived"
        events = _handler_events(e, eid)
        assert [k for k, _ in events] == ["step_failed", "step_completed"]
        assert events[0][1].startswith("StepWorkerDied") and "attempt is lost" in events[0][1]
        assert [ln.split()[0] for ln in lines(log)] == ["victim", "ok"]
        assert int(lines(log)[1].split()[1]) != victim


def test_service_task_heartbeats_past_many_leases_until_cancelled(tmp_path: Path) -> None:
    e = Engine(tmp_path / "d", sync=False, shards=2)
    e.task(lease=0.3)(q.service)
    log = str(tmp_path / "beats.log")
    with e:
        eid = e.enqueue("service", {"path": log})
        _wait_for(lambda: len(lines(log)) >= 30)  # ~1.5 s: five leases' worth of heartbeats
        assert isinstance(e.task_status(eid), TaskRunning)
        assert not any(k == "step_failed" for k, _ in _handler_events(e, eid))  # never lost
        assert e.cancel_execution(eid)
        assert e.task_status(eid) == TaskCancelled(eid)
        n = len(lines(log))
        time.sleep(0.3)
        assert len(lines(log)) <= n + 1  # the revoke reached the running handler: it stopped


def test_lost_attempts_are_bounded(tmp_path: Path) -> None:
    """A handler that never heartbeats in time is not retried forever: after MAX_LOST + 1 lost
    attempts the execution fails, naming the lease (a dead letter)."""
    from actorflow.tasks._execution import MAX_LOST

    e = Engine(tmp_path / "d", sync=False, shards=2)

    @e.task(name="sleepy", lease=0.2)
    def sleepy(ctx: object, input: dict[str, object]) -> str:
        time.sleep(0.6)
        return "too late"

    with e:
        eid = e.enqueue("sleepy")
        with pytest.raises(Exception, match="lost 4 attempts; last: LeaseLost"):
            e.result(eid, T)
        assert [k for k, _ in _handler_events(e, eid)] == ["step_failed"] * (MAX_LOST + 1)
        assert [d.execution_id for d in e.dead_letters()] == [eid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("system", "procs"), [("embedded", 0), ("embedded", 1), ("multiproc", 1)])
def test_revoke_reaches_a_running_handler_also_in_a_step_worker_process(tmp_path: Path, system: str, procs: int) -> None:
    from ._handlers import record

    e = Engine(tmp_path / "d", system=system, sync=False, shards=2, step_processes=procs)
    e.task()(record)
    log = str(tmp_path / "rec.log")
    with e:
        eid = e.enqueue("record", {"path": log, "hold": 30})
        _wait_for(lambda: bool(lines(log)))
        assert e.cancel_execution(eid)
        assert e.task_status(eid) == TaskCancelled(eid)
        _wait_for(lambda: lines(log + ".cancelled") == [eid], 15)  # the handler saw ctx.cancelled and stopped


def test_a_lost_attempt_that_ends_late_leaves_the_new_attempt_cancelled(tmp_path: Path) -> None:
    """Two attempts of one execution run at once in this process: a hung one whose lease ran out,
    and its replacement. The execution is cancelled; the hung one ends after that: its cleanup must
    not clear the cancel mark the replacement reads (it did: `_leave` discarded the execution's)."""
    e = Engine(tmp_path / "d", sync=False, shards=2)
    calls = itertools.count()
    second_started, release_first, first_left = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def hung_then_polite(ctx: TaskContext, input: dict[str, Any]) -> str:
        if next(calls) == 0:
            release_first.wait(T)  # hung: never heartbeats, never reads ctx.cancelled
            return "late"
        second_started.set()
        while not first_left.wait(0.05):  # keeps its own lease (heartbeat raises once it is cancelled)
            with contextlib.suppress(Cancelled):
                ctx.heartbeat()
        seen.append(ctx.cancelled)
        return "second"

    e.task(name="hung_then_polite", lease=0.3)(hung_then_polite)
    e.add_task_hook("retry", lambda info: first_left.set() if info.attempt and release_first.is_set() else None)
    with e:
        eid = e.enqueue("hung_then_polite", {})
        assert second_started.wait(T)
        assert e.cancel_execution(eid)
        assert e.task_status(eid) == TaskCancelled(eid)
        release_first.set()  # the lost attempt returns now; its end hook (retry: lease lost) fires after its cleanup
        _wait_for(lambda: bool(seen))
        assert seen == [True]


def test_a_lost_attempt_that_ends_late_leaves_the_new_attempt_in_flight(tmp_path: Path) -> None:
    """The hung attempt's end must not take the running replacement out of the in-flight notes (it
    did: the end of any attempt removed the execution's). The notes are what a node's in-flight count
    in engine.workers() is made of (here the journal's running state also counts, so they are read)."""
    from actorflow.tasks._leases import INFLIGHT

    e = Engine(tmp_path / "d", sync=False, shards=2)
    calls = itertools.count()
    second_started, release_first, first_left, release_second = (threading.Event() for _ in range(4))

    def hung_then_held(ctx: TaskContext, input: dict[str, Any]) -> str:
        if next(calls) == 0:
            release_first.wait(T)  # hung: never heartbeats
            return "late"
        second_started.set()
        while not release_second.wait(0.05):
            ctx.heartbeat()
        return "second"

    e.task(name="hung_then_held", lease=0.3)(hung_then_held)
    e.add_task_hook("retry", lambda info: first_left.set() if release_first.is_set() else None)
    with e:
        eid = e.enqueue("hung_then_held", {})
        assert second_started.wait(T)
        assert e.workers()[0].in_flight == {"default": 1}
        release_first.set()
        assert first_left.wait(T)  # the lost attempt's end hook fires after its cleanup
        assert INFLIGHT.get(eid) == "default"
        assert e.workers()[0].in_flight == {"default": 1}
        assert {s.queue: s.in_flight for s in e.queue_stats()}["default"] == 1
        release_second.set()
        assert e.result(eid, T) == "second"
        _wait_for(lambda: e.workers()[0].in_flight == {})
