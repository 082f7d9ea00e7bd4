"""LMDB-specific behaviour: map growth, full disks, readers during growth, the key layout."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from actorflow.errors import JournalFull, StorageError
from storage import FORMAT_VERSION, Event, LmdbJournal, RunRecord
from storage._keys import due_bytes, due_from_bytes, parse_timer_key, timer_key

KiB = 1024
MiB = 1024 * KiB


def _fill(j: LmdbJournal, run_id: str, start: int, n: int, size: int) -> None:
    b = j.batch()
    for s in range(start, start + n):
        b.append(run_id, Event(s, "step", "s", os.urandom(size), 1.0))
    j.commit(b)


def test_map_grows_from_a_tiny_size(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", map_size=64 * KiB)
    try:
        for i in range(40):  # ~2.5 MiB in 40 commits
            _fill(j, "r", i * 16, 16, 4 * KiB)
        assert j.map_growths >= 5
        assert j.map_size() >= 2 * MiB
        evs = j.events("r")
        assert [e.seq for e in evs] == list(range(640))
    finally:
        j.close()
    j = LmdbJournal(tmp_path / "j", map_size=64 * KiB)  # reopening with a small size still reads it all
    try:
        assert j.last_seq("r") == 639
        _fill(j, "r", 640, 16, 4 * KiB)
        assert j.last_seq("r") == 655
    finally:
        j.close()


def test_one_big_commit_grows_as_often_as_needed(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", map_size=64 * KiB)
    try:
        _fill(j, "r", 0, 400, 8 * KiB)  # ~3.2 MiB in one transaction
        assert j.last_seq("r") == 399
    finally:
        j.close()


def test_max_map_size_gives_journal_full_and_keeps_nothing_partial(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j", map_size=64 * KiB, max_map_size=1 * MiB)
    try:
        _fill(j, "r", 0, 10, 4 * KiB)
        b = j.batch()
        b.kv_put("ns", "marker", "written?")
        for s in range(10, 400):
            b.append("r", Event(s, "step", "s", os.urandom(4 * KiB), 1.0))
        with pytest.raises(JournalFull, match="max_map_size"):
            j.commit(b)
        assert j.kv_get("ns", "marker") is None
        assert j.last_seq("r") == 9
        _fill(j, "r", 10, 5, 1 * KiB)  # small commits still fit
        assert j.last_seq("r") == 14
    finally:
        j.close()


def test_readers_during_growth(tmp_path: Path) -> None:
    """Reads from other threads while the writer remaps: no crash, always a consistent prefix."""
    j = LmdbJournal(tmp_path / "j", map_size=64 * KiB, sync=False)
    try:
        with Readers(j) as readers:
            for i in range(60):
                _fill(j, "r", i * 8, 8, 4 * KiB)
        assert j.map_growths >= 4
        assert not readers.problems, readers.problems[:3]
        assert readers.reads > 0
    finally:
        j.close()


class Readers:
    """Threads reading in a loop until stopped; whatever goes wrong is collected."""

    def __init__(self, j: LmdbJournal, n: int = 4) -> None:
        self.j = j
        self.stop = threading.Event()
        self.problems: list[Any] = []
        self.reads = 0
        self.threads = [threading.Thread(target=self._loop) for _ in range(n)]

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                seqs = [e.seq for e in self.j.events("r")]
                if seqs != list(range(len(seqs))):
                    self.problems.append(seqs)
                self.j.get_run("r")
                self.j.kv_scan("ns")
                self.reads += 1
            except BaseException as exc:  # noqa: BLE001
                self.problems.append(exc)
                return

    def __enter__(self) -> Readers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_failed_commits_with_concurrent_readers(tmp_path: Path) -> None:
    """Aborting a write txn while other threads read deadlocks py-lmdb 2.x/3.0 unless readers are held off."""
    j = LmdbJournal(tmp_path / "j", sync=False)
    try:
        _fill(j, "r", 0, 1, 10)
        with Readers(j) as readers:
            for i in range(200):
                b = j.batch()
                b.kv_put("ns", f"k{i}", i)
                b.append("r", Event(0, "step", "dup", None, 1.0))  # duplicate seq: the txn aborts
                with pytest.raises(StorageError, match="append of seq 0"):
                    j.commit(b)
        assert not readers.problems, readers.problems[:3]
        assert j.kv_scan("ns") == []
    finally:
        j.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, so the disk really fills up (needs root; skipped otherwise)."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_gives_journal_full(small_fs: Path) -> None:
    j = LmdbJournal(small_fs / "j")
    try:
        seq = 0
        with Readers(j) as readers, pytest.raises(JournalFull, match="disk full") as info:
            for _ in range(1000):
                b = j.batch()
                b.kv_put("ns", f"marker-{seq}", seq)
                for _ in range(20):
                    b.append("r", Event(seq, "step", "s", os.urandom(2 * KiB), 1.0))
                    seq += 1
                j.commit(b)
        assert not readers.problems, readers.problems[:3]
        assert "nothing of it was written" in str(info.value)
        failed_first = seq - 20
        # nothing of the failed batch, everything before it
        assert j.last_seq("r") == failed_first - 1
        assert j.kv_get("ns", f"marker-{failed_first}") is None
        assert j.kv_get("ns", f"marker-{failed_first - 20}") == failed_first - 20
        assert [e.seq for e in j.events("r")] == list(range(failed_first))
    finally:
        j.close()
    j = LmdbJournal(small_fs / "j")  # and it reopens intact
    try:
        assert j.last_seq("r") == failed_first - 1
    finally:
        j.close()


# --- layout -------------------------------------------------------------------------------------
def test_sub_databases_and_key_layout(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = LmdbJournal(path)
    b = j.batch()
    b.create_run(RunRecord("run-1", "wf"), Event(0, "started", "wf", None, 1.0))
    b.append("run-1", Event(1, "step", "s", None, 1.0))
    b.put_timer(2.5, "run-1", 7, None)
    b.put_signal("run-1", "go", None)
    b.kv_put("ns", "k", None)
    j.commit(b)
    j.close()
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = {bytes(k) for k, _ in txn.cursor()}
            assert {b"events", b"runs", b"active", b"timers", b"signals", b"kv", b"meta"} <= names

            def keys(name: bytes) -> list[bytes]:
                return [bytes(k) for k, _ in txn.cursor(db=env.open_db(name, txn=txn, create=False))]

            assert keys(b"events") == [b"run-1\x00" + (0).to_bytes(8, "big"), b"run-1\x00" + (1).to_bytes(8, "big")]
            assert keys(b"runs") == [b"run-1"] and keys(b"active") == [b"run-1"]
            assert keys(b"signals") == [b"run-1\x00go\x00" + (1).to_bytes(8, "big")]
            assert keys(b"kv") == [b"ns\x00k"]
            assert keys(b"timers") == [timer_key(2.5, "run-1", 7)]
            assert txn.get(b"format_version", db=env.open_db(b"meta", txn=txn, create=False)) == str(FORMAT_VERSION).encode()
    finally:
        env.close()


@pytest.mark.parametrize("due", [0.0, -0.0, 1e-300, 0.5, 1.0, 1700000000.123456, 2.0**62, -1.0, -1e10])
def test_due_encoding_round_trips(due: float) -> None:
    assert due_from_bytes(due_bytes(due)) == due
    assert parse_timer_key(timer_key(due, "r", -3)) == (due, "r", -3)


def test_due_encoding_is_ordered() -> None:
    dues = sorted([-1e10, -1.0, -1e-300, 0.0, 1e-300, 0.5, 1.0, 3.0, 1e9, 1.7e9, 2.0**62, float("inf")])
    assert sorted(dues, key=due_bytes) == dues
    with pytest.raises(ValueError, match="NaN"):
        due_bytes(float("nan"))


def test_invalid_ops_fail_their_batch_only(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    try:
        for bad in (
            lambda b: b.append("a\x00b", Event(0, "k", "n", None, 1.0)),
            lambda b: b.append("r", Event(-1, "k", "n", None, 1.0)),
            lambda b: b.put_timer(float("nan"), "r", 0, None),
            lambda b: b.kv_put("n\x00s", "k", 1),
        ):
            b = j.batch()
            b.kv_put("ns", "before", 1)
            bad(b)
            with pytest.raises(StorageError):
                j.commit(b)
            assert j.kv_get("ns", "before") is None
        b = j.batch()
        b.create_run(RunRecord("r", "wf"), Event(0, "started", "wf", None, 1.0))
        b.put_signal("r", "x" * 600, 1)  # key too long for LMDB
        with pytest.raises(StorageError):
            j.commit(b)
        assert j.get_run("r") is None
    finally:
        j.close()


def test_second_open_in_same_process_is_refused(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    try:
        with pytest.raises(StorageError):
            LmdbJournal(tmp_path / "j")
    finally:
        j.close()


def test_same_environment_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    from actorflow.errors import StorageError

    first = LmdbJournal(str(tmp_path / "j"), sync=False)
    try:
        with pytest.raises(StorageError, match="already open in this process"):
            LmdbJournal(str(tmp_path / "j" / "."), sync=False)
    finally:
        first.close()
    LmdbJournal(str(tmp_path / "j"), sync=False).close()  # closing frees the path again


def test_runs_in_an_unfinished_state_read_the_records_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = LmdbJournal(tmp_path / "j")
    try:
        b = j.batch()
        for i in range(2500):
            b.put_run(RunRecord(f"run-{i:05d}", "wf", state=("running", "sleeping", "completed")[i % 3]))
        j.commit(b)
        txns = []
        real_read_txn = j._read_txn
        monkeypatch.setattr(j, "_read_txn", lambda: txns.append(1) or real_read_txn())
        running = j.runs("running")
        assert [r.run_id for r in running] == [f"run-{i:05d}" for i in range(0, 2500, 3)]
        # the active index in chunks, then the 1,667 active records in 2 chunks: not one transaction per run
        assert len(txns) <= 6, len(txns)
    finally:
        j.close()
