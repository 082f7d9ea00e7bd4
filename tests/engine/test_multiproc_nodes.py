"""Steps placed on member nodes of a convention (two admins on loopback ports stand for two machines).

The engine's admin leads a convention; `actorflow worker --join` adds a node advertising
`actorflow.worker` (plus `--capability` ones). Steps whose requirements (the engine's
`step_requirements`, or `ctx.step(..., requires=)`) the engine's own processes do not meet run in the
node's processes, seen by PID. kill -9 of the node's step actor mid-step, and of a whole node: the same
attempt runs again on a new actor / a node that joins later, and is journaled once. A step no node can
run waits, visible in `engine.waiting_for_placement()`. Every wait has a timeout; every process a test
started is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _node_cluster import ROOT, SECRET, TIMEOUT, Nodes, free_port, kill, running, session_of, until

import actorflow
from actorflow import ConfigError, Engine
from actorflow._multiproc._remote_steps import RemoteStep, StepWorkerActor, run_step


# --- step functions (importable on the nodes: this module is on their PYTHONPATH) --------------------
def _where(i: int) -> tuple[int, int]:
    time.sleep(0.01)
    return i, os.getpid()


def _gated(i: int, gate: str) -> tuple[int, int]:
    """Marks that it started (which process, which attempt), then waits for the test to open the gate."""
    info = actorflow.current_step()
    Path(gate, f"started-{i}-{os.getpid()}-{info.attempt}").touch()
    deadline = time.monotonic() + TIMEOUT
    while not Path(gate, "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)
    return i, os.getpid()


async def _pid_async() -> int:
    return os.getpid()


async def placed(ctx: Any, i: int) -> Any:
    a = await ctx.step("a", lambda: _where(i))
    b = await ctx.step("b", lambda: _where(a[0] + 1))
    c = await ctx.step("c", _pid_async)  # an async step goes to the node too
    return b[0], {a[1], b[1], c}


async def gated(ctx: Any, i: int, gate: str) -> Any:
    return await ctx.step("gated", lambda: _gated(i, gate))


async def on_gpu(ctx: Any, i: int, gate: str) -> Any:
    here = await ctx.step("here", lambda: _where(i))  # no requirements: the shard's own process
    there = await ctx.step("there", lambda: _gated(i, gate), requires={"gpu": True})
    return here[1], there[1]


def _started(gate: Path) -> list[tuple[int, int, int]]:
    """(i, pid, attempt) of every start of a gated step."""
    out = []
    for f in gate.glob("started-*"):
        _, i, pid, attempt = f.name.split("-")
        out.append((int(i), int(pid), int(attempt)))
    return out


def _admin_status(rt: Any) -> Any:
    """The admin's own Thespian_SystemStatus, asked from a handle of this thread's own."""
    from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

    from actorflow._net import open_actor_system

    handle = open_actor_system(admin_port=rt._system.admin_port, secret=SECRET)
    try:
        asys = handle.actor_system
        reply = asys.ask(asys._systemBase.adminAddr, Thespian_StatusReq(), 5.0)
    finally:
        handle.detach()
    assert isinstance(reply, Thespian_SystemStatus), reply
    return reply


def _completions(engine: Engine, run_id: str, step: str) -> int:
    return sum(1 for ev in engine.history(run_id) if ev.kind == "step_completed" and ev.name == step)


# --- tests -------------------------------------------------------------------------------------------
def test_steps_run_on_the_member_node_and_survive_its_actor_killed(
    tmp_path: Path, leader_port: int, nodes: Nodes
) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", admin_port=leader_port, secret=SECRET,
                    step_requirements={"actorflow.worker": True})
    engine.workflow()(placed)
    engine.workflow()(gated)
    gate = tmp_path / "gate"
    gate.mkdir()
    with engine:
        node = nodes.start()
        rt: Any = engine._runtime()
        engine_pids = rt._system.pids() | {os.getpid()}
        results = [h.result(timeout=TIMEOUT) for h in engine.start_many(placed, [(i,) for i in range(40)])]
        assert [r[0] for r in results] == [i + 1 for i in range(40)]
        ran = set().union(*(r[1] for r in results))
        node = Nodes.pids(os.getsid(next(iter(node))))  # now with the actor processes it started for us
        assert ran and ran <= node and not ran & engine_pids  # every step ran in the member node's processes

        # kill -9 of the node's step actor while it is inside steps: they run again on a new one
        handles = engine.start_many(gated, [(i, str(gate)) for i in range(6)])
        first = until(lambda: _started(gate), "a gated step to start on the node")
        victim = first[0][1]
        assert victim not in engine_pids
        os.kill(victim, signal.SIGKILL)
        # the steps that were on the victim start again, in another process, as the same attempt
        until(lambda: {i for i, pid, _ in _started(gate) if pid != victim} >= {i for i, pid, _ in _started(gate)
                                                                                if pid == victim},
               "the killed actor's steps to start again elsewhere")
        (gate / "go").touch()
        values = [h.result(timeout=TIMEOUT) for h in handles]
        assert [v[0] for v in values] == list(range(6))
        assert not {v[1] for v in values} & (engine_pids | {victim})
        rerun = {i for i, pid, _ in _started(gate) if pid == victim}
        assert rerun and all(attempt == 1 for _, _, attempt in _started(gate))
        for h in handles:  # journaled once each, whatever ran twice
            assert _completions(engine, h.run_id, "gated") == 1
        assert not engine.waiting_for_placement()
    # close() told the node's step actors to exit: the node keeps only its own admin processes
    actors = ran | {v[1] for v in values}
    until(lambda: not [p for p in actors if running(p)], "the node's step actors to exit after close()", 30)


def test_a_step_waits_for_a_capable_node_then_runs_there(tmp_path: Path, leader_port: int, nodes: Nodes) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", admin_port=leader_port, secret=SECRET)
    engine.workflow()(on_gpu)
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "go").touch()
    with engine:
        plain = nodes.start()  # a node without "gpu": it must not get the step
        rt: Any = engine._runtime()
        handle = engine.start(on_gpu, 1, str(gate))
        waits = until(lambda: [w for w in engine.waiting_for_placement() if "no node" in w.reason],
                       "the step to wait for placement (no node has the capability)")
        assert waits[0].requires == {"gpu": True} and waits[0].steps == ((handle.run_id, "there", 1),)
        time.sleep(1.0)  # a negative check: in this window the step must not run anywhere
        assert not _started(gate) and engine.waiting_for_placement()
        # the admin's failed creations must not silence its status replies (they held a local
        # address Thespian cannot pickle: every members/status request timed out while a step waited)
        members = rt.convention_members(timeout=3.0)
        assert [caps.get("actorflow.worker") for _, caps in members] == [True]
        # ... nor pile up in its receive queue, which the admin never reads (one per failed creation)
        assert _admin_status(rt).receivedMessages == []

        gpu_node = nodes.start("gpu=true")
        here, there = handle.result(timeout=TIMEOUT)
        assert here in rt.shard_pids.values()  # the step without requirements ran in the shard
        assert there in Nodes.pids(os.getsid(next(iter(gpu_node))))
        assert there not in Nodes.pids(os.getsid(next(iter(plain)))) | rt._system.pids()
        assert _completions(engine, handle.run_id, "there") == 1
        assert not engine.waiting_for_placement()


@pytest.mark.slow
def test_a_step_moves_to_a_node_that_joins_after_its_node_died(tmp_path: Path, leader_port: int, nodes: Nodes) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", admin_port=leader_port, secret=SECRET, node_timeout=3.0)
    engine.workflow()(on_gpu)
    gate = tmp_path / "gate"
    gate.mkdir()
    with engine:
        first = nodes.start("gpu=true")
        handle = engine.start(on_gpu, 1, str(gate))
        until(lambda: _started(gate), "the step to start on the gpu node")
        assert {pid for _, pid, _ in _started(gate)} <= Nodes.pids(os.getsid(next(iter(first))))
        assert not engine.waiting_for_placement()

        nodes.kill(os.getsid(next(iter(first))))  # the whole machine is gone: nobody reports it
        lost = until(engine.waiting_for_placement, "the step to wait again after its node was lost")
        assert "lost" in lost[0].reason and lost[0].steps == ((handle.run_id, "there", 1),)

        second = nodes.start("gpu=true")
        until(lambda: len(_started(gate)) >= 2, "the step to start again on the new gpu node")
        (gate / "go").touch()
        _, there = handle.result(timeout=TIMEOUT)
        assert there in Nodes.pids(os.getsid(next(iter(second))))
        assert [attempt for _, _, attempt in _started(gate)] == [1, 1]  # the same attempt, run again
        assert _completions(engine, handle.run_id, "there") == 1


@pytest.mark.slow
def test_close_abandons_a_step_on_a_node_and_it_runs_after_reopen(
    tmp_path: Path, leader_port: int, nodes: Nodes
) -> None:
    def engine() -> Engine:
        e = Engine(tmp_path / "data", system="multiproc", admin_port=leader_port, secret=SECRET, close_grace=0.2,
                   step_requirements={"actorflow.worker": True})
        e.workflow()(gated)
        return e

    gate = tmp_path / "gate"
    gate.mkdir()
    with engine() as e:
        nodes.start()
        handle = e.start(gated, 3, str(gate))
        until(lambda: _started(gate), "the step to start on the node")
    # closed while the step ran on the node: abandoned, not journaled as a failed attempt
    with engine() as e:
        kinds = [ev.kind for ev in e.history(handle.run_id)]
        assert "step_failed" not in kinds and "step_completed" not in kinds, kinds
        nodes.start()  # the engine's new admin leads a new convention: a node joins it
        (gate / "go").touch()
        assert e.result(handle.run_id, TIMEOUT)[0] == 3
        assert _completions(e, handle.run_id, "gated") == 1
        assert [attempt for _, _, attempt in _started(gate)] == [1, 1]


def test_system_host_port_joins_an_admin_started_by_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    env = {**os.environ, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "run"),
           # the engine's workflows travel by reference: importable where the admin runs
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACTORFLOW_SECRET", None)

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "actorflow._cli", "admin", *args, "--port", str(port)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=TIMEOUT)
        assert out.returncode in (0, 3), out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    started = cli("start")
    admin_pid = started["admin_pid"]
    try:
        monkeypatch.setenv("ACTORFLOW_RUNTIME_DIR", env["ACTORFLOW_RUNTIME_DIR"])  # the admin's key is in its record
        monkeypatch.delenv("ACTORFLOW_SECRET", raising=False)
        engine = Engine(tmp_path / "data", system=f"127.0.0.1:{port}")
        engine.workflow()(placed)
        with engine:
            rt: Any = engine._runtime()
            shards = set(rt.shard_pids.values())
            assert rt._system.started is False and all(session_of(p) == session_of(admin_pid) for p in shards)
            assert [h.result(timeout=TIMEOUT)[0] for h in engine.start_many(placed, [(i,) for i in range(10)])] \
                == [i + 1 for i in range(10)]
        assert not [p for p in shards if running(p)]  # the engine's processes are gone
        assert running(admin_pid) and cli("status")["running"] is True  # the admin it joined is not
    finally:
        stopped = cli("stop")
        assert stopped["stopped"] is True
        kill(admin_pid)
    assert not running(admin_pid)


def test_bad_node_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no admin listens there"):
        Engine(tmp_path / "a", system=f"127.0.0.1:{free_port()}").open()
    with pytest.raises(ConfigError, match="not an address of this machine"):
        Engine(tmp_path / "b", system="192.0.2.1:1900")
    with pytest.raises(ConfigError, match="'HOST:PORT'"):
        Engine(tmp_path / "c", system="cluster")
    with pytest.raises(ConfigError, match="options of system='multiproc'"):
        Engine(tmp_path / "d", step_requirements={"gpu": True})
    with pytest.raises(ConfigError, match="node_timeout"):
        Engine(tmp_path / "e", system="multiproc", node_timeout=0)
    with pytest.raises(ConfigError, match="capability 'gpu'"):
        Engine(tmp_path / "f", system="multiproc", step_requirements={"gpu": [1]})
    assert not list(tmp_path.iterdir())  # nothing was written


def test_requires_is_checked_and_never_runs_a_step_where_it_does_not_belong() -> None:
    async def bad(ctx: Any) -> Any:
        return await ctx.step("s", lambda: 1, requires={"": True})

    async def needs_gpu(ctx: Any) -> Any:
        return await ctx.step("s", lambda: 1, requires={"gpu": True})

    from actorflow.testing import memory_engine

    engine = memory_engine()
    engine.workflow()(bad)
    engine.workflow()(needs_gpu)
    with engine:
        with pytest.raises(actorflow.WorkflowFailed, match="non-empty strings"):
            engine.start(bad).result(timeout=TIMEOUT)
        # an embedded engine has no nodes: the step fails clearly instead of running here
        with pytest.raises(actorflow.WorkflowFailed, match="placed on nodes only by a multiprocess engine"):
            engine.start(needs_gpu).result(timeout=TIMEOUT)
        assert engine.waiting_for_placement() == []


def test_the_node_actor_runs_sync_and_async_steps_and_reports_errors() -> None:
    import cloudpickle

    from actorflow._types import StepInfo

    async def coro() -> int:
        return 7

    info = StepInfo("r", "s", 0, 1, "r#0:s")
    assert StepWorkerActor.actorSystemCapabilityCheck({"gpu": True, "x": 1}, {"gpu": True})
    assert not StepWorkerActor.actorSystemCapabilityCheck({"gpu": False}, {"gpu": True})
    done = run_step(RemoteStep(1, cloudpickle.dumps(lambda: 6), info))
    assert done.ok and cloudpickle.loads(done.payload) == 6
    done = run_step(RemoteStep(2, cloudpickle.dumps(coro), info))
    assert done.ok and cloudpickle.loads(done.payload) == 7
    done = run_step(RemoteStep(3, cloudpickle.dumps(lambda: 1 / 0), info))
    assert not done.ok and isinstance(cloudpickle.loads(done.payload), ZeroDivisionError)
