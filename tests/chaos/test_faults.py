"""Faults (issue 18 item 4), each against a real engine and LMDB journal:

- the map full with no room to grow: a clear JournalFull at start(), nothing of it written, the run
  whose step result did not fit waits (not failed, nothing partial) and finishes once space returns;
- a step that hangs forever: its timeout fires (threads, and worker processes), close() still returns;
- a step that kills its own worker process: runs again on a new worker; one that always does fails
  with StepWorkerDied after MAX_DEATHS, and the engine serves on;
- a poison message to every actor type (hosts, timer, signal router, supervisor): all serve on;
- the data directory's disk going read-only (EROFS injected into the journal's writes with strace):
  start() is a clear StorageError and writes nothing, running runs wait and finish once it is
  writable again.

Covered elsewhere, and so not repeated: a corrupted record blocks its run with evidence while the
others finish (tests/engine/test_fault_isolation.py, and `fsck` names it: tests/chaos/test_fsck.py);
a compensation that raises (tests/engine/test_saga.py); a shard or step worker killed from outside
(tests/engine/test_multiproc_crash.py and the multiproc campaign).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine, RunNotFound, StepFailed, StepTimeout
from actorflow._messages import HostBatch, PumpCall, SignalBatch, TimerBatch
from actorflow._procsteps import MAX_DEATHS
from actorflow.errors import JournalFull, StorageError
from storage import LmdbJournal

TIMEOUT = 30.0


def _wait(pred: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- map full, no room to grow --------------------------------------------------------------------


def test_map_full_is_journal_full_nothing_partial_and_resumes_when_space_returns(tmp_path: Path) -> None:
    journal = LmdbJournal(tmp_path, map_size=1 << 20, max_map_size=1 << 20, sync=False)
    engine = Engine(tmp_path, journal=journal)

    @engine.workflow(name="big")
    async def big(ctx: Any, i: int) -> int:
        return len(await ctx.step("s", lambda: "x" * 60_000)) + i

    @engine.workflow(name="takes")
    async def takes(ctx: Any, blob: str) -> int:
        return len(blob)

    with engine:
        stuck = None
        for i in range(100):  # fill the map: each run's step result is 60 KB
            h = engine.start(big, i, run_id=f"r{i}")
            try:
                assert h.result(timeout=3) == 60_000 + i
            except TimeoutError:
                with pytest.raises(JournalFull, match="max_map_size") as info:  # the map is full, then
                    engine.start(takes, "y" * 200_000, run_id="too-much")
                stuck = h
                break
        assert stuck is not None, "the 1 MiB map never filled up"
        assert "nothing of it was written" in str(info.value) and info.value.evidence["max_map_size"] == 1 << 20
        with pytest.raises(RunNotFound):
            engine.status("too-much")  # refused whole: no run record, no run_started
        assert engine.status(stuck.run_id).state.value in ("pending", "running")  # waits to journal its step
        assert [e.kind for e in engine.history(stuck.run_id)] == ["run_started"]  # nothing partial

        journal.max_map_size = 64 << 20  # space returns
        assert stuck.result(timeout=TIMEOUT) == 60_000 + int(stuck.run_id[1:])
        assert engine.start(big, 7, run_id="after").result(timeout=TIMEOUT) == 60_007


# --- a step that hangs forever --------------------------------------------------------------------


def _sleep_forever() -> None:
    time.sleep(10**6)


@pytest.mark.parametrize("step_processes", [
    0,
    1,  # a worker process: the timeout stops the worker, so the pool serves the next steps
])
def test_step_that_hangs_forever_times_out_and_close_returns(tmp_path: Path, step_processes: int) -> None:
    never = threading.Event()
    engine = Engine(tmp_path, sync=False, step_processes=step_processes, close_grace=0.2)

    hang = _sleep_forever if step_processes else never.wait  # a worker process: nothing releases it

    @engine.workflow(name="hangs")
    async def hangs(ctx: Any) -> str:
        try:
            await ctx.step("forever", hang, timeout=0.3)
        except StepTimeout as exc:
            return f"timed out: {exc.evidence.get('step')}"
        return "returned"

    @engine.workflow(name="fine")
    async def fine(ctx: Any, i: int) -> int:
        return int(await ctx.step("quick", lambda: i * 2))

    closed = threading.Event()
    try:
        engine.open()
        assert engine.run(hangs, timeout=TIMEOUT) == "timed out: forever"
        assert [engine.run(fine, i, timeout=10) for i in range(3)] == [0, 2, 4]  # the pool serves on
        closer = threading.Thread(target=lambda: (engine.close(), closed.set()), daemon=True)
        closer.start()
        assert closed.wait(TIMEOUT), "close() waited on the hung step beyond its grace"
    finally:
        never.set()
        if not closed.is_set():
            engine.close()


# --- a step that kills its own worker process ------------------------------------------------------


def test_step_that_kills_its_worker_runs_again_and_one_that_always_does_fails_alone(tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    engine = Engine(tmp_path / "data", sync=False, step_processes=1)

    def kill_once(path: str) -> int:
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    def kill_always() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @engine.workflow(name="once")
    async def once(ctx: Any, path: str) -> int:
        return int(await ctx.step("k", lambda: kill_once(path)))

    @engine.workflow(name="always")
    async def always(ctx: Any) -> str:
        try:
            await ctx.step("k", kill_always)
        except StepFailed as exc:
            return str(exc)
        return "survived"

    with engine:
        pid = engine.run(once, str(marker), timeout=TIMEOUT)
        assert marker.exists() and pid != os.getpid()  # ran again, on a new worker
        msg = engine.run(always, timeout=TIMEOUT)
        assert f"its worker process died {MAX_DEATHS} times" in msg
        assert engine.run(once, str(marker), timeout=TIMEOUT) > 0  # the pool serves on



def _lines(path: str) -> int:
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def _kill_when_neighbour_runs(mine: str, theirs: str) -> None:
    """Each attempt waits until the neighbour's step is running again, then kills its own worker."""
    n = _lines(mine) + 1
    with open(mine, "a") as f:
        f.write("x\n")
    deadline = time.monotonic() + TIMEOUT
    while _lines(theirs) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(3)


