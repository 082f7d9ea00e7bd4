"""A multiprocess engine applies the Engine's GC thresholds in every process it runs runs in.

The shard processes hold the live runs (thousands in a burst): at CPython's default thresholds
(700, 10, 10) they spent ~40% of their CPU in the collector (benchmarks/scenarios/multiproc.py).
Steps run in the shard processes, so a step reports what that process uses.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from actorflow import Engine

TIMEOUT = 60.0


def _thresholds() -> tuple[int, tuple[int, int, int]]:
    return os.getpid(), gc.get_threshold()


async def report(ctx: Any) -> Any:
    return await ctx.step("thresholds", _thresholds)


def test_shards_and_facade_use_the_engines_gc_threshold(tmp_path: Path) -> None:
    before = gc.get_threshold()
    engine = Engine(tmp_path / "data", system="multiproc", sync=False, shards=2, gc_threshold=(12_345, 11, 12))
    engine.workflow()(report)
    with engine:
        seen = {}
        i = 0
        while len(seen) < 2 and i < 64:  # until both shards hosted a run
            pid, thresholds = engine.run(report, run_id=f"r{i}", timeout=TIMEOUT)
            seen[pid] = tuple(thresholds)
            i += 1
        facade_during = gc.get_threshold()
    assert len(seen) == 2 and os.getpid() not in seen, seen
    assert set(seen.values()) == {(12_345, 11, 12)}
    if before == (700, 10, 10):  # the host's own tuning is left alone (Engine._tune_gc)
        assert facade_during == (12_345, 11, 12)
    assert gc.get_threshold() == before  # restored on close


def test_gc_threshold_none_leaves_the_shards_at_cpythons_defaults(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", sync=False, shards=1, gc_threshold=None)
    engine.workflow()(report)
    with engine:
        pid, thresholds = engine.run(report, timeout=TIMEOUT)
    assert pid != os.getpid()
    assert tuple(thresholds) == (700, 10, 10)
