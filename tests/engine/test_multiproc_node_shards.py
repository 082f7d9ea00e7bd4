"""Shards owned by member nodes: each node journals the runs it owns (issue 12, build item 11).

Two admins on loopback ports stand for two machines: an admin started by `actorflow admin start`
(the engine joins it, system="HOST:PORT") and a member node `actorflow worker --join ... --data-dir
DIR --node-id nodeb`. With `shard_nodes={1: "nodeb"}` shard 1's actor runs on the node and journals
in `DIR/<cluster>/shard-1/`: its runs' events are there and not in the engine's data directory, and
status/history/result/signal go through the engine. kill -9 of the node's shard process mid-run: it
is restarted on the node, its runs complete, no journaled step runs again. Hostile frames on the
node's ports execute nothing. Every process a test started is stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _node_cluster import ROOT, SECRET, TIMEOUT, Nodes, kill, running, until

from actorflow import ConfigError, Engine, WorkflowFailed
from actorflow._multiproc._routed import ShardUnavailable
from actorflow._net import FrameCodec
from storage import LmdbJournal

NODE = "nodeb"


# --- workflows and steps (importable on the node: this module travels as the test's other ones do) --
def _mark(where: str, i: int, step: str) -> int:
    """A file per execution of a step: (run, step, process) - counted by the tests."""
    Path(where, f"{step}-{i}-{os.getpid()}-{time.monotonic_ns()}").touch()
    return os.getpid()


def _gate(where: str, i: int) -> int:
    _mark(where, i, "b")
    deadline = time.monotonic() + TIMEOUT
    while not Path(where, "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)
    return os.getpid()


async def two_steps(ctx: Any, i: int, where: str) -> Any:
    a = await ctx.step("a", lambda: _mark(where, i, "a"))
    b = await ctx.step("b", lambda: _gate(where, i))
    return i, a, b


async def waits_signal(ctx: Any, i: int) -> Any:
    got = await ctx.wait_signal("go")
    return i, got


async def leaf(ctx: Any, i: int) -> int:
    return i + 1


async def parent(ctx: Any, child_id: str) -> Any:
    return await ctx.child(leaf, 1, run_id=child_id)


def _ids(prefix: str, shard: int, n: int) -> list[str]:
    """`n` run ids of `shard` (of 2): the engine's shard_of."""
    out, k = [], 0
    while len(out) < n:
        rid = f"{prefix}-{k}"
        if zlib.crc32(rid.encode()) % 2 == shard:
            out.append(rid)
        k += 1
    return out


def _shard_of2(rid: str) -> int:
    return zlib.crc32(rid.encode()) % 2


def _marks(where: Path, step: str) -> list[tuple[int, int]]:
    return [(int(f.name.split("-")[1]), int(f.name.split("-")[2])) for f in where.glob(f"{step}-*")]


@pytest.fixture
def admin(tmp_path: Path, leader_port: int) -> Iterator[int]:
    """An admin started by the CLI on `leader_port` (the engine joins it; nodes join its convention)."""
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(tmp_path / "run"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "actorflow._cli", "admin", *args, "--port", str(leader_port)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=TIMEOUT)
        assert out.returncode in (0, 3), out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    admin_pid = int(cli("start")["admin_pid"])
    try:
        yield admin_pid
    finally:
        cli("stop")
        kill(admin_pid)
    assert not running(admin_pid)


def _engine(tmp_path: Path, port: int, **kw: Any) -> Engine:
    engine = Engine(tmp_path / "engine", system=f"127.0.0.1:{port}", secret=SECRET, shards=2,
                    shard_nodes={1: NODE}, **kw)
    engine.workflow()(two_steps)
    engine.workflow()(waits_signal)
    engine.workflow()(leaf)
    engine.workflow()(parent)
    return engine


def _node_journal(tmp_path: Path) -> Path:
    (cluster,) = [p for p in (tmp_path / "nodeb").iterdir() if p.is_dir()]
    return cluster / "shard-1"


