"""Real crashes: SIGKILL a writer process mid-stream, reopen, and check every acknowledged event.

Also: a byte flipped on disk inside a stored event is reported as JournalCorrupt naming run and seq.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actorflow.errors import JournalCorrupt
from storage import Event, LmdbJournal, RunRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _crash_writer import N_RUNS, payload  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parent / "_crash_writer.py"
KILLS = 20


def _check_journal(path: Path, acked: dict[str, set[int]]) -> dict[str, int]:
    """Every acknowledged event is there with its content; every run is a dense, decodable log."""
    j = LmdbJournal(path)
    try:
        lengths = {}
        for i in range(N_RUNS):
            run_id = f"run-{i}"
            evs = j.events(run_id)  # decodes (CRC-checks) every record
            assert [e.seq for e in evs] == list(range(len(evs))), f"{run_id}: seqs not contiguous"
            for e in evs:  # nothing half-written or mixed up, acknowledged or not
                assert (e.kind, e.name, e.pos, e.at, e.data) == ("step", f"s{e.seq}", e.seq, float(e.seq), payload(run_id, e.seq))
            missing = sorted(s for s in acked.get(run_id, ()) if s >= len(evs))
            assert not missing, f"{run_id}: acknowledged seqs {missing[:5]} lost (log has {len(evs)})"
            assert j.last_seq(run_id) == len(evs) - 1
            # the kv written in the same batches agrees with the log: batches were atomic
            assert j.kv_get("last", run_id) == (len(evs) - 1 if evs else None), run_id
            lengths[run_id] = len(evs)
        return lengths
    finally:
        j.close()


@pytest.mark.parametrize("mode", ["threads", "callbacks", "always"])
def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, mode: str) -> None:
    """threads: blocking commit() callers; callbacks: submit() writers acknowledging from done callbacks
    that the journal runs on its completer thread, overlapped with the next round's sync, because they
    outlast half a sync; always: the same writers with cheap callbacks on commit_overlap="always"."""
    path = tmp_path / "journal"
    rnd = random.Random(20240601)
    overlaps = inline = 0
    acked: dict[str, set[int]] = {}
    total_acks = 0
    stderr_path = tmp_path / "child.stderr"
    for round_no in range(KILLS):
        target = rnd.choice([0, 1, 5]) if round_no % 5 == 0 else rnd.randint(1, 250)
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(HELPER), str(ROOT), str(path), str(round_no), mode],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline()
            assert first == b"ready\n", (first, stderr_path.read_text())
            got = 0
            while got < target:
                line = proc.stdout.readline()
                if not line:
                    break
                if line == b"overlap\n":
                    overlaps += 1
                    continue
                if line == b"inline\n":
                    inline += 1
                    continue
                run_id, seq = line.split()
                acked.setdefault(run_id.decode(), set()).add(int(seq))
                got += 1
            os.kill(proc.pid, signal.SIGKILL)
            # lines already written before the kill are acknowledgements too
            for line in proc.stdout.read().splitlines():
                if line.count(b" ") == 1:
                    run_id, seq = line.split()
                    acked.setdefault(run_id.decode(), set()).add(int(seq))
                    got += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()
        total_acks += got
        lengths = _check_journal(path, acked)
        assert sum(lengths.values()) >= sum(len(s) for s in acked.values())
    assert total_acks > 500  # the test did exercise something
    if mode in ("callbacks", "always"):
        assert overlaps > 0  # ... and, in this mode, acknowledgements from the completer
    if mode == "always":
        assert inline == 0  # ... and only from there


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i != -1:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def test_flipped_byte_on_disk_is_journal_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    marker = b"CORRUPT-ME-" + bytes(range(65, 91)) * 3
    j = LmdbJournal(path)
    b = j.batch()
    b.create_run(RunRecord("order-7", "wf"), Event(0, "started", "wf", None, 1.0))
    b.append("order-7", Event(1, "step", "charge", {"ok": True}, 2.0))
    b.append("order-7", Event(2, "step", "ship", marker, 3.0))
    b.append("order-8", Event(0, "step", "other", "fine", 1.0))
    j.commit(b)
    j.close()

    data_file = path / "data.mdb"
    raw = bytearray(data_file.read_bytes())
    spots = _find_all(bytes(raw), marker)
    assert spots, "marker not found in data.mdb"
    for at in spots:  # every copy, so no stale page can hide the flip
        raw[at + 20] ^= 0x01
    data_file.write_bytes(bytes(raw))

    j = LmdbJournal(path)
    try:
        with pytest.raises(JournalCorrupt) as info:
            j.events("order-7")
        err = info.value
        assert "order-7" in str(err) and "seq 2" in str(err) and "checksum" in str(err)
        assert (err.run_id, err.seq) == ("order-7", 2)
        # what is intact stays readable
        assert [e.seq for e in j.events("order-8")] == [0]
        assert j.last_seq("order-7") == 2
        assert j.get_run("order-7").workflow == "wf"  # type: ignore[union-attr]
    finally:
        j.close()


def test_corrupt_run_record_names_the_run(tmp_path: Path) -> None:
    import lmdb

    path = tmp_path / "journal"
    j = LmdbJournal(path)
    b = j.batch()
    b.put_run(RunRecord("order-9", "wf", state="running"))
    j.commit(b)
    j.close()
    env = lmdb.open(str(path), max_dbs=16)
    try:
        runs = env.open_db(b"runs")
        with env.begin(write=True) as txn:
            rec = bytearray(txn.get(b"order-9", db=runs))
            rec[-3] ^= 0xFF
            txn.put(b"order-9", bytes(rec), db=runs)
    finally:
        env.close()
    j = LmdbJournal(path)
    try:
        with pytest.raises(JournalCorrupt, match="order-9"):
            j.get_run("order-9")
        with pytest.raises(JournalCorrupt, match="order-9"):
            list(j.iter_runs())
        assert j.active_run_ids() == ["order-9"]  # the index itself is fine
    finally:
        j.close()
