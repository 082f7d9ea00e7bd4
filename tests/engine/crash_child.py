"""The process test_crash.py kills with SIGKILL: opens Engine(data_dir), starts the runs, works until killed.

    python crash_child.py DATA_DIR LEDGER GENERATION [SYSTEM]

With SYSTEM "multiproc" it writes DATA_DIR.pgid: the process group of the engine's admin and shard
processes (their own session), which the test kills with this process: a whole-machine crash.

Every step appends "run_id step generation" to LEDGER (outside the journal), fsynced, inside the step
function body, before returning: a line in the ledger means the step body ran, whether or not its
result reached the journal.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_RUNS = 200
STEPS = 5
WORKFLOW = "crash_wf"

_ledger: str | None = None
_generation = 0


def configure(ledger: str, generation: int) -> None:
    global _ledger, _generation
    _ledger, _generation = ledger, generation


def run_ids() -> list[str]:
    return [f"run-{i:03d}" for i in range(N_RUNS)]


def _step(run_id: str, name: str) -> Callable[[], str]:
    def fn() -> str:
        time.sleep(random.random() * 0.004)  # a little work, so kills land while steps are in flight
        assert _ledger is not None
        fd = os.open(_ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{run_id} {name} {_generation}\n".encode())  # one O_APPEND write: atomic
            os.fsync(fd)
        finally:
            os.close(fd)
        return f"{run_id}:{name}"

    return fn


async def crash_wf(ctx: Any, i: int) -> dict[str, Any]:
    results = []
    for k in range(STEPS):
        results.append(await ctx.step(f"s{k}", _step(ctx.run_id, f"s{k}")))
    await ctx.sleep("nap", 0.05)
    go = await ctx.wait_signal("go")
    return {"i": i, "steps": results, "go": go}


def expected_result(i: int, go: Any) -> dict[str, Any]:
    rid = f"run-{i:03d}"
    return {"i": i, "steps": [f"{rid}:s{k}" for k in range(STEPS)], "go": go}


def main() -> None:
    from actorflow import Engine

    data_dir, ledger, generation = sys.argv[1], sys.argv[2], int(sys.argv[3])
    system = sys.argv[4] if len(sys.argv) > 4 else "embedded"
    configure(ledger, generation)
    engine = Engine(data_dir, system=system)
    engine.workflow(name=WORKFLOW)(crash_wf)
    engine.open()
    if system == "multiproc":
        rt: Any = engine._actors
        with open(f"{data_dir}.pgid.tmp", "w") as f:  # renamed into place: the test never reads it half-written
            f.write(str(os.getpgid(rt.admin_pid)))
        os.replace(f"{data_dir}.pgid.tmp", f"{data_dir}.pgid")
    # idempotent: runs that exist (from an earlier generation) are returned as they are
    engine.start_many(WORKFLOW, [(i,) for i in range(N_RUNS)], run_ids=run_ids())
    print("started", flush=True)
    while True:  # work until the parent kills this process
        time.sleep(3600)


if __name__ == "__main__":
    main()