def test_a_run_of_a_node_owned_shard_is_journaled_on_that_node(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes
) -> None:
    node_pids = nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE))
    sid = os.getsid(next(iter(node_pids)))
    where = tmp_path / "marks"
    where.mkdir()
    (where / "go").touch()
    there, here = _ids("r", 1, 4), _ids("r", 0, 4)
    engine = _engine(tmp_path, leader_port)
    with engine:
        rt: Any = engine._runtime()
        assert rt.shard_pids[1] in Nodes.pids(sid) and rt.shard_pids[0] not in Nodes.pids(sid)
        handles = [engine.start(two_steps, i, str(where), run_id=rid) for i, rid in enumerate(there + here)]
        results = [h.result(timeout=TIMEOUT) for h in handles]
        assert [r[0] for r in results] == list(range(8))
        assert {r[1] for r in results[:4]} == {rt.shard_pids[1]}  # steps ran in the node's shard process
        assert {r[1] for r in results[4:]} == {rt.shard_pids[0]}
        for rid in there:  # status, history, runs through the engine, from the node's journal
            assert engine.status(rid).state == "completed"
            assert [e.name for e in engine.history(rid) if e.kind == "step_completed"] == ["a", "b"]
        assert {s.run_id for s in engine.runs("completed")} == set(there + here)
        assert engine.start(two_steps, 0, str(where), run_id=there[0]).result(timeout=TIMEOUT)[0] == 0  # dedup
        # a signal to a run on the node: durable there, delivered
        sig = _ids("s", 1, 1)[0]
        h = engine.start(waits_signal, 7, run_id=sig)
        engine.signal(sig, "go", {"x": 1})
        assert h.result(timeout=TIMEOUT) == (7, {"x": 1})
        # astart (one shared commit, split per journal), start_many across both journals, cancel
        async def astarts() -> list[Any]:
            hs = await asyncio.gather(*(engine.astart(two_steps, i, str(where), run_id=f"as-{i}") for i in range(6)))
            return [await h.aresult(TIMEOUT) for h in hs]

        assert [r[0] for r in asyncio.run(astarts())] == list(range(6))
        many = engine.start_many(two_steps, [(i, str(where)) for i in range(10)], run_ids=[f"m-{i}" for i in range(10)])
        assert [h.result(timeout=TIMEOUT)[0] for h in many] == list(range(10))
        assert {engine.status(f"m-{i}").state for i in range(10)} == {"completed"}
        victim = _ids("c", 1, 1)[0]
        engine.start(waits_signal, 0, run_id=victim)
        assert engine.cancel(victim) is True and engine.status(victim).state == "cancelled"
        # a child in the same journal runs; so does one whose shard journals elsewhere, both ways
        p1, c1 = _ids("p", 1, 2)
        assert engine.run(parent, c1, run_id=p1, timeout=TIMEOUT) == 2
        p2, c0 = _ids("q", 1, 1)[0], _ids("q", 0, 1)[0]  # parent on the node, child on the engine's shard
        assert engine.run(parent, c0, run_id=p2, timeout=TIMEOUT) == 2
        p3, c3 = _ids("u", 0, 1)[0], _ids("u", 1, 1)[0]  # and the reverse
        assert engine.run(parent, c3, run_id=p3, timeout=TIMEOUT) == 2
        for child, par in ((c0, p2), (c3, p3)):
            st = engine.status(child)
            assert (st.state, st.parent) == ("completed", par)
            assert [e.kind for e in engine.history(par) if e.kind.startswith("child")] == ["child_started", "child_completed"]
        with pytest.raises(WorkflowFailed, match="belongs to workflow"):  # an id taken by another workflow
            engine.run(parent, there[0], run_id=_ids("v", 0, 1)[0], timeout=TIMEOUT)
        node_shard = rt.shard_pids[1]
    until(lambda: not running(node_shard), "the node's shard process to exit after close")
    # the node's journal holds its runs' events, the engine's holds none of them
    with LmdbJournal(str(_node_journal(tmp_path))) as nj, LmdbJournal(str(tmp_path / "engine")) as ej:
        assert sorted(r for r in (f"as-{i}" for i in range(6)) if nj.get_run(r) is not None) == sorted(
            r for r in (f"as-{i}" for i in range(6)) if _shard_of2(r) == 1)
        for rid in [*there, sig, victim]:
            assert ej.get_run(rid) is None and ej.events(rid) == []
            rec = nj.get_run(rid)
            assert rec is not None and rec.state == ("cancelled" if rid == victim else "completed")
            assert nj.events(rid)[0].kind == "run_started"
        for rid in here:
            assert nj.get_run(rid) is None and ej.get_run(rid) is not None
        # each child in its owner's journal only, its parent's child_started in the parent's
        assert ej.get_run(c0).parent == p2 and nj.get_run(c0) is None  # type: ignore[union-attr]
        assert nj.get_run(c3).parent == p3 and ej.get_run(c3) is None  # type: ignore[union-attr]
        assert [e.kind for e in nj.events(p2)].count("child_started") == 1 and ej.events(p2) == []
        assert [e.kind for e in ej.events(p3)].count("child_started") == 1 and nj.events(p3) == []
    # reopened: the map holds; the node's runs read through the engine again
    with _engine(tmp_path, leader_port) as engine:
        assert engine.status(there[0]).state == "completed"
        assert engine.result(there[1], timeout=TIMEOUT)[0] == 1
    with pytest.raises(ConfigError, match="moving shards"):
        Engine(tmp_path / "engine", system=f"127.0.0.1:{leader_port}", secret=SECRET, shards=2).open()


