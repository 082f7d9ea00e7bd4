"""The LMDB journal's reads: each in its own short read transaction, in the caller's thread.

A reader gate keeps reads out while the map is being grown or the environment closed (py-lmdb
must not resize under a live read transaction).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any, cast

import lmdb

from actorflow.errors import JournalCorrupt, JournalVersionError, StorageError

from ._codec import Codec
from ._journal import Event, RunRecord, undecodable_event
from ._keys import (
    SEP,
    due_bytes,
    event_prefix,
    kv_key,
    name_bytes,
    pack_seq,
    parse_signal_key,
    parse_timer_key,
    unpack_seq,
)

__all__ = ["LmdbReads"]

_SCAN_CHUNK = 1024


def _items(cur: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    """A cursor's (key, value) pairs from here on; plain bytes, as this journal never asks for buffers."""
    return cast(Iterator[tuple[bytes, bytes]], cur.iternext())


def _under(cur: lmdb.Cursor, prefix: bytes, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs under `prefix`, from `start` (default: the prefix) on."""
    out: list[tuple[bytes, bytes]] = []
    if cur.set_range(prefix if start is None else start):
        for k, v in _items(cur):
            if not k.startswith(prefix):
                break
            out.append((k, v))
    return out


def _seek_forth(cur: lmdb.Cursor, prefix: bytes, after: bytes | None) -> bool:
    """Put the cursor on the first key under `prefix` that is past `after`; False if there is none."""
    if after is None or after < prefix:
        return bool(cur.set_range(prefix))
    if not cur.set_range(after):
        return False
    return bool(cur.next()) if cur.key() == after else True


def _seek_back(cur: lmdb.Cursor, prefix: bytes, after: bytes | None) -> bool:
    """Put the cursor on the last key under `prefix` that is below `after`; False if there is none."""
    end = _prefix_end(prefix)
    bound = end if after is None or (end is not None and after > end) else after
    # on the first key >= bound, one step back is the last key below it
    if bound is None:
        return bool(cur.last())
    return bool(cur.prev()) if cur.set_range(bound) else bool(cur.last())


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with `prefix` (None: no such key, scan to the end)."""
    p = prefix.rstrip(b"\xff")
    return None if not p else p[:-1] + bytes([p[-1] + 1])


def _key(cur: lmdb.Cursor) -> bytes:
    return cast(bytes, cur.key())


class _ReaderGate:
    """Many readers, or one exclusive holder (map resize, close); the exclusive side has priority."""

    __slots__ = ("_cond", "_readers", "_exclusive", "_waiting")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._exclusive = False
        self._waiting = 0

    def enter(self) -> None:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._readers += 1

    def leave(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


class LmdbReads:
    """Read methods of LmdbJournal (the environment and sub-databases are opened there)."""

    _env: lmdb.Environment
    _gate: _ReaderGate
    _closed: bool
    _events: Any
    _runs: Any
    _active: Any
    _timers: Any
    _signals: Any
    _kv: Any
    codec: Codec

    def _read_txn(self) -> lmdb.Transaction:
        if self._closed:
            raise StorageError("journal is closed")
        self._gate.enter()
        if self._closed:
            self._gate.leave()
            raise StorageError("journal is closed")
        try:
            return self._env.begin()
        except lmdb.MapResizedError:  # another process grew the map
            self._gate.leave()
            self.adopt_map_size()
            return self._read_txn()
        except BaseException:
            self._gate.leave()
            raise

    def adopt_map_size(self) -> None:
        """Another process grew the map past ours (a live engine beside a reading tool): take its size.
        LMDB refuses new transactions until then; size 0 means "the size now in the data file"."""
        self._gate.acquire_exclusive()
        try:
            if not self._closed:
                self._env.set_mapsize(0)
        finally:
            self._gate.release_exclusive()

    def _end_read(self, txn: lmdb.Transaction) -> None:
        try:
            txn.abort()
        finally:
            self._gate.leave()

    def _last_seq_in(self, txn: lmdb.Transaction, prefix: bytes) -> int:
        cur = txn.cursor(db=self._events)
        # every key of the run sorts below run_id + b"\x01"
        found = cur.prev() if cur.set_range(prefix[:-1] + b"\x01") else cur.last()
        if found:
            k = _key(cur)
            if k.startswith(prefix):
                return unpack_seq(k[len(prefix) :])
        return -1

    def events(self, run_id: str, from_seq: int = 0, *, strict: bool = True) -> list[Event]:
        prefix = event_prefix(run_id)
        txn = self._read_txn()
        try:
            raw = self._raw_events(txn, prefix, from_seq)
        finally:
            self._end_read(txn)
        if strict:
            return self._decode_events(run_id, len(prefix), raw)
        out = []
        for item in raw:
            try:
                out += self._decode_events(run_id, len(prefix), [item])
            except (JournalCorrupt, JournalVersionError) as exc:
                out.append(undecodable_event(unpack_seq(item[0][len(prefix):]), exc))
        return out

    def load_run(self, run_id: str) -> tuple[RunRecord | None, list[Event], list[tuple[str, int, Any]]]:
        """Record, events and inbox of a run in one read transaction (waking a passivated run)."""
        return self.load_runs([run_id])[run_id]

    def load_runs(self, run_ids: list[str]) -> dict[str, tuple[RunRecord | None, list[Event], list[tuple[str, int, Any]]]]:
        """`load_run` for many runs in one read transaction (a crowd of timers firing at once)."""
        raw: list[tuple[str, bytes, bytes | None, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]] = []
        txn = self._read_txn()
        try:
            runs_db, ev_cur, sig_cur = self._runs, txn.cursor(db=self._events), txn.cursor(db=self._signals)
            for run_id in run_ids:
                prefix = event_prefix(run_id)
                raw_rec = cast("bytes | None", txn.get(name_bytes(run_id, "run id"), db=runs_db))
                if raw_rec is None:
                    raw.append((run_id, prefix, None, [], []))
                else:
                    raw.append((run_id, prefix, raw_rec, _under(ev_cur, prefix), _under(sig_cur, prefix)))
        finally:
            self._end_read(txn)
        out: dict[str, tuple[RunRecord | None, list[Event], list[tuple[str, int, Any]]]] = {}
        decode = self.codec.decode
        for run_id, prefix, raw_rec, raw_ev, raw_sig in raw:
            if raw_rec is None:
                out[run_id] = (None, [], [])
                continue
            rec = RunRecord.from_tuple(decode(raw_rec, f"run record {run_id!r}"))
            if rec.finished:
                out[run_id] = (rec, [], [])
                continue
            n = len(prefix)
            sigs = []
            for sk, sv in raw_sig:
                sname, seq = parse_signal_key(sk, n)
                sigs.append((sname, seq, decode(sv, f"signal {sname!r} of run {run_id!r}")))
            out[run_id] = (rec, self._decode_events(run_id, n, raw_ev), sigs)
        return out

    def _raw_events(self, txn: lmdb.Transaction, prefix: bytes, from_seq: int) -> list[tuple[bytes, bytes]]:
        return _under(txn.cursor(db=self._events), prefix, prefix + pack_seq(max(0, from_seq)))

    def _decode_events(self, run_id: str, n: int, raw: list[tuple[bytes, bytes]]) -> list[Event]:
        out = []
        decode = self.codec.decode
        for k, v in raw:
            seq = unpack_seq(k[n:])
            try:
                kind, name, pos, at, data = decode(v, f"run {run_id!r} seq {seq}")
            except JournalCorrupt as exc:
                raise JournalCorrupt(exc.message, where=exc.evidence.get("where"), run_id=run_id, seq=seq) from exc
            except JournalVersionError:
                raise
            except (TypeError, ValueError) as exc:
                raise JournalCorrupt(
                    f"run {run_id!r} seq {seq}: not an event record", where=f"run {run_id!r} seq {seq}", run_id=run_id, seq=seq
                ) from exc
            out.append(Event(seq, kind, name, data, at, pos))
        return out

    def last_seq(self, run_id: str) -> int:
        prefix = event_prefix(run_id)
        txn = self._read_txn()
        try:
            return self._last_seq_in(txn, prefix)
        finally:
            self._end_read(txn)

    def get_run(self, run_id: str) -> RunRecord | None:
        k = name_bytes(run_id, "run id")
        txn = self._read_txn()
        try:
            raw = txn.get(k, db=self._runs)
        finally:
            self._end_read(txn)
        return None if raw is None else RunRecord.from_tuple(self.codec.decode(raw, f"run record {run_id!r}"))

    def get_runs(self, run_ids: Iterable[str]) -> list[RunRecord | None]:
        """One read transaction and one `getmulti` per chunk of ids, instead of one transaction per id."""
        ids = list(run_ids)
        out: list[RunRecord | None] = []
        for i in range(0, len(ids), _SCAN_CHUNK):
            chunk = ids[i : i + _SCAN_CHUNK]
            keys = [name_bytes(r, "run id") for r in chunk]
            txn = self._read_txn()
            try:
                found = dict(txn.cursor(db=self._runs).getmulti(keys))
            finally:
                self._end_read(txn)
            decode = self.codec.decode
            for r, k in zip(chunk, keys):
                raw = found.get(k)
                out.append(None if raw is None else RunRecord.from_tuple(decode(raw, f"run record {r!r}")))
        return out

    def _scan(self, db: Any, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs under `prefix`, read in chunks so no read txn is held across yields."""
        start = prefix
        skip: bytes | None = None
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            txn = self._read_txn()
            try:
                cur = txn.cursor(db=db)
                if cur.set_range(start):
                    for k, v in _items(cur):
                        if not k.startswith(prefix):
                            break
                        if k == skip:
                            continue
                        chunk.append((k, v))
                        if len(chunk) >= _SCAN_CHUNK:
                            break
            finally:
                self._end_read(txn)
            yield from chunk
            if len(chunk) < _SCAN_CHUNK:
                return
            start = skip = chunk[-1][0]

    def iter_runs(self) -> Iterator[RunRecord]:
        decode = self.codec.decode
        for k, v in self._scan(self._runs):
            yield RunRecord.from_tuple(decode(v, f"run record {k.decode()!r}"))

    def runs_page(
        self,
        after: str | None = None,
        limit: int = 100,
        *,
        prefix: str = "",
        reverse: bool = False,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """One read transaction: a cursor seeks to the page's start (in the runs or the active index)
        and reads `limit` keys under `prefix`; the records of active ids come from one `getmulti`."""
        if limit <= 0:
            return []
        p = name_bytes(prefix, "run id prefix")
        start = None if after is None else name_bytes(after, "run id")
        raw: list[tuple[bytes, bytes]] = []
        txn = self._read_txn()
        try:
            cur = txn.cursor(db=self._active if unfinished else self._runs)
            found = _seek_back(cur, p, start) if reverse else _seek_forth(cur, p, start)
            while found:
                k = _key(cur)
                if not k.startswith(p):
                    break
                raw.append((k, b"" if unfinished else cast(bytes, cur.value())))
                if len(raw) >= limit:
                    break
                found = cur.prev() if reverse else cur.next()
            if unfinished and raw:
                got = cast("dict[bytes, bytes]", dict(txn.cursor(db=self._runs).getmulti([k for k, _ in raw])))
                raw = [(k, got[k]) for k, _ in raw if k in got]
        finally:
            self._end_read(txn)
        decode = self.codec.decode
        return [RunRecord.from_tuple(decode(v, f"run record {k.decode()!r}")) for k, v in raw]

    def run_counts(self) -> tuple[int, int]:
        txn = self._read_txn()
        try:
            return int(txn.stat(self._runs)["entries"]), int(txn.stat(self._active)["entries"])
        finally:
            self._end_read(txn)

    def change_marker(self) -> int:
        """LMDB's id of the last committed write transaction, read from the shared lock file: moves
        on every commit of any process that has the environment open."""
        if self._closed:
            raise StorageError("journal is closed")
        return int(self._env.info()["last_txnid"])

    def active_run_ids(self) -> list[str]:
        return [k.decode() for k, _ in self._scan(self._active)]

    def timers(self, until: float, start: float = 0.0, limit: int | None = None) -> list[tuple[float, str, int, Any]]:
        if limit is not None and limit <= 0:
            return []
        lo = due_bytes(start)
        hi = due_bytes(until)
        raw: list[tuple[bytes, bytes]] = []
        txn = self._read_txn()
        try:
            cur = txn.cursor(db=self._timers)
            if cur.set_range(lo):
                for k, v in _items(cur):
                    if k[:8] >= hi:
                        break
                    raw.append((k, v))
                    if limit is not None and len(raw) >= limit:
                        break
        finally:
            self._end_read(txn)
        out = []
        for k, v in raw:
            due, run_id, pos = parse_timer_key(k)
            out.append((due, run_id, pos, self.codec.decode(v, f"timer {run_id!r} pos {pos}")))
        return out

    def timer_count(self) -> int:
        txn = self._read_txn()
        try:
            return int(txn.stat(self._timers)["entries"])
        finally:
            self._end_read(txn)

    def signals(self, run_id: str, name: str | None = None) -> list[tuple[str, int, Any]]:
        run_prefix = event_prefix(run_id)
        prefix = run_prefix if name is None else run_prefix + name_bytes(name, "signal name") + SEP
        n = len(run_prefix)
        out = []
        for k, v in self._scan(self._signals, prefix):
            sname, seq = parse_signal_key(k, n)
            out.append((sname, seq, self.codec.decode(v, f"signal {sname!r} of run {run_id!r}")))
        return out

    def kv_get(self, ns: str, key: str) -> Any:
        k = kv_key(ns, key)
        txn = self._read_txn()
        try:
            raw = txn.get(k, db=self._kv)
        finally:
            self._end_read(txn)
        return None if raw is None else self.codec.decode(raw, f"{ns}/{key}")

    def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, Any]]:
        p = kv_key(ns, prefix)
        n = len(p) - len(prefix.encode())
        out = []
        for k, v in self._scan(self._kv, p):
            key = k[n:].decode()
            out.append((key, self.codec.decode(v, f"{ns}/{key}")))
        return out
