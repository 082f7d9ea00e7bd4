"""A member node owning a shard is lost while the engine runs, then joins again (issue 12, item 11).

Two admins on loopback ports stand for two machines, as in test_multiproc_node_shards.py: the engine
joins an admin started by the CLI, shard 1 is owned by the member node `nodeb`. The node's processes
are killed with -9 (its worker, its admin, the shard process): calls for shard 1's runs fail at once
with ShardUnavailable (not after their 30 s wait), runs of shard 0 go on. A new worker with the same
--node-id and --data-dir joins: the engine creates shard 1 on it again (no engine restart), the shard
reopens its journal and recovers its runs by replay - a sleeper, a run waiting for a signal and a
run between two steps all complete, and the step journaled before the kill is not run again. Every
process the test started is stopped by PID.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from _node_cluster import TIMEOUT, Nodes, free_port, kill, until

from actorflow._multiproc._routed import ShardUnavailable

from .test_multiproc_node_shards import NODE, _engine, _ids, _marks, admin, two_steps, waits_signal

__all__ = ["admin"]  # the fixture, imported for this module's tests


async def sleeper(ctx: Any, i: int) -> int:
    await ctx.sleep("nap", 4.0)
    return i


def _unavailable(call: Any) -> bool:
    try:
        call()
    except ShardUnavailable:
        return True
    return False


def _raises_at_once(call: Any) -> float:
    """Seconds `call()` took to raise ShardUnavailable."""
    t0 = time.monotonic()
    with pytest.raises(ShardUnavailable) as info:
        call()
    assert info.value.evidence.get("shard") == 1 and isinstance(info.value, ShardUnavailable)
    return time.monotonic() - t0


@pytest.mark.parametrize("port", ["new-port", "same-port"])
def test_a_lost_node_fails_its_shards_calls_at_once_and_its_shard_comes_back_when_it_rejoins(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes, port: str
) -> None:
    """Rejoining on another port is a new convention member (the engine asks its supervisor to create
    the shard again); on the same port Thespian itself reports the old shard gone (and it is created
    again once, not twice)."""
    data = ("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE, "--port", str(free_port()))
    sid = os.getsid(next(iter(nodes.start(args=data))))
    worker = nodes.procs[-1][0].pid
    where = tmp_path / "marks"
    where.mkdir()
    steps, sig, sleep, fresh = _ids("l", 1, 4)
    here = _ids("l", 0, 2)
    engine = _engine(tmp_path, leader_port, node_timeout=1.0)
    engine.workflow()(sleeper)
    with engine:
        rt: Any = engine._runtime()
        old = rt.shard_pids[1]
        h_steps = engine.start(two_steps, 1, str(where), run_id=steps)
        h_sig = engine.start(waits_signal, 2, run_id=sig)
        h_sleep = engine.start(sleeper, 3, run_id=sleep)
        until(lambda: len(_marks(where, "b")) == 1, "step b of the run on the node to start")
        until(lambda: engine.status(sleep).state == "sleeping" and engine.status(sig).state == "waiting",
              "the sleeper and the waiter to wait")
        # the whole node dies: its worker process and its admin's session (the shard process with it)
        kill(worker)
        nodes.kill(sid)
        until(lambda: not Nodes.pids(sid), "the node's processes to be gone")
        # once the engine noticed (node_timeout without an answer), calls for shard 1 fail at once
        until(lambda: _unavailable(lambda: engine.status(steps)), "the engine to notice the lost node", 15)
        assert _raises_at_once(lambda: engine.start(two_steps, 9, str(where), run_id=fresh)) < 2.0
        assert _raises_at_once(lambda: engine.status(steps)) < 2.0
        assert _raises_at_once(lambda: engine.signal(sig, "go", 1)) < 2.0
        # the engine's own shard goes on (the gate opened: step b of the lost run ran in a dead process)
        (where / "go").touch()
        assert engine.run(two_steps, 0, str(where), run_id=here[0], timeout=TIMEOUT)[0] == 0
        assert rt.fatal is None
        # the node joins again (a new worker process, same id and directory): shard 1 is created on it
        again = data if port == "same-port" else (*data[:4], "--port", str(free_port()))
        sid2 = os.getsid(next(iter(nodes.start(args=again))))
        until(lambda: not _unavailable(lambda: engine.status(steps)), "shard 1 to answer again", 30)
        new = rt.shard_pids[1]
        assert new != old
        assert rt.restarts == 1  # one shard process created for the rejoined node
        assert new in Nodes.pids(sid2)
        engine.signal(sig, "go", {"x": 1})
        assert h_sig.result(timeout=TIMEOUT) == (2, {"x": 1})
        assert h_sleep.result(timeout=TIMEOUT) == 3
        got = h_steps.result(timeout=TIMEOUT)
        assert got[0] == 1 and got[1] == old  # step a: journaled by the lost process, not run again
        assert sorted(i for i, _ in _marks(where, "a")) == [0, 1]  # once per run
        assert [e.name for e in engine.history(steps) if e.kind == "step_completed"] == ["a", "b"]
        assert engine.run(two_steps, 5, str(where), run_id=fresh, timeout=TIMEOUT)[0] == 5  # new starts go there
        assert engine.run(two_steps, 6, str(where), run_id=here[1], timeout=TIMEOUT)[0] == 6
        assert rt.fatal is None