def test_kill_9_of_the_nodes_shard_process_mid_run(tmp_path: Path, leader_port: int, admin: int, nodes: Nodes) -> None:
    node_pids = nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE))
    sid = os.getsid(next(iter(node_pids)))
    where = tmp_path / "marks"
    where.mkdir()
    ids = _ids("k", 1, 30)
    with _engine(tmp_path, leader_port) as engine:
        rt: Any = engine._runtime()
        old = rt.shard_pids[1]
        handles = [engine.start(two_steps, i, str(where), run_id=rid) for i, rid in enumerate(ids)]
        until(lambda: len(_marks(where, "b")) == len(ids), "every run's step b to start")
        late = _ids("late", 1, 1)[0]
        late_h = engine.start(two_steps, 99, str(where), run_id=late)  # durable on return: at the owner
        kill(old)  # kill -9 of the node's shard process, steps in flight
        new = until(lambda: rt.shard_pids.get(1) not in (None, old) and rt.shard_pids[1], "the shard restarted")
        assert new in Nodes.pids(sid)  # restarted on the node
        (where / "go").touch()
        results = [h.result(timeout=TIMEOUT) for h in handles]
        assert [r[0] for r in results] == list(range(len(ids)))
        assert {r[1] for r in results} == {old}  # step a: journaled by the killed process, not run again
        assert late_h.result(timeout=TIMEOUT)[0] == 99  # the start that preceded the kill was journaled
        a_runs = [(i, pid) for i, pid in _marks(where, "a") if i != 99]
        assert sorted(i for i, _ in a_runs) == list(range(len(ids)))  # once per run
        for rid in ids:
            assert [e.name for e in engine.history(rid) if e.kind == "step_completed"] == ["a", "b"]


_ENGINE_CHILD = """
import json, sys, time
from pathlib import Path
from tests.engine.test_multiproc_node_shards import _engine, _ids, two_steps
tmp, port, where = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
engine = _engine(tmp, port, node_timeout=1.0).open()
for i, rid in enumerate(_ids("e", 1, 4)):
    engine.start(two_steps, i, where, run_id=rid)
print(json.dumps(engine._runtime().shard_pids), flush=True)
time.sleep(600)
"""


def test_the_engine_silent_its_node_shard_stops_and_the_next_engine_recovers_the_runs(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes
) -> None:
    """A node-owned shard cannot check the PID of an engine on another machine: it stops when the
    engine's beats stop (2 x node_timeout; here the engine is frozen with SIGSTOP, its PID alive), so
    the next engine's shard can take its journal; the runs complete, step a is not run again."""
    nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE))
    where = tmp_path / "marks"
    where.mkdir()
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _ENGINE_CHILD, str(tmp_path), str(leader_port), str(where)],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, f"the engine process exited with {child.wait(10)}"
        node_shard = int(json.loads(line)["1"])
        ids = _ids("e", 1, 4)
        until(lambda: len(_marks(where, "b")) == len(ids), "every run's step b to start")
        # the engine's process frozen (as one on another machine cut off: its PID would say nothing)
        os.kill(child.pid, signal.SIGSTOP)
        until(lambda: not running(node_shard), "the node's shard to stop once the engine's beats stopped", 30)
        kill(child.pid)  # then kill -9
        child.wait(10)
    finally:
        kill(child.pid)
        child.wait(10)
    (where / "go").touch()
    with _engine(tmp_path, leader_port) as engine:
        assert [engine.result(rid, timeout=TIMEOUT)[0] for rid in ids] == list(range(len(ids)))
        assert sorted(i for i, _ in _marks(where, "a")) == list(range(len(ids)))  # step a ran once per run
        assert len(_marks(where, "b")) >= len(ids)


