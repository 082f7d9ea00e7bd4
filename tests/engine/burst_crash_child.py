"""A process that test_residency.py kills in the middle of a burst (see the test).

    python burst_crash_child.py DATA_DIR LEDGER

One start_many of 3,000 runs, committed in groups of 500 and admitted through a cap of 50 resident
runs; each run's step appends its number to LEDGER. "started" is printed once start_many returned
(every start is durable), and the parent kills the process then, with most runs still waiting.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N, CAP, GROUP = 3000, 50, 500


def register(engine: Any, ledger: str) -> None:
    @engine.workflow(name="job")
    async def job(ctx: Any, i: int) -> int:
        return await ctx.step("work", lambda: _work(ledger, i))  # type: ignore[no-any-return]


def _work(ledger: str, i: int) -> int:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())  # one write per line: whole lines even when killed
    finally:
        os.close(fd)
    time.sleep(0.001)
    return i


def main() -> None:
    from actorflow import Engine, _starts

    data_dir, ledger = sys.argv[1], sys.argv[2]
    _starts.START_MANY_COMMIT = GROUP
    engine = Engine(data_dir, passivate_after=3600.0, max_resident=CAP)
    register(engine, ledger)
    with engine:
        engine.start_many("job", [(i,) for i in range(N)])
        print("started", flush=True)
        time.sleep(60)  # killed long before this ends


if __name__ == "__main__":
    main()
