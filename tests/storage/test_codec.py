"""Codec properties (round trips, corruption detection, refusals) and event ordering under interleavings."""

from __future__ import annotations

import json
import pickle
import struct
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow.errors import JournalCorrupt, JournalVersionError, PayloadError
from storage import FORMAT_VERSION, OLDEST_FORMAT_VERSION, Codec, Event, LmdbJournal, MemoryJournal
from storage._codec import CODEC_JSON, CODEC_PICKLE, HEADER_SIZE

_finite = st.floats(allow_nan=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _finite | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
pickle_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _finite | st.text() | st.binary() | st.complex_numbers(allow_nan=False),
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=5)
    | st.frozensets(st.integers() | st.text(max_size=4), max_size=5),
    max_leaves=25,
)


@given(pickle_values)
def test_pickle_round_trip(value: Any) -> None:
    c = Codec("pickle")
    rec = c.encode(value)
    assert rec[0] == FORMAT_VERSION and rec[1] == CODEC_PICKLE
    assert c.decode(rec) == value
    assert c.roundtrip(value) == value


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    c = Codec("json")
    rec = c.encode(value)
    assert rec[1] == CODEC_JSON
    assert c.decode(rec) == value
    assert Codec("pickle").decode(rec) == value  # any codec instance reads any codec's records


@given(pickle_values, st.data())
def test_any_flipped_byte_is_detected(value: Any, data: st.DataObject) -> None:
    rec = bytearray(Codec().encode(value))
    # every byte: version, codec id (format 2's checksum covers both), crc, body
    pos = data.draw(st.sampled_from(range(len(rec))))
    mask = data.draw(st.integers(1, 255))
    rec[pos] ^= mask
    with pytest.raises((JournalCorrupt, JournalVersionError)):
        Codec().decode(bytes(rec), "rec")


@given(st.binary(max_size=HEADER_SIZE - 1))
def test_truncated_record_is_corrupt(raw: bytes) -> None:
    with pytest.raises(JournalCorrupt, match="truncated"):
        Codec().decode(raw, "run 'r' seq 3")


def test_newer_record_version_is_refused() -> None:
    body = b"\x80\x05N."  # pickle of None
    rec = struct.pack(">BBI", FORMAT_VERSION + 1, CODEC_PICKLE, zlib.crc32(body)) + body
    with pytest.raises(JournalVersionError, match="upgrade actorflow") as info:
        Codec().decode(rec, "run 'r' seq 0")
    assert info.value.found == FORMAT_VERSION + 1 and info.value.supported == FORMAT_VERSION
    assert "run 'r' seq 0" in str(info.value)


def _v1(body: bytes, seeded: bool, codec_id: int = CODEC_PICKLE) -> bytes:
    crc = zlib.crc32(body, (1 << 8) | codec_id) if seeded else zlib.crc32(body)
    return struct.pack(">BBI", 1, codec_id, crc) + body


@pytest.mark.parametrize("seeded", [False, True], ids=["as-first-written", "seeded-crc"])
def test_format_1_records_are_read_under_either_checksum_rule(seeded: bool) -> None:
    """Format 1 was written with the body's CRC, then (3b4b081..439e6c9) with the seeded one."""
    assert OLDEST_FORMAT_VERSION == 1
    value = {"kind": "step_completed", "data": [1, 2.5, "x"]}
    assert Codec().decode(_v1(pickle.dumps(value, 5), seeded)) == value
    assert Codec("pickle").decode(_v1(json.dumps(value).encode(), seeded, CODEC_JSON)) == value
    damaged = bytearray(_v1(pickle.dumps(value, 5), seeded))
    damaged[-2] ^= 0x40
    with pytest.raises(JournalCorrupt, match="checksum mismatch"):
        Codec().decode(bytes(damaged), "run 'r' seq 1")


def test_this_format_is_written_and_its_crc_is_not_format_1s() -> None:
    rec = Codec().encode("x")
    assert rec[0] == FORMAT_VERSION == 3
    body = rec[HEADER_SIZE:]
    with pytest.raises(JournalCorrupt):  # a format 3 record relabelled 1 matches neither rule of format 1
        Codec().decode(b"\x01" + rec[1:])
    assert Codec().decode(_v1(body, seeded=False)) == "x"


