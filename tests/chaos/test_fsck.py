"""`actorflow fsck`: a healthy directory is clean; each kind of damage, made in a copy of a real data
directory, is found with its exit code; `--repair` rebuilds the index entries and leaves every event
byte for byte as it was; damaged events are reported and never "repaired"."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from actorflow._cli import main
from storage import Codec, fsck
from storage._keys import event_key, kv_key, pack_seq, signal_key, timer_key

from .fsck_app import build

codec = Codec()


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("fsck") / "data"
    ids = build(str(d))
    return d, ids


@pytest.fixture
def copy(healthy: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    d, ids = healthy
    dst = tmp_path / "data"
    shutil.copytree(d, dst)
    (dst / "engine.lock").unlink(missing_ok=True)
    return dst, ids


@contextlib.contextmanager
def raw(d: Path) -> Iterator[tuple[lmdb.Transaction, Callable[[str], Any]]]:
    """A write transaction on the environment, bypassing the journal (to damage it)."""
    env = lmdb.open(str(d), max_dbs=16, subdir=True)
    try:
        with env.begin(write=True) as txn:
            yield txn, lambda name: env.open_db(name.encode(), txn=txn)
    finally:
        env.close()


def dump(d: Path, db: str) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(d), max_dbs=16, subdir=True, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(db.encode(), txn=txn))]
    finally:
        env.close()


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["fsck", *argv])
    return code, out.getvalue() + err.getvalue()


def timer_of(d: Path, run_id: str) -> tuple[bytes, bytes]:
    found = [(k, v) for k, v in dump(d, "timers") if run_id.encode() + b"\x00" in k]
    assert len(found) == 1, found
    return found[0]


def test_healthy_directory_is_clean(healthy: tuple[Path, dict[str, Any]]) -> None:
    d, _ = healthy
    code, out = cli("--data-dir", str(d))
    assert code == 0, out
    assert out.rstrip().endswith("clean")
    report = json.loads(cli("--data-dir", str(d), "--json")[1])
    assert report["ok"] and report["counts"]["timers"] == 3 and report["counts"]["signals"] == 0
    assert report["counts"]["runs"] >= 10 and report["counts"]["events"] > 40


def _delete_timer(d: Path, ids: dict[str, Any]) -> None:
    k, _ = timer_of(d, ids["sleepers"][0])
    with raw(d) as (txn, db):
        assert txn.delete(k, db=db("timers"))


def _stale_timer(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(timer_key(5.0, ids["finished"], 3), codec.encode("sleep"), db=db("timers"))


def _delete_active(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        assert txn.delete(ids["waiter"].encode(), db=db("active"))


def _stale_active(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(ids["finished"].encode(), b"", db=db("active"))


def _redeliverable_signal(d: Path, ids: dict[str, Any]) -> None:
    """The inbox entry the waiter already received, back in its inbox (it would be taken again)."""
    with raw(d) as (txn, db):
        seq = 1  # the only signal sent to the waiter
        evs = [codec.decode(v) for k, v in txn.cursor(db=db("events")) if k.startswith(ids["waiter"].encode() + b"\x00")]
        got = [e[4]["seq"] for e in evs if e[0] == "signal_received"]
        assert got, evs
        seq = got[0]
        txn.put(signal_key(ids["waiter"], "first", seq), codec.encode("x"), db=db("signals"))


def _orphan_signal(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(signal_key("no-such-run", "go", 1), codec.encode(1), db=db("signals"))


def _signal_seq_back(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(b"signal_seq", pack_seq(0), db=db("meta"))


def _dangling_unique(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(kv_key("unique", "t1\x00u0"), codec.encode("gone-run"), db=db("kv"))


def _missing_tag(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        assert txn.delete(kv_key("tags", "blue\x00" + ids["tasks"][0]), db=db("kv"))


def _dangling_tag(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(kv_key("tags", "blue\x00gone-run"), codec.encode(None), db=db("kv"))


INDEX_DAMAGE = {
    "timer_missing": _delete_timer,
    "timer_stale": _stale_timer,
    "active_missing": _delete_active,
    "active_stale": _stale_active,
    "inbox_delivered": _redeliverable_signal,
    "inbox_orphan": _orphan_signal,
    "signal_seq": _signal_seq_back,
    "unique_dangling": _dangling_unique,
    "tag_missing": _missing_tag,
    "tag_dangling": _dangling_tag,
}


@pytest.mark.parametrize("kind", sorted(INDEX_DAMAGE))
def test_index_damage_found_and_repaired_events_untouched(kind: str, copy: tuple[Path, dict[str, Any]]) -> None:
    d, ids = copy
    before_events = dump(d, "events")
    before_runs = dump(d, "runs")
    INDEX_DAMAGE[kind](d, ids)

    code, out = cli("--data-dir", str(d), "--json")
    report = json.loads(out)
    assert code == 8, out
    assert report["by_kind"] == {kind: 1}, report
    assert report["findings"][0]["repairable"] and report["findings"][0]["severity"] == "index"

    code, out = cli("--data-dir", str(d), "--repair")
    assert code == 0, out
    assert "repaired 1 index entry" in out and out.rstrip().endswith("clean")
    assert dump(d, "events") == before_events  # repair never touches an event
    assert dump(d, "runs") == before_runs
    assert fsck(d).ok


def test_repaired_timer_fires_and_run_completes(copy: tuple[Path, dict[str, Any]]) -> None:
    """The rebuilt entry is the one the engine would have written (same key, same data)."""
    d, ids = copy
    key, value = timer_of(d, ids["sleepers"][0])
    _delete_timer(d, ids)
    assert fsck(d, repair=True).repaired == 1
    assert timer_of(d, ids["sleepers"][0]) == (key, value)


def _flip_event_byte(d: Path, ids: dict[str, Any]) -> None:
    k = event_key(ids["finished"], 1)
    with raw(d) as (txn, db):
        v = bytearray(txn.get(k, db=db("events")))
        v[-1] ^= 0x40
        txn.put(k, bytes(v), db=db("events"))


def _drop_event(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        assert txn.delete(event_key(ids["finished"], 2), db=db("events"))


def _bad_schedule(d: Path, ids: dict[str, Any]) -> None:
    with raw(d) as (txn, db):
        txn.put(kv_key("schedules", "t1"), codec.encode({"task": "t1", "every": None, "cron": None}), db=db("kv"))


def _record_says_done(d: Path, ids: dict[str, Any]) -> None:
    """A sleeper's record claims completed while its events end in a sleep (recovery would skip it)."""
    with raw(d) as (txn, db):
        k = ids["sleepers"][1].encode()
        rec = list(codec.decode(txn.get(k, db=db("runs"))))
        rec[2] = "completed"
        txn.put(k, codec.encode(tuple(rec)), db=db("runs"))
        txn.delete(k, db=db("active"))


