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