def test_format_2_records_are_read_and_checked_under_their_own_seed() -> None:
    """Format 3 kept format 2's records (it changed the environment: a shard map may be in it)."""
    body = pickle.dumps({"x": 1}, 5)
    v2 = struct.pack(">BBI", 2, CODEC_PICKLE, zlib.crc32(body, (2 << 8) | CODEC_PICKLE)) + body
    assert Codec().decode(v2) == {"x": 1}
    with pytest.raises(JournalCorrupt, match="checksum mismatch"):  # format 3's seed is not format 2's
        Codec().decode(b"\x03" + v2[1:])


def test_format_0_is_corrupt_not_a_version() -> None:
    body = b"\x80\x05N."
    rec = struct.pack(">BBI", 0, CODEC_PICKLE, zlib.crc32(body)) + body
    with pytest.raises(JournalCorrupt, match="checksum mismatch"):
        Codec().decode(rec)


# --- refusals -----------------------------------------------------------------------------------
def _gen() -> Any:
    yield 1


@pytest.mark.parametrize(
    "value, type_name",
    [(threading.Lock(), "lock"), (_gen(), "generator"), ({"nested": [threading.Lock()]}, "dict")],
)
def test_unpicklable_payload_names_its_type(value: Any, type_name: str) -> None:
    with pytest.raises(PayloadError, match=type_name) as info:
        Codec().encode(value, "step 'charge' result")
    assert "step 'charge' result" in str(info.value)
    assert type_name in info.value.type_name


def test_json_codec_refuses_non_json() -> None:
    with pytest.raises(PayloadError, match="object"):
        Codec("json").encode(object())


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
def test_oversized_payload_refused_before_anything_is_written(backend: str, tmp_path: Path) -> None:
    codec = Codec(max_payload=1000)
    j = MemoryJournal(codec=codec) if backend == "memory" else LmdbJournal(tmp_path / "j", codec=codec)
    try:
        b = j.batch()
        b.append("r", Event(0, "step", "small", "x" * 10, 1.0))
        with pytest.raises(PayloadError, match="over the 1000-byte limit") as info:
            b.append("r", Event(1, "step", "big", "x" * 5000, 1.0))
        assert info.value.limit == 1000 and info.value.size > 1000
        with pytest.raises(PayloadError):
            b.put_signal("r", "sig", b"y" * 2000)
        with pytest.raises(PayloadError):
            codec.roundtrip("z" * 2000)
        assert len(b) == 1  # the refused ops never entered the batch
        assert j.events("r") == [] and j.last_seq("r") == -1  # and nothing reached the journal
    finally:
        j.close()


# --- versions on disk ---------------------------------------------------------------------------
def _raw_put(path: Path, db: bytes, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=16, map_size=1 << 24)
    try:
        d = env.open_db(db)
        with env.begin(write=True) as txn:
            txn.put(key, value, db=d)
    finally:
        env.close()


def test_journal_with_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    LmdbJournal(path).close()
    _raw_put(path, b"meta", b"format_version", str(FORMAT_VERSION + 1).encode())
    with pytest.raises(JournalVersionError, match=f"format {FORMAT_VERSION + 1}.*upgrade actorflow") as info:
        LmdbJournal(path)
    assert info.value.found == FORMAT_VERSION + 1
    # the refused open released the environment: fixing the meta and reopening works in this process
    _raw_put(path, b"meta", b"format_version", str(FORMAT_VERSION).encode())
    LmdbJournal(path).close()


def test_journal_older_than_the_oldest_readable_format_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "j"
    LmdbJournal(path).close()
    _raw_put(path, b"meta", b"format_version", str(OLDEST_FORMAT_VERSION - 1).encode())
    with pytest.raises(JournalVersionError, match=f"format 0; this actorflow reads formats 1 to {FORMAT_VERSION}") as info:
        LmdbJournal(path)
    assert info.value.found == 0 and info.value.supported == FORMAT_VERSION and info.value.oldest == 1


