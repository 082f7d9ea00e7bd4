"""The LMDB write path's append fast path: the per-run tail cache must never let a gap or a duplicate in.

`LmdbJournal._tails` remembers the seq after the last event the journal wrote per run, so the usual
append skips the read of seq - 1. These tests try to make the cache lie: a failed transaction that
had already advanced it, another process writing the same journal, a run re-created over leftover
events, a cache that overflows, and merged rounds that mix good and bad batches.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import storage._lmdb as lmdb_mod
from actorflow.errors import StorageError
from storage import Event, LmdbJournal, RunRecord, WriteBatch


def ev(seq: int, name: str = "s") -> Event:
    return Event(seq, "step", name, {"seq": seq}, 1.0, seq)


def append(j: LmdbJournal, run_id: str, *seqs: int) -> WriteBatch:
    b = j.batch()
    for s in seqs:
        b.append(run_id, ev(s))
    return b


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = LmdbJournal(tmp_path / "j")
    yield j
    j.close()


def test_duplicates_and_gaps_are_refused_with_the_cache_warm(journal: LmdbJournal) -> None:
    journal.commit(append(journal, "r", 0, 1, 2))
    assert journal._tails["r"] == 3
    with pytest.raises(StorageError, match="append of seq 2 but next is 3"):
        journal.commit(append(journal, "r", 2))
    with pytest.raises(StorageError, match="append of seq 4 but next is 3"):
        journal.commit(append(journal, "r", 4))
    with pytest.raises(StorageError, match="append of seq 0 but next is 3"):
        journal.commit(append(journal, "r", 0))
    journal.commit(append(journal, "r", 3))
    assert [e.seq for e in journal.events("r")] == [0, 1, 2, 3]


def test_a_failed_transaction_does_not_leave_the_cache_ahead(journal: LmdbJournal) -> None:
    """seq 1 was put (and cached) in a transaction that then failed: seq 2 must not pass as next."""
    journal.commit(append(journal, "r", 0))
    b = append(journal, "r", 1)
    b.kv_put("n\x00s", "k", 1)  # malformed: fails the batch after the append went in
    with pytest.raises(StorageError):
        journal.commit(b)
    with pytest.raises(StorageError, match="append of seq 2 but next is 1"):
        journal.commit(append(journal, "r", 2))
    journal.commit(append(journal, "r", 1, 2))
    assert [e.seq for e in journal.events("r")] == [0, 1, 2]


def test_merged_round_with_bad_batches_keeps_runs_dense(journal: LmdbJournal) -> None:
    """Batches merged into one transaction: the bad ones fail alone, the cache follows what committed."""
    journal.commit(append(journal, "a", 0))
    gate = threading.Event()
    entered = threading.Event()
    real_apply = journal._committer._apply
    first = [True]

    def held_apply(batches: list[WriteBatch]) -> list[list[Any]]:
        if first[0]:
            first[0] = False
            entered.set()
            assert gate.wait(10)
        return real_apply(batches)

    journal._committer._apply = held_apply  # type: ignore[method-assign]
    blocker = journal.submit(append(journal, "z", 0))
    assert entered.wait(10)
    bad_after_append = append(journal, "a", 2)
    bad_after_append.kv_put("n\x00s", "k", 1)
    plan: list[tuple[str, WriteBatch]] = [
        ("ok", append(journal, "a", 1)),
        ("bad", bad_after_append),  # its append of a/2 is fine, the op after it is not
        ("bad", append(journal, "a", 3)),  # a gap: a/2 never committed
        ("ok", append(journal, "a", 2, 3)),
        ("bad", append(journal, "a", 3)),  # a duplicate, inside the same round
        ("ok", append(journal, "b", 0, 1)),
        ("ok", append(journal, "a", 4)),
    ]
    futures = [(kind, journal.submit(b)) for kind, b in plan]
    gate.set()
    assert blocker.result(10) == [None]
    for kind, f in futures:
        if kind == "ok":
            assert f.result(10) is not None
        else:
            with pytest.raises(StorageError):
                f.result(10)
    assert [e.seq for e in journal.events("a")] == [0, 1, 2, 3, 4]
    assert [e.seq for e in journal.events("b")] == [0, 1]
    journal.commit(append(journal, "a", 5))
    with pytest.raises(StorageError):
        journal.commit(append(journal, "a", 7))


def test_another_process_writing_the_journal_invalidates_the_cache(journal: LmdbJournal, tmp_path: Path) -> None:
    """A write by another process (seen as a skipped LMDB txn id) makes the cache forget what it knew."""
    journal.commit(append(journal, "r", 0, 1, 2))
    assert journal._tails["r"] == 3
    code = (
        "import lmdb, sys\n"
        "env = lmdb.open(sys.argv[1], max_dbs=16, subdir=True)\n"
        "db = env.open_db(b'events')\n"
        "with env.begin(write=True) as txn:\n"
        "    assert txn.delete(b'r\\x00' + (2).to_bytes(8, 'big'), db=db)\n"
        "env.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "j")], check=True, timeout=60)
    with pytest.raises(StorageError, match="append of seq 3 but next is 2"):
        journal.commit(append(journal, "r", 3))  # without the txn id check, this would leave a gap
    journal.commit(append(journal, "r", 2, 3))
    assert [e.seq for e in journal.events("r")] == [0, 1, 2, 3]


def test_create_run_over_leftover_events_resets_the_tail(journal: LmdbJournal) -> None:
    journal.commit(append(journal, "r", 0, 1, 2, 3))  # events without a run record: leftovers
    b = journal.batch()
    b.create_run(RunRecord("r", "wf"), Event(0, "started", "wf", None, 1.0))
    assert journal.commit(b) == [None]
    with pytest.raises(StorageError, match="append of seq 4 but next is 1"):
        journal.commit(append(journal, "r", 4))
    journal.commit(append(journal, "r", 1))
    assert [(e.seq, e.kind) for e in journal.events("r")] == [(0, "started"), (1, "step")]


def test_cache_overflow_drops_it_and_stays_correct(journal: LmdbJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_mod, "_TAILS_MAX", 3)
    for seq in range(4):
        for r in range(10):
            journal.commit(append(journal, f"r{r}", seq))
        assert len(journal._tails) <= 10
    with pytest.raises(StorageError):
        journal.commit(append(journal, "r5", 5))
    for r in range(10):
        assert journal.last_seq(f"r{r}") == 3


@pytest.mark.parametrize("n_writers", [1, 8, 64])
def test_concurrent_writers_many_rounds(tmp_path: Path, n_writers: int) -> None:
    """Every model of writer the benchmark uses, briefly, without fsync: all acknowledged events
    are there, dense, and nothing else."""
    j = LmdbJournal(tmp_path / "j", sync=False)
    per = 60
    errors: list[BaseException] = []
    done = threading.Event()
    remaining = [n_writers]
    lock = threading.Lock()

    def actor(i: int) -> Callable[[Any], None]:
        seq = 0

        def step(fut: Any) -> None:
            nonlocal seq
            if fut is not None:
                if fut.exception() is not None:
                    errors.append(fut.exception())
                    done.set()
                    return
                seq += 1
                if seq == per:
                    with lock:
                        remaining[0] -= 1
                        if not remaining[0]:
                            done.set()
                    return
            j.submit(append(j, f"actor-{i}", seq)).add_done_callback(step)

        return step

    def thread_writer(i: int) -> None:
        try:
            for s in range(per):
                j.commit(append(j, f"thread-{i}", s))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=thread_writer, args=(i,)) for i in range(n_writers)]
        for t in threads:
            t.start()
        for i in range(n_writers):
            actor(i)(None)
        for t in threads:
            t.join(60)
        assert done.wait(60)
        assert not errors
        for i in range(n_writers):
            assert [e.seq for e in j.events(f"actor-{i}")] == list(range(per))
            assert [e.seq for e in j.events(f"thread-{i}")] == list(range(per))
    finally:
        j.close()
