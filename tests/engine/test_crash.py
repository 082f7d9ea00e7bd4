"""A real crash test: SIGKILL a process running 200 five-step workflows several times, then finish them.

The child (crash_child.py) journals into Engine(data_dir) and writes a ledger line from inside each
step body. The parent kills it at random moments (after the ledger grew by a random amount), restarts
it, and finally reopens the engine itself, signals every run and checks:
- all 200 runs complete with the right results, each with exactly 5 step_completed events in order;
- per (run, step) the ledger has at most 1 + kills lines, at most one per process generation;
- a run's ledger lines never go back to an earlier step, and a step repeats only in a later
  generation (a completed, journaled step never ran again: only one in flight at a kill may re-run).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from actorflow import Engine
from storage import LmdbJournal

from . import crash_child, sleep_crash_child
from .conftest import TIMEOUT

HELPER = Path(__file__).with_name("crash_child.py")
KILLS = 4


def ledger_lines(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        run_id, step, gen = line.split()
        out.append((run_id, int(step[1:]), int(gen)))
    return out


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill(proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    """SIGKILL the engine's process and, multiproc, its admin and shard processes (all at once)."""
    os.kill(proc.pid, signal.SIGKILL)
    pgid = Path(f"{data_dir}.pgid")
    if pgid.exists():
        os.killpg(int(pgid.read_text()), signal.SIGKILL)
        pgid.unlink()


def test_sigkill_many_times_then_recover(tmp_path: Path, system: str) -> None:
    data_dir = tmp_path / "data"
    ledger = tmp_path / "ledger.txt"
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    total_steps = crash_child.N_RUNS * crash_child.STEPS
    kills = 0
    for gen in range(KILLS):
        log = open(tmp_path / f"child-{gen}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(data_dir), str(ledger), str(gen), system], stdout=log, stderr=log
        )
        try:
            if system == "multiproc":  # kill only once its processes are known: all of them die together
                pgid, deadline = Path(f"{data_dir}.pgid"), time.monotonic() + 30
                while not pgid.exists():
                    assert proc.poll() is None, (tmp_path / f"child-{gen}.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, "the engine's processes never started"
                    time.sleep(0.005)
            base = count_lines(ledger)
            # kill once the ledger grew by a random amount (leaving work for the next generations)
            target = min(base + rng.randint(20, 180), total_steps - 40)
            deadline = time.monotonic() + 30
            while count_lines(ledger) < target:
                assert proc.poll() is None, f"child died (seed {seed}): {(tmp_path / f'child-{gen}.log').read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"ledger stuck at {count_lines(ledger)} < {target} (seed {seed})"
                time.sleep(0.001)
        finally:
            if proc.poll() is None:
                _kill(proc, data_dir)
                kills += 1
            proc.wait(TIMEOUT)
            log.close()
        assert proc.returncode == -signal.SIGKILL

    # the final generation: this process reopens the journal, signals every run and collects the results
    crash_child.configure(str(ledger), KILLS)  # before the engine forks its processes: they inherit it
    engine = Engine(data_dir, system=system)
    engine.workflow(name=crash_child.WORKFLOW)(crash_child.crash_wf)
    with engine:
        ids = crash_child.run_ids()
        assert len(engine.runs()) == crash_child.N_RUNS
        for i, rid in enumerate(ids):
            engine.signal(rid, "go", i * 7)
        for i, rid in enumerate(ids):
            assert engine.result(rid, timeout=30) == crash_child.expected_result(i, i * 7), (rid, seed)
        for rid in ids:
            hist = engine.history(rid)
            done = [ev.name for ev in hist if ev.kind == "step_completed"]
            assert done == [f"s{k}" for k in range(crash_child.STEPS)], (rid, seed)
            assert [ev.seq for ev in hist] == list(range(len(hist)))

    lines = ledger_lines(ledger)
    assert kills == KILLS
    per_step = collections.Counter((rid, k) for rid, k, _ in lines)
    per_step_gen = collections.Counter(lines)
    assert set(per_step) == {(rid, k) for rid in crash_child.run_ids() for k in range(crash_child.STEPS)}
    assert max(per_step.values()) <= 1 + kills, seed
    assert max(per_step_gen.values()) == 1, f"a step ran twice within one process (seed {seed})"
    by_run: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for rid, k, gen in lines:
        by_run[rid].append((k, gen))
    for rid, seq in by_run.items():
        for (k1, g1), (k2, g2) in zip(seq, seq[1:]):
            assert k2 >= k1, f"{rid}: step s{k1} ran after s{k2} had started (seed {seed})"
            if k2 == k1:
                assert g2 > g1, f"{rid}: s{k1} re-ran in the same process (seed {seed})"
            else:
                assert k2 == k1 + 1, f"{rid}: s{k2} ran without s{k1 + 1} before it (seed {seed})"
    reruns = sum(n - 1 for n in per_step.values())
    print(f"crash test: seed {seed}, {kills} kills, {len(lines)} ledger lines, {reruns} step re-runs after a kill")


def test_sigkill_inside_the_step_after_a_sleep_fires_the_timer_again(tmp_path: Path) -> None:
    """The fired timer rides along with the step's result, so a kill -9 while that step runs loses
    both: after reopening, the still-indexed, overdue timer fires again and the step runs again."""
    data_dir, marker = tmp_path / "data", tmp_path / "marker"
    child = Path(__file__).with_name("sleep_crash_child.py")
    proc = subprocess.run([sys.executable, str(child), str(data_dir), str(marker)], capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert marker.read_text().count("ran") == 1
    with LmdbJournal(str(data_dir)) as journal:  # what survived: the sleep, not its firing
        assert [e.kind for e in journal.events("napper")] == ["run_started", "timer_started"]
        assert journal.timer_count() == 1
    engine = Engine(str(data_dir))
    sleep_crash_child.register(engine, str(marker))
    with engine:
        assert engine.result("napper", TIMEOUT) == 2
        kinds = [e.kind for e in engine.history("napper")]
    assert kinds == ["run_started", "timer_started", "timer_fired", "step_completed", "run_completed"]
    assert marker.read_text().count("ran") == 2
