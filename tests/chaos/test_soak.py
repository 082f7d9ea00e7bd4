"""The soak script (benchmarks/soak.py) runs, checks its results and samples RSS and fds; the full
10-minute soak is run by hand (`python -m benchmarks.soak`), its curves in the issue 18 report."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak


@pytest.mark.slow
def test_short_soak_samples_memory_and_fds_and_loses_nothing() -> None:
    out = soak(minutes=0.15, every=2.0, concurrency=8, quiet=True)
    assert out["errors"] == [] and out["fsck"] == {}, out
    assert out["units"] > 0 and len(out["samples"]) >= 3
    assert all(s["fds"] > 0 and s["rss_mb"] > 0 for s in out["samples"])
    assert out["fsck_counts"]["runs"] >= out["units"]  # every unit left at least one run behind


def test_memstats_splits_anonymous_memory_by_allocator() -> None:
    from benchmarks import memstats

    before = memstats.sample()
    keep = [bytes(300_000) for _ in range(40)]  # 12 MB of large blocks, outside pymalloc
    after = memstats.sample()
    assert before["pymalloc"]["arenas"] > 0 and before["pymalloc"]["live_mb"] > 0
    assert set(after["smaps"]) == {"heap", "malloc_arenas", "stacks", "other_anon"}
    if after["malloc"]:  # glibc
        assert after["malloc"]["in_use_mb"] - before["malloc"]["in_use_mb"] >= 10, (before, after)
        assert after["free_sizes"] and all(v >= 0 for v in after["free_sizes"].values())
    del keep


@pytest.mark.slow
def test_soak_runs_one_part_of_the_load_with_malloc_stats() -> None:
    out = soak(minutes=0.1, every=2.0, concurrency=4, quiet=True, malloc_stats=True, kinds=("tasks",))
    assert out["errors"] == [] and out["fsck"] == {}, out
    assert all("mem" in s for s in out["samples"])
    # tasks only: each unit is one task run, no workflow or chain runs
    assert out["fsck_counts"]["runs"] == out["units"], out["fsck_counts"]
