"""The engine raises CPython's GC thresholds while it is open (thousands of live run coroutines) and
restores the host's. In a module of its own: the thresholds are process-wide, and the engine modules
keep a shared multiproc engine open (its facade holds the raised thresholds) while their tests run."""

from __future__ import annotations

import gc
from typing import Any

from actorflow import Engine


def test_gc_thresholds_raised_while_open_and_restored_unless_host_tuned(tmp_path: Any) -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        e = Engine(tmp_path / "a", gc_threshold=(40_000, 15, 50))
        with e:
            assert gc.get_threshold() == (40_000, 15, 50)
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(1234, 5, 5)  # the host tuned its GC: leave it alone
        with Engine(tmp_path / "b"):
            assert gc.get_threshold() == (1234, 5, 5)
        with Engine(tmp_path / "c", gc_threshold=None):
            assert gc.get_threshold() == (1234, 5, 5)
    finally:
        gc.set_threshold(*saved)

def test_gc_thresholds_stay_raised_until_the_last_engine_closes(tmp_path: Any) -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        a, b = Engine(tmp_path / "a", gc_threshold=(30_000, 12, 40)), Engine(tmp_path / "b")
        a.open()
        b.open()
        a.close()
        assert gc.get_threshold() == (30_000, 12, 40)  # b still relies on them
        b.close()
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*saved)
