"""kill -9 while 200 workflows run: of a shard process (the supervisor restarts it, its runs replay)
and, separately, of a step-worker process (the step it was running runs again on a new worker).
Either way all complete with the right results, and no step whose completion was journaled runs
again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actorflow import Engine
from storage import LmdbJournal

TIMEOUT = 60.0
LOG = os.environ.get("ACTORFLOW_TEST_STEP_LOG", "")


def _work(log: str, run: int, step: str, value: Any) -> Any:
    time.sleep(0.02)  # keep steps in flight when the process dies
    with open(log, "a") as f:  # O_APPEND: one short line per write, whole
        f.write(f"{run} {step} {os.getpid()}\n")
    return value


async def three(ctx: Any, log: str, i: int) -> Any:
    a = await ctx.step("a", lambda: _work(log, i, "a", i))
    b = await ctx.step("b", lambda: _work(log, i, "b", a + 1))
    return await ctx.step("c", lambda: _work(log, i, "c", b * 2))


def _completed(journal: LmdbJournal, run_ids: list[str]) -> set[tuple[str, str]]:
    done = set()
    for rid in run_ids:
        for ev in journal.events(rid):
            if ev.kind == "step_completed":
                done.add((rid, ev.name))
    return done


def test_kill_9_of_a_shard_process_loses_nothing(tmp_path: Path) -> None:
    log = str(tmp_path / "steps.log")
    engine = Engine(tmp_path / "data", system="multiproc", shards=2, step_threads=8)
    engine.workflow()(three)
    with engine:
        rt: Any = engine._runtime()
        victim = rt.shard_pids[0]
        handles = engine.start_many(three, [(log, i) for i in range(200)], run_ids=[f"run-{i}" for i in range(200)])
        ids = [h.run_id for h in handles]
        assert engine.journal is not None
        deadline = time.monotonic() + TIMEOUT
        while len(_completed(engine.journal, ids)) < 150:  # some of shard 0's steps done, many to go
            assert time.monotonic() < deadline, "steps never completed"
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        before = _completed(engine.journal, ids)  # the dead process writes nothing more
        results = [h.result(timeout=TIMEOUT) for h in handles]
        assert results == [((i + 1) * 2) for i in range(200)]
        assert rt.restarts >= 1 and rt.shard_pids[0] != victim
        successor = rt.shard_pids[0]
    with open(log) as f:
        lines = [line.split() for line in f]
    runs = Counter((f"run-{r}", s) for r, s, _pid in lines)
    again = {k: n for k, n in runs.items() if k in before and n > 1}
    assert not again, f"steps journaled before the kill ran again: {sorted(again)[:5]}"
    assert all(runs[(rid, s)] >= 1 for rid in ids for s in "abc")
    assert any(int(pid) == successor for _r, _s, pid in lines)  # the restarted shard ran the rest of its runs
    assert not _alive(victim)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_kill_9_of_a_step_worker_process_reruns_its_step(tmp_path: Path) -> None:
    import psutil

    log = str(tmp_path / "steps.log")
    engine = Engine(tmp_path / "data", system="multiproc", shards=2, step_threads=8, step_processes=2)
    engine.workflow()(three)
    with engine:
        rt: Any = engine._runtime()
        shard = psutil.Process(rt.shard_pids[0])
        handles = engine.start_many(three, [(log, i) for i in range(200)], run_ids=[f"run-{i}" for i in range(200)])
        ids = [h.run_id for h in handles]
        assert engine.journal is not None
        deadline = time.monotonic() + TIMEOUT
        while len(_completed(engine.journal, ids)) < 150 or not shard.children():
            assert time.monotonic() < deadline, "steps never completed"
            time.sleep(0.01)
        worker = shard.children()[0].pid
        os.kill(worker, signal.SIGKILL)
        before = _completed(engine.journal, ids)
        results = [h.result(timeout=TIMEOUT) for h in handles]
        assert results == [((i + 1) * 2) for i in range(200)]
        assert rt.shard_pids[0] == shard.pid and rt.restarts == 0  # the host process lived on
        workers_after = {c.pid for c in shard.children()}
    with open(log) as f:
        lines = [line.split() for line in f]
    runs = Counter((f"run-{r}", s) for r, s, _pid in lines)
    again = {k: n for k, n in runs.items() if k in before and n > 1}
    assert not again, f"steps journaled before the kill ran again: {sorted(again)[:5]}"
    assert all(runs[(rid, s)] >= 1 for rid in ids for s in "abc")
    pids = {int(pid) for _r, _s, pid in lines}
    assert shard.pid not in pids and os.getpid() not in pids  # steps ran in worker processes
    assert pids & workers_after  # new workers ran the rest, the killed one is gone
    assert not _alive(worker)
    assert not any(_alive(p) for p in workers_after)  # close() ended the workers


@contextmanager
def _engine_killed(script: str, *args: str) -> Iterator[list[int]]:
    """Run `script` (an engine that prints its admin's process group and its shards' PIDs, then waits)
    in a child process, kill -9 it, and yield the PIDs it printed; the orphaned admin of the killed
    engine (ours: its process group) is ended afterwards."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pgid = None
    try:
        assert child.stdout is not None
        pgid, *pids = (int(x) for x in child.stdout.readline().split())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(TIMEOUT)
        yield pids
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(TIMEOUT)
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


