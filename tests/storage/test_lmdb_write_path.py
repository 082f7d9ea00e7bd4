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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_forgotten_runs_leave_the_cache_and_appends_stay_checked(journal: LmdbJournal) -> None:
    """forget (a run left memory): its entry goes, so its id string does not outlive a burst (issue 17)."""
    journal.commit(append(journal, "r", 0, 1))
    journal.commit(append(journal, "q", 0))
    journal.forget(["r", "unknown"])
    journal.commit(append(journal, "q", 1))  # dropped when the writer's next transaction begins
    assert "r" not in journal._tails and journal._tails["q"] == 2
    with pytest.raises(StorageError, match="append of seq 1 but next is 2"):
        journal.commit(append(journal, "r", 1))
    journal.commit(append(journal, "r", 2))
    assert [e.seq for e in journal.events("r")] == [0, 1, 2]


def test_a_forget_during_a_transaction_does_not_fail_its_next_append(journal: LmdbJournal) -> None:
    """A host forgets a run (on its own thread) while the writer's transaction holds two batches
    appending to it: the second append must still pass. Dropped at once, the cache would miss and
    the check of seq - 1 would look in the database, where the first append is not yet (its put is
    deferred to the transaction's putmulti): the merged transaction failed."""
    journal.commit(append(journal, "r", 0))

    class ForgetOnSet(dict[str, int]):
        def __setitem__(self, key: str, value: int) -> None:
            super().__setitem__(key, value)
            journal.forget([key])  # as if another thread passivated the run right then

    journal._tails = ForgetOnSet(journal._tails)
    journal._write([append(journal, "r", 1), append(journal, "r", 2)])
    assert [e.seq for e in journal.events("r")] == [0, 1, 2]


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


# --- writes held back for one putmulti per database: later ops of the same transaction see them ----
def rec(run_id: str, state: str = "running") -> RunRecord:
    return RunRecord(run_id, "wf", state, 1.0, 2.0)


def test_created_then_finished_in_one_transaction_leaves_the_active_index(journal: LmdbJournal) -> None:
    b = journal.batch()
    b.create_run(rec("a", "pending"), Event(0, "run_started", "wf", {"args": ()}, 1.0))
    b.append("a", Event(1, "step_completed", "s", 1, 1.0, 0))
    b.put_run(rec("a", "completed"))
    b.create_run(rec("b", "pending"), Event(0, "run_started", "wf", {"args": ()}, 1.0))
    b.put_run(rec("b", "running"))
    journal.commit(b)
    assert journal.active_run_ids() == ["b"]
    assert journal.get_run("a").state == "completed"  # type: ignore[union-attr]
    assert [e.seq for e in journal.events("a")] == [0, 1]


def test_reads_inside_the_transaction_see_its_held_back_records(journal: LmdbJournal) -> None:
    b = journal.batch()
    i_first = b.create_run(rec("r", "pending"), Event(0, "run_started", "wf", {"args": ()}, 1.0))
    i_again = b.create_run(rec("r", "pending"), Event(0, "run_started", "wf", {"args": (9,)}, 1.0))
    b.put_run(rec("r", "failed"))
    i_sig = b.put_signal("r", "go", 1)
    results = journal.commit(b)
    assert results[i_first] is None
    assert results[i_again].state == "pending"  # the record created earlier in this transaction
    assert results[i_sig] == "failed"  # refused: the run finished earlier in this transaction
    assert journal.signals("r") == []


def test_a_refused_append_in_a_merged_round_is_named_and_fails_alone(journal: LmdbJournal) -> None:
    journal.commit(append(journal, "x", 0, 1))
    bad = append(journal, "x", 1)  # seq 1 exists: found only by the batched putmulti
    good = [append(journal, f"g{i}", 0, 1) for i in range(3)]
    futures = [journal.submit(b) for b in (good[0], bad, good[1], good[2])]
    with pytest.raises(StorageError, match="run 'x': append of seq 1 but next is 2"):
        futures[1].result(10)
    for f in (futures[0], futures[2], futures[3]):
        f.result(10)
    assert [[e.seq for e in journal.events(f"g{i}")] for i in range(3)] == [[0, 1]] * 3
    assert [e.seq for e in journal.events("x")] == [0, 1]