def _corrupt_header(d: Path, ids: dict[str, Any]) -> None:
    k = ids["waiter"].encode()
    with raw(d) as (txn, db):
        v = bytearray(txn.get(k, db=db("runs")))
        v[0] = 0  # format 0 was never written
        txn.put(k, bytes(v), db=db("runs"))


RECORD_DAMAGE: dict[str, tuple[Callable[[Path, dict[str, Any]], None], set[str]]] = {
    "flipped event byte": (_flip_event_byte, {"checksum"}),
    "deleted event": (_drop_event, {"seq_gap"}),
    "bad schedule": (_bad_schedule, {"schedule_bad"}),
    # the sleeper's live timer is not called stale: a run with damage of its own gets no index verdicts
    "record contradicts events": (_record_says_done, {"state_mismatch"}),
    "zeroed record header": (_corrupt_header, {"checksum"}),
}


@pytest.mark.parametrize("what", sorted(RECORD_DAMAGE))
def test_damage_is_reported_and_never_rewritten(what: str, copy: tuple[Path, dict[str, Any]]) -> None:
    d, ids = copy
    damage, kinds = RECORD_DAMAGE[what]
    damage(d, ids)
    events, timers = dump(d, "events"), dump(d, "timers")
    code, out = cli("--data-dir", str(d), "--json")
    report = json.loads(out)
    assert code == 9, out
    assert set(report["by_kind"]) == kinds, report
    assert report["damage"] >= 1
    code, out = cli("--data-dir", str(d), "--repair")
    assert code == 9, out  # what is derivable is fixed; the damage stays, reported
    assert dump(d, "events") == events and dump(d, "timers") == timers
    left = fsck(d)
    assert left.damage >= 1 and left.index == 0


def test_findings_name_run_and_seq(copy: tuple[Path, dict[str, Any]]) -> None:
    d, ids = copy
    _flip_event_byte(d, ids)
    [f] = fsck(d).findings
    assert f.kind == "checksum" and f.run_id == ids["finished"] and "seq 1" in f.where and "checksum" in f.message


def test_repair_refused_while_an_engine_holds_the_directory(copy: tuple[Path, dict[str, Any]]) -> None:
    from actorflow._lockfile import DirLock

    d, ids = copy
    _delete_timer(d, ids)
    lock = DirLock(str(d))
    lock.acquire()
    try:
        code, out = cli("--data-dir", str(d), "--repair")
        assert code == 4 and "stop it before fsck --repair" in out
        code, out = cli("--data-dir", str(d))  # a check alone runs beside it
        assert code == 8 and "timer_missing" in out
    finally:
        lock.release()


def test_no_data_directory(tmp_path: Path) -> None:
    code, out = cli("--data-dir", str(tmp_path / "nope"))
    assert code == 3 and "no actorflow data directory" in out
    assert not (tmp_path / "nope").exists()


def test_struct_of_timer_key_is_what_engine_writes() -> None:
    # the timers fsck rebuilds use the engine's key layout: due, run id, NUL, biased pos
    k = timer_key(1.5, "r", 2)
    assert k[8:10] == b"r\x00" and struct.unpack(">I", k[-4:])[0] == 2 + (1 << 31)