ENGINE_THEN_WAIT = """
import os, sys
from actorflow import Engine

async def waits(ctx):
    return await ctx.wait_signal("go")

engine = Engine(sys.argv[1], system="multiproc")
engine.workflow(name="waits")(waits)
engine.open()
engine.start("waits", run_id="w")
while engine.status("w").state.value != "waiting":
    pass
rt = engine._actors
print(os.getpgid(rt.admin_pid), *rt.shard_pids.values(), flush=True)  # the admin's session, the shards
sys.stdin.read()
"""


def test_kill_9_of_the_engine_process_leaves_its_directory_to_the_next_engine(tmp_path: Path, system: str) -> None:
    """The admin (and its actors) are forked from the engine's process: they must not keep its lock on
    the data directory, or an engine killed with -9 would leave it locked for as long as they live.
    The old shards run on until they notice (within a second): a new multiproc engine's shards wait
    for them, so no run is recovered twice at once."""
    data = tmp_path / "data"
    with _engine_killed(ENGINE_THEN_WAIT, str(data)) as old_shards:
        e = Engine(data, system=system)  # not "another engine (pid ...) already runs"

        async def waits(ctx: Any) -> Any:
            return await ctx.wait_signal("go")

        e.workflow(name="waits")(waits)
        with e:
            if system == "multiproc":  # its shards started once the old ones had stopped
                assert not any(_alive(p) for p in old_shards)
            e.signal("w", "go", "after the crash")
            assert e.result("w", timeout=TIMEOUT) == "after the crash"

ENGINE_IN_A_STEP = """
import os, sys, time
from actorflow import Engine

def slow(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(30)
    return "done"

async def one(ctx, path):
    return await ctx.step("slow", lambda: slow(path))

engine = Engine(sys.argv[1], system="multiproc")
engine.workflow(name="one")(one)
engine.open()
engine.start("one", sys.argv[2], run_id="r")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
rt = engine._actors
print(os.getpgid(rt.admin_pid), *rt.shard_pids.values(), flush=True)
sys.stdin.read()
"""


def test_shards_of_a_killed_engine_stop_for_good_and_run_nothing(tmp_path: Path) -> None:
    """A shard stops once its engine's process is gone; its supervisor must not start it again (a new
    shard would recover the runs and re-run their steps with no engine to report to, possibly beside
    a new engine). Only the step that was running when the engine died ran."""
    steps = tmp_path / "steps.log"
    with _engine_killed(ENGINE_IN_A_STEP, str(tmp_path / "data"), str(steps)) as shards:
        deadline = time.monotonic() + TIMEOUT
        while any(_alive(p) for p in shards):
            assert time.monotonic() < deadline, "the shards of the killed engine kept running"
            time.sleep(0.05)
        # a restarted shard would recover run r within a second or two and start its step again
        quiet_until = time.monotonic() + 6.0
        while time.monotonic() < quiet_until:
            assert len(steps.read_text().splitlines()) == 1, "a step ran again with no engine"
            time.sleep(0.1)