def test_format_1_journal_opens_reads_its_records_and_is_marked_with_this_format(tmp_path: Path) -> None:
    """An environment left by format 1 (its meta says 1, its records are format 1, either CRC rule)."""
    path = tmp_path / "j"
    LmdbJournal(path).close()
    _raw_put(path, b"meta", b"format_version", b"1")
    for seq, seeded in enumerate([False, True]):
        rec = _v1(pickle.dumps(("step_completed", f"s{seq}", seq, 1.0, {"seq": seq}), 5), seeded)
        _raw_put(path, b"events", b"r\x00" + seq.to_bytes(8, "big"), rec)
    with LmdbJournal(path) as j:
        assert [(e.name, e.data) for e in j.events("r")] == [("s0", {"seq": 0}), ("s1", {"seq": 1})]
        b = j.batch()
        b.append("r", Event(2, "step_completed", "s2", {"seq": 2}, 1.0))
        j.commit(b)
        assert [e.seq for e in j.events("r")] == [0, 1, 2]
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            assert txn.get(b"format_version", db=env.open_db(b"meta", txn=txn, create=False)) == str(FORMAT_VERSION).encode()
            raw = txn.get(b"r\x00" + (2).to_bytes(8, "big"), db=env.open_db(b"events", txn=txn, create=False))
            assert raw[0] == FORMAT_VERSION  # new records are written in this code's format
    finally:
        env.close()


def test_event_record_with_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = LmdbJournal(path)
    b = j.batch()
    b.append("r", Event(0, "step", "s", 1, 1.0))
    j.commit(b)
    j.close()
    body = b"\x80\x05N."
    rec = struct.pack(">BBI", FORMAT_VERSION + 1, CODEC_PICKLE, zlib.crc32(body)) + body
    _raw_put(path, b"events", b"r\x00" + (1).to_bytes(8, "big"), rec)
    j = LmdbJournal(path)
    try:
        assert j.last_seq("r") == 1
        with pytest.raises(JournalVersionError, match="run 'r' seq 1"):
            j.events("r")
    finally:
        j.close()


# --- event ordering under random interleavings --------------------------------------------------
interleavings = st.lists(st.tuples(st.integers(0, 4), st.integers(1, 4)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings, st.sampled_from(["memory", "lmdb"]))
def test_events_read_back_in_seq_order(plan: list[tuple[int, int]], backend: str) -> None:
    """Batches of appends to 5 runs in any interleaving (several per batch too) read back in seq order."""
    with tempfile.TemporaryDirectory() as d:
        j = MemoryJournal() if backend == "memory" else LmdbJournal(d, sync=False)
        try:
            next_seq = [0] * 5
            expected: dict[int, list[Any]] = {r: [] for r in range(5)}
            for i, (run, n) in enumerate(plan):
                b = j.batch()
                for k in range(n):
                    r = (run + k) % 5 if i % 2 else run  # odd batches spread over runs
                    data = {"batch": i, "k": k}
                    b.append(f"run-{r}", Event(next_seq[r], "step", f"s{k}", data, float(i)))
                    expected[r].append(data)
                    next_seq[r] += 1
                j.commit(b)
            for r in range(5):
                evs = j.events(f"run-{r}")
                assert [e.seq for e in evs] == list(range(len(expected[r])))
                assert [e.data for e in evs] == expected[r]
                assert j.last_seq(f"run-{r}") == len(expected[r]) - 1
                if expected[r]:
                    mid = len(expected[r]) // 2
                    assert [e.seq for e in j.events(f"run-{r}", mid)] == list(range(mid, len(expected[r])))
        finally:
            j.close()


def test_flipped_codec_byte_is_a_checksum_failure() -> None:
    """The checksum covers the header's codec id: a record cannot silently decode under the other codec."""
    from actorflow.errors import JournalCorrupt
    from storage import Codec

    codec = Codec("json")
    rec = bytearray(codec.encode([1, 2, 3]))
    assert codec.decode(bytes(rec)) == [1, 2, 3]
    rec[1] = 1  # json -> pickle codec id
    with pytest.raises(JournalCorrupt):
        codec.decode(bytes(rec))