def _slow_neighbour(mine: str) -> str:
    with open(mine, "a") as f:
        f.write("x\n")
    time.sleep(2.0)
    return "neighbour done"


def test_a_step_killing_its_worker_does_not_use_up_a_neighbours_deaths(tmp_path: Path) -> None:
    """A worker death breaks the whole process pool, which terminates every other worker: those
    steps run again, but the deaths count against the step that caused them only (a neighbour in
    flight during all of its MAX_DEATHS deaths used to fail with 'died 3 times' too)."""
    killer, neighbour = str(tmp_path / "killer"), str(tmp_path / "neighbour")
    engine = Engine(tmp_path / "data", sync=False, step_processes=2)

    @engine.workflow(name="killer")
    async def kills(ctx: Any) -> str:
        try:
            await ctx.step("k", lambda: _kill_when_neighbour_runs(killer, neighbour))
        except StepFailed as exc:
            return str(exc)
        return "survived"

    @engine.workflow(name="neighbour")
    async def neighbours(ctx: Any) -> str:
        return str(await ctx.step("n", lambda: _slow_neighbour(neighbour)))

    with engine:
        n = engine.start(neighbours)
        k = engine.start(kills)
        assert f"its worker process died {MAX_DEATHS} times" in k.result(TIMEOUT)
        assert n.result(TIMEOUT) == "neighbour done"
        assert _lines(neighbour) >= MAX_DEATHS + 1  # it was taken down with each of the killer's deaths


# --- a poison message to every actor type ----------------------------------------------------------


class Unknown:
    pass


def test_poison_message_to_every_actor_type_leaves_the_engine_serving(tmp_path: Path) -> None:
    engine = Engine(tmp_path, sync=False)

    @engine.workflow(name="wf")
    async def wf(ctx: Any, i: int) -> int:
        await ctx.sleep("nap", 0.05)
        got = await ctx.wait_signal("go", timeout=TIMEOUT)
        return int(await ctx.step("s", lambda: i + got))

    with engine:
        rt = engine._runtime()
        actors = engine._actors
        assert actors is not None
        before = engine.start(wf, 1)
        targets = dict(rt.addresses)
        targets["supervisor"] = actors.supervisor
        assert {"timer", "signals", "host-0", "host-1", "supervisor"} <= set(targets)
        poisons: list[Any] = [Unknown(), None, 42, "garbage", HostBatch([Unknown(), ("nonsense",)]),
                              TimerBatch([Unknown()]), SignalBatch([Unknown()])]
        sent = threading.Event()

        def poison_all() -> None:
            for addr in targets.values():
                for p in poisons:
                    actors.asys.tell(addr, p)
            sent.set()

        rt.post(PumpCall(poison_all))
        assert sent.wait(TIMEOUT)
        engine.signal(before.run_id, "go", 10)
        assert before.result(timeout=TIMEOUT) == 11
        handles = [engine.start(wf, i) for i in range(20)]
        for h in handles:
            engine.signal(h.run_id, "go", 1)
        assert [h.result(timeout=TIMEOUT) for h in handles] == [i + 1 for i in range(20)]
        assert rt.fatal is None


# --- the data directory's disk going read-only ------------------------------------------------------


def _all_threads_traced(pid: int, traced: bool) -> bool:
    tracers = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:
            continue
        tracers.append(int(status.split("TracerPid:")[1].split()[0]))
    return all(t != 0 for t in tracers) if traced else all(t == 0 for t in tracers)


def test_data_dir_going_read_only_refuses_writes_clearly_and_resumes(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed (Debian package strace; .ci/run installs it)"
    gate = threading.Event()
    engine = Engine(tmp_path, sync=True)

    @engine.workflow(name="two")
    async def two(ctx: Any, i: int) -> int:
        a = await ctx.step("a", lambda: i)
        return int(await ctx.step("b", lambda: gate.wait(TIMEOUT) and a + 1))

    writes = "pwrite64,pwritev,pwritev2,writev,fdatasync,fsync,msync"
    with engine:
        running = engine.start(two, 1)
        _wait(lambda: len(engine.history(running.run_id)) >= 2, "the first step")
        # from here the disk refuses every write of the journal (LMDB's pwrite/writev/fdatasync)
        ro = subprocess.Popen([strace, "-qq", "-f", "-p", str(os.getpid()), "-o", os.devnull,
                               "-e", f"trace={writes}", "-e", f"inject={writes}:error=EROFS"])
        try:
            _wait(lambda: _all_threads_traced(os.getpid(), True), "strace to attach")
            with pytest.raises(StorageError, match="Read-only file system"):
                engine.start(two, 2, run_id="while-read-only")
            gate.set()  # the running run's step ends now: its result cannot be journaled
            time.sleep(0.5)
            assert engine.status(running.run_id).state.value in ("pending", "running")  # not failed: waits to write
        finally:
            ro.kill()
            ro.wait(TIMEOUT)
        _wait(lambda: _all_threads_traced(os.getpid(), False), "strace to detach")
        assert running.result(timeout=TIMEOUT) == 2  # writable again: it finishes
        with pytest.raises(RunNotFound):
            engine.status("while-read-only")  # the refused start left nothing behind
        assert engine.start(two, 5, run_id="after").result(timeout=TIMEOUT) == 6
