"""The meta page's flush runs after LMDB's writer lock is released, and still before a commit returns.

LMDB syncs the data pages inside `txn.commit()` and the meta page here with `env.sync(True)`, so
processes sharing one environment (a multiprocess engine's shards and facade) do not hold each
other's writer lock through two syncs each. These tests watch the journal's env.sync calls.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest

from actorflow.errors import StorageError
from storage import Event, LmdbJournal, RunRecord


class _WatchedEnv:
    """Delegates to the real environment; records each sync (or fails it) and what it saw then."""

    def __init__(self, journal: LmdbJournal, fail: bool = False) -> None:
        self._real = journal._env
        self._runs = journal._runs
        self.fail = fail
        self.syncs: list[bool] = []  # per sync: was the committed run visible to another reader then?
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sync(self, force: bool = False) -> None:
        with self._real.begin() as txn:  # a new read transaction sees only committed writes
            self.syncs.append(txn.get(b"r1", db=self._runs) is not None)
        self.gate.wait(10)
        if self.fail:
            raise lmdb.Error("EIO (injected)")
        self._real.sync(force)


def _event(seq: int) -> Event:
    return Event(seq, "step", "s", {"n": seq}, 1.0)


def test_meta_sync_follows_the_commit_and_precedes_the_return(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", sync=True)
    try:
        watched = j._env = _WatchedEnv(j)  # type: ignore[assignment]
        watched.gate.clear()  # hold the sync: the commit must not return before it
        b = j.batch()
        b.create_run(RunRecord("r1", "wf", "pending", 1.0, 1.0), _event(0))
        fut = j.submit(b)
        assert not fut.done() or fut.exception() is not None
        for _ in range(200):
            if watched.syncs:
                break
            threading.Event().wait(0.01)
        assert watched.syncs == [True]  # committed (visible) when the meta page's sync began
        assert not fut.done()  # ... and not reported durable before it ended
        watched.gate.set()
        assert fut.result(10) == [None]
        assert j.get_run("r1") is not None
    finally:
        j.close()


def test_no_meta_sync_without_sync(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", sync=False)
    try:
        watched = j._env = _WatchedEnv(j)  # type: ignore[assignment]
        b = j.batch()
        b.append("r", _event(0))
        j.commit(b)
        assert watched.syncs == []
    finally:
        j.close()


def test_a_failed_sync_fails_the_round_without_applying_its_batches_again(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", sync=True)
    try:
        watched = j._env = _WatchedEnv(j, fail=True)  # type: ignore[assignment]
        watched.gate.clear()
        first = j.batch()
        first.append("a", _event(0))
        f1 = j.submit(first)
        for _ in range(200):  # the first round is in its sync: the next two queue up behind it
            if watched.syncs:
                break
            threading.Event().wait(0.01)
        second, third = j.batch(), j.batch()
        second.append("b", _event(0))
        third.append("c", _event(0))
        f2, f3 = j.submit(second), j.submit(third)
        watched.gate.set()
        for f in (f1, f2, f3):
            with pytest.raises(StorageError, match="sync failed after a commit") as info:
                f.result(10)
            assert info.value.evidence["committed"] is True
        # two rounds, each synced once: the merged round of b and c was not retried batch by batch
        assert len(watched.syncs) == 2
        watched.fail = False
        assert [e.seq for e in j.events("b")] == [0] and [e.seq for e in j.events("c")] == [0]
    finally:
        j.close()
