"""A process that test_crash.py kills inside the first step after a durable sleep (the step kills it).

    python sleep_crash_child.py DATA_DIR MARKER

The run sleeps 50 ms, then its step appends a line to MARKER and, the first time only, SIGKILLs its
own process: the fired timer and the step are in flight, nothing after the sleep is journaled yet.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def register(engine: Any, marker: str) -> None:
    @engine.workflow(name="nap_then_step")
    async def nap_then_step(ctx: Any) -> int:
        await ctx.sleep("nap", 0.05)
        return await ctx.step("after", lambda: _mark(marker))  # type: ignore[no-any-return]


def _mark(marker: str) -> int:
    with open(marker, "a") as f:
        f.write("ran\n")
        f.flush()
        os.fsync(f.fileno())
    runs = Path(marker).read_text().count("ran")
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    return runs


def main() -> None:
    from actorflow import Engine

    data_dir, marker = sys.argv[1], sys.argv[2]
    engine = Engine(data_dir)
    register(engine, marker)
    with engine:
        engine.start("nap_then_step", run_id="napper")
        time.sleep(60)  # killed from inside the step long before this ends


if __name__ == "__main__":
    main()
