"""The API contract on both actor systems: every call behaves the same embedded and multiprocess.

Workflows here are module-level functions (a multiprocess engine sends them to its processes by
cloudpickle); side effects are counted in files, since steps run in the shard processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow
from actorflow import Engine, RetryPolicy, RunState

TIMEOUT = 30.0


def _count(path: str) -> int:
    """Append a line to `path` (a step's side effect); returns how many lines it has now."""
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return len(f.readlines())


def _flaky(path: str, fail: int) -> str:
    if _count(path) <= fail:
        raise RuntimeError(f"transient failure in {os.getpid()}")
    return "ok"


async def three(ctx: Any, i: int) -> Any:
    a = await ctx.step("a", lambda: i)
    b = await ctx.step("b", lambda: a + 1)
    c = await ctx.step("c", lambda: (b * 2, os.getpid()))
    return c


async def waits(ctx: Any, name: str) -> Any:
    ctx.report_progress(0.5)
    return await ctx.wait_signal(name, timeout=60)


async def naps(ctx: Any, seconds: float) -> str:
    await ctx.sleep("nap", seconds)
    return "rested"


async def retried(ctx: Any, path: str) -> str:
    return str(await ctx.step("flaky", lambda: _flaky(path, 2), retry=RetryPolicy.linear(5, 0.05, jitter=False)))


async def saga(ctx: Any, path: str) -> str:
    await ctx.step("reserve", lambda: "r", compensate=lambda: _count(path))
    await ctx.step("charge", lambda: (_ for _ in ()).throw(ValueError("declined")))
    return "unreachable"


async def parent(ctx: Any, n: int) -> list[Any]:
    return [await ctx.child(three, i) for i in range(n)]


async def fails(ctx: Any) -> None:
    raise KeyError("boom")


WORKFLOWS = (three, waits, naps, retried, saga, parent, fails)


@pytest.fixture(params=["embedded", "multiproc"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "data", system=request.param, sync=False, shards=2)
    for wf in WORKFLOWS:
        e.workflow()(wf)
    with e:
        yield e


def test_start_run_result_and_status(engine: Engine) -> None:
    h = engine.start(three, 1, run_id="r-1")
    value, _pid = h.result(timeout=TIMEOUT)
    assert value == 4
    assert engine.run(three, 2, timeout=TIMEOUT)[0] == 6
    st = engine.status("r-1")
    assert st.state is RunState.COMPLETED and st.progress == 1.0
    assert [e.kind for e in engine.history("r-1")] == ["run_started"] + ["step_completed"] * 3 + ["run_completed"]
    assert engine.start(three, 99, run_id="r-1").result(timeout=TIMEOUT)[0] == 4  # same id: the existing run
    with pytest.raises(actorflow.RunConflict):
        engine.start(naps, 1.0, run_id="r-1")
    with pytest.raises(actorflow.WorkflowNotRegistered):
        engine.start("nope")
    with pytest.raises(actorflow.RunNotFound):
        engine.status("unknown")
    assert {r.run_id for r in engine.runs(state="completed", workflow="three")} >= {"r-1"}


def test_steps_run_in_the_hosts_processes(engine: Engine) -> None:
    pids = {h.result(timeout=TIMEOUT)[1] for h in engine.start_many(three, [(i,) for i in range(40)])}
    if engine.system == "multiproc":
        assert os.getpid() not in pids and len(pids) == 2  # one process per shard
    else:
        assert pids == {os.getpid()}


def test_start_many_and_astart(engine: Engine) -> None:
    handles = engine.start_many(three, [(i,) for i in range(50)])
    assert [h.result(timeout=TIMEOUT)[0] for h in handles] == [(i + 1) * 2 for i in range(50)]

    async def main() -> list[Any]:
        hs = await asyncio.gather(*(engine.astart(three, i) for i in range(50)))
        return await asyncio.gather(*(h.aresult(TIMEOUT) for h in hs))

    assert [v[0] for v in asyncio.run(main())] == [(i + 1) * 2 for i in range(50)]


def test_signal_monitor_and_timeout_free_wait(engine: Engine) -> None:
    h = engine.start(waits, "go")
    seen = []
    for st in engine.monitor(h.run_id, timeout=TIMEOUT):
        seen.append((st.state, st.progress))
        if st.state is RunState.WAITING:
            engine.signal(h.run_id, "go", {"payload": [1, 2]})
    assert h.result(timeout=TIMEOUT) == {"payload": [1, 2]}
    assert seen[-1][0] is RunState.COMPLETED and (RunState.WAITING, 0.5) in seen
    with pytest.raises(actorflow.RunFinished):
        engine.signal(h.run_id, "go", 1)


def test_signal_sent_before_the_run_waits_is_kept(engine: Engine) -> None:
    h = engine.start(waits, "early")
    engine.signal(h.run_id, "early", "first")
    assert h.result(timeout=TIMEOUT) == "first"


def test_durable_sleep(engine: Engine) -> None:
    assert engine.run(naps, 0.3, timeout=TIMEOUT) == "rested"
    assert [e.kind for e in engine.history(engine.runs(workflow="naps")[0].run_id)][1:3] == ["timer_started", "timer_fired"]


def test_retry_saga_and_failure(engine: Engine, tmp_path: Path) -> None:
    flaky = str(tmp_path / "flaky")
    assert engine.run(retried, flaky, timeout=TIMEOUT) == "ok"
    assert _count(flaky) == 4  # 3 attempts (2 failed), plus this call
    comp = str(tmp_path / "comp")
    with pytest.raises(actorflow.WorkflowFailed) as ei:
        engine.run(saga, comp, timeout=TIMEOUT)
    assert "declined" in str(ei.value)
    assert _count(comp) == 2  # the compensation ran once
    with pytest.raises(actorflow.WorkflowFailed, match="boom"):
        engine.run(fails, timeout=TIMEOUT)


def test_cancel(engine: Engine) -> None:
    h = engine.start(waits, "never")
    for st in engine.monitor(h.run_id, timeout=TIMEOUT):
        if st.state is RunState.WAITING:
            break
    assert engine.cancel(h.run_id) is True
    with pytest.raises(actorflow.Cancelled):
        h.result(timeout=TIMEOUT)
    assert engine.status(h.run_id).state is RunState.CANCELLED
    assert engine.cancel(h.run_id) is False


def test_children_across_shards(engine: Engine) -> None:
    results = engine.run(parent, 6, timeout=TIMEOUT)
    assert [r[0] for r in results] == [(i + 1) * 2 for i in range(6)]
    children = [r for r in engine.runs(workflow="three") if r.parent is not None]
    assert len(children) == 6 and {engine._runtime().shard_of(c.run_id) for c in children} == {0, 1}  # type: ignore[attr-defined]


def test_reopen_recovers_a_sleeping_run(tmp_path: Path) -> None:
    for system in ("multiproc", "embedded", "multiproc"):
        e = Engine(tmp_path / "d", system=system, sync=False)
        e.workflow()(naps)
        with e:
            if system == "multiproc" and not e.runs():
                e.start(naps, 1.0, run_id="sleeper")
                continue  # closed before it wakes
            assert e.result("sleeper", timeout=TIMEOUT) == "rested"


def test_workflow_registered_after_open_runs_and_survives_a_shard_restart(tmp_path: Path) -> None:
    """The shard processes get a workflow registered after open(), and a restarted shard (whose init
    has only open()'s workflows) gets it again and recovers its runs."""
    import signal as signals
    import time

    e = Engine(tmp_path / "d", system="multiproc", sync=False, shards=1)
    with e:
        e.workflow()(waits)
        h = e.start(waits, "late")
        deadline = time.monotonic() + TIMEOUT
        while e.status(h.run_id).state is not RunState.WAITING:
            assert time.monotonic() < deadline, "the late-registered workflow never ran"
            time.sleep(0.01)
        rt: Any = e._runtime()  # type: ignore[attr-defined]
        victim = rt.shard_pids[0]
        os.kill(victim, signals.SIGKILL)
        while rt.shard_pids[0] == victim:  # the supervisor started a new shard process
            assert time.monotonic() < deadline, "the shard was not restarted"
            time.sleep(0.01)
        e.signal(h.run_id, "late", 5)
        assert h.result(timeout=TIMEOUT) == 5


def test_a_workflow_registered_after_open_that_cannot_be_sent_is_refused_at_registration(engine: Engine) -> None:
    import threading

    lock = threading.Lock()

    async def holds_a_lock(ctx: Any) -> bool:
        return lock is not None

    if engine.system == "multiproc":
        with pytest.raises(actorflow.ConfigError, match="holds_a_lock") as ei:
            engine.workflow()(holds_a_lock)
        assert "lock" in str(ei.value)
        with pytest.raises(actorflow.WorkflowNotRegistered):
            engine.start(holds_a_lock)  # not half-registered
    else:  # one process: nothing to send
        engine.workflow()(holds_a_lock)
        assert engine.run(holds_a_lock, timeout=TIMEOUT) is True