class _Touch:
    """Unpickling this creates `path`: the classic pickle code-execution payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


def test_hostile_frames_on_the_nodes_ports_execute_nothing(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes
) -> None:
    node_pids = nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE))
    sid = os.getsid(next(iter(node_pids)))
    where = tmp_path / "marks"
    where.mkdir()
    (where / "go").touch()
    ids = iter(_ids("h", 1, 200))
    with _engine(tmp_path, leader_port) as engine:
        rt: Any = engine._runtime()
        pids = Nodes.pids(sid)
        assert rt.shard_pids[1] in pids
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        assert rt.shard_pids[1] in {c.pid for c in listening}  # the node's shard process has a port
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
        marker = tmp_path / "pwned"
        evil = pickle.dumps((None, _Touch(marker)))
        attacks = [
            b"%d>" % len(evil) + evil,
            b"\x00\x01garbage without any length prefix " * 4,
            FrameCodec(b"not-the-secret-of-this-engine!!!").frame((None, "hello")),
        ]
        for conn in sorted(listening, key=lambda c: c.laddr.port):
            for payload in attacks:
                with socket.create_connection(("127.0.0.1", conn.laddr.port), timeout=10) as sock:
                    sock.sendall(payload)
                    rid = next(ids)
                    assert engine.run(two_steps, 1, str(where), run_id=rid, timeout=TIMEOUT)[0] == 1
                    sock.settimeout(10)
                    try:
                        assert sock.recv(4096) == b""
                    except ConnectionResetError:
                        pass
        assert not marker.exists()
        assert running(rt.shard_pids[1])


def test_bad_shard_nodes_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs system="):
        Engine(tmp_path / "a", shard_nodes={1: NODE})
    with pytest.raises(ConfigError, match="not a shard index"):
        Engine(tmp_path / "b", system="multiproc", shards=2, shard_nodes={2: NODE})
    with pytest.raises(ConfigError, match="not a node id"):
        Engine(tmp_path / "c", system="multiproc", shards=2, shard_nodes={1: "../x"})


@pytest.mark.slow
def test_a_node_lost_while_the_engine_runs_stops_only_its_shard(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes
) -> None:
    """The whole node killed: the engine and its other shards go on; a call for the lost shard's runs
    fails with ShardUnavailable (once the engine noticed, after node_timeout) instead of hanging;
    reopened with the node back, the lost shard's runs are there (a rejoin without reopening:
    test_multiproc_node_loss.py)."""
    data = ("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE)
    sid = os.getsid(next(iter(nodes.start(args=data))))
    where = tmp_path / "marks"
    where.mkdir()
    (where / "go").touch()
    lost, other = _ids("n", 1, 2), _ids("n", 0, 1)[0]
    with _engine(tmp_path, leader_port, close_grace=0.0) as engine:
        rt: Any = engine._runtime()
        assert engine.run(two_steps, 1, str(where), run_id=lost[0], timeout=TIMEOUT)[0] == 1
        nodes.kill(sid)
        until(lambda: not Nodes.pids(sid), "the node's processes to be gone")
        with pytest.raises(ShardUnavailable):
            engine.start(two_steps, 2, str(where), run_id=lost[1])
        assert engine.run(two_steps, 0, str(where), run_id=other, timeout=TIMEOUT)[0] == 0
        assert rt.fatal is None
    nodes.start(args=data)
    with _engine(tmp_path, leader_port) as engine:
        assert engine.result(lost[0], timeout=TIMEOUT)[0] == 1
