"""Helpers shared by the actorflow side of the scenarios (not a scenario: underscore modules are skipped)."""

from __future__ import annotations

import gc
import os
import time
from typing import Any


def engine_dir(workdir: str, name: str = "af") -> str:
    path = os.path.join(workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


def register_three_step(engine: Any, name: str = "three_step") -> Any:
    """The 3-step workflow every throughput scenario uses (each step journaled and fsync'd)."""

    @engine.workflow(name=name)
    async def three_step(ctx: Any, i: int) -> int:
        a = await ctx.step("s1", lambda: i)
        b = await ctx.step("s2", lambda: a + 1)
        return await ctx.step("s3", lambda: b + 1)  # type: ignore[no-any-return]

    return three_step


def rss_bytes() -> tuple[int, int]:
    """(RSS, RSS minus file-backed shared pages ~ anonymous memory) of this process, after a GC."""
    import psutil

    gc.collect()
    mi = psutil.Process().memory_info()
    return mi.rss, mi.rss - getattr(mi, "shared", 0)


def percentile(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class Timer:
    def __enter__(self) -> "Timer":
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def wait_ready(proc: Any, timeout: float) -> str:
    """The first stdout line of a child process, or "" if none within `timeout` seconds."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""
