"""The LMDB journal: one environment, named sub-databases, group commit with one fsync per transaction.

Layout (keys in `_keys.py`; every value except `active`/`meta` is a codec record with header + CRC):

    events   run_id \\0 seq(8)                      -> (kind, name, pos, at, data)
    runs     run_id                                 -> RunRecord tuple
    active   run_id                                 -> b""   (runs not in a finished state)
    timers   due(8, order-preserving) run_id \\0 pos(4) -> data
    signals  run_id \\0 name \\0 inbox seq(8)         -> payload (inbox seq: global, monotonic)
    kv       ns \\0 key                              -> value
    meta     b"format_version" -> b"3", b"signal_seq" -> 8 bytes

The meta format version is the newest record format in the environment: opening an older journal
raises it to FORMAT_VERSION (it will hold records of both), one newer than this code refuses to open
(JournalVersionError). Records of every format from OLDEST_FORMAT_VERSION on are read (`_codec.py`).

Writes happen only in the group-commit thread: all batches queued since the last commit go into one
write transaction; `sync=True` makes LMDB fdatasync on commit (the meta page's flush follows, outside
LMDB's writer lock, see `_write`), so a future resolves only once its batch is on disk. A failing transaction is aborted whole (LMDB writes nothing of it); the committer then
retries its batches one by one so one bad batch fails alone. Reads (`_lmdb_reads.py`) run in their own read transaction
in the caller's thread; a reader gate keeps them out while the map is being grown.
"""

from __future__ import annotations

import collections
import errno
import os
import struct
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, Literal

import lmdb

from actorflow.errors import (
    JournalCorrupt,
    JournalFull,
    StorageError,
)

from ._codec import FORMAT_VERSION, OLDEST_FORMAT_VERSION, Codec, raise_version
from ._group_commit import GroupCommitter, check_overlap
from ._journal import (
    OP_APPEND,
    OP_CREATE_RUN,
    Journal,
    WriteBatch,
)
from ._keys import (
    SEP,
    name_bytes,
    pack_seq,
    unpack_seq,
)
from ._lmdb_ops import _SEQ1, LmdbOps, _Pending, _Refused
from ._lmdb_reads import LmdbReads, _ReaderGate

__all__ = ["LmdbJournal"]

MiB = 1024 * 1024
_META_VERSION = b"format_version"
_META_SIGNAL_SEQ = b"signal_seq"
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NEARLY_FULL = 16 * MiB  # an I/O error with less free space than this under the journal is a full disk
_TAILS_MAX = 100_000  # runs remembered by the append fast path before its cache is dropped


_OPEN_LOCK = threading.Lock()
_OPEN_PATHS: set[str] = set()  # real paths of environments open in this process


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, lmdb.DiskError):
        return True
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if isinstance(exc, lmdb.Error):
        code = getattr(exc, "code", 0)
        return code in _DISK_FULL_ERRNOS or "No space left" in str(exc)
    return False


def _disk_nearly_full(path: str) -> bool:
    """LMDB reports a short write on a full disk as EIO: look at the free space to tell."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL


class LmdbJournal(LmdbOps, LmdbReads, Journal):
    """The default, durable journal (see the module docstring for the layout)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        codec: Codec | None = None,
        map_size: int = 64 * MiB,
        max_map_size: int | None = None,
        max_batch_ops: int = 20000,
        max_readers: int = 1024,
        commit_overlap: bool | Literal["always"] = True,
        append_cache: bool = True,
    ) -> None:
        check_overlap(commit_overlap)
        self.path = os.fspath(path)
        self.codec = codec or Codec()
        self.sync = sync
        if map_size <= 0:
            raise ValueError("map_size must be positive")
        if max_map_size is not None and max_map_size < map_size:
            raise ValueError(f"max_map_size ({max_map_size}) is below map_size ({map_size})")
        self.max_map_size = max_map_size
        self.commits = 0
        self.map_growths = 0
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:  # a file in the way, a read-only or missing parent
            raise StorageError(
                f"cannot open LMDB journal at {self.path}: {exc.strerror} ({exc.filename!r}); it must be a "
                "writable directory",
                path=self.path,
            ) from None
        self._key = os.path.realpath(self.path)
        with _OPEN_LOCK:
            if self._key in _OPEN_PATHS:
                raise StorageError(
                    f"the LMDB journal at {self.path} is already open in this process; share that "
                    "journal (LMDB must not open one environment twice in a process)",
                    path=self.path,
                )
            _OPEN_PATHS.add(self._key)
        try:
            self._open_env(map_size, max_readers, sync)
        except BaseException:
            with _OPEN_LOCK:
                _OPEN_PATHS.discard(self._key)
            raise
        self._gate = _ReaderGate()
        self._tails: dict[str, int] = {}  # run id -> the seq after the last event this journal wrote
        # False: kept for one transaction only - a writer that never appends to a run twice (a
        # multiprocess engine's facade: its shards append) would only hold its creates' ids in it
        self._append_cache = append_cache
        self._forgotten: collections.deque[str] = collections.deque()  # forget()'s ids, dropped by the writer
        self._pending = _Pending()
        self._next_txn_id = -1  # LMDB's id of our next write txn if no other writer commits meanwhile
        self._close_lock = threading.Lock()
        self._closed = False
        self._committer = GroupCommitter(
            self._apply,
            name=f"actorflow-journal-{os.path.basename(self.path)}",
            max_ops=max_batch_ops,
            overlap=commit_overlap,
        )

    def _open_env(self, map_size: int, max_readers: int, sync: bool) -> None:
        try:
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                subdir=True,
                max_dbs=16,
                max_readers=max_readers,
                sync=sync,
                # the meta page is flushed by `_write`'s env.sync after the commit, outside LMDB's
                # writer lock (see there); NOMETASYNC alone keeps the environment consistent (ACI)
                metasync=False,
                lock=True,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open LMDB journal at {self.path}: {exc}", path=self.path) from exc
        try:
            self._open_dbs()
        except BaseException:
            self._env.close()
            raise

    # --- open -------------------------------------------------------------------------------
    def _open_dbs(self) -> None:
        env = self._env
        try:
            with env.begin(write=True) as txn:
                self._meta = env.open_db(b"meta", txn=txn)
                raw = txn.get(_META_VERSION, db=self._meta)
                if raw is not None:
                    try:
                        found = int(raw)
                    except ValueError:
                        raise JournalCorrupt(
                            f"journal at {self.path}: unreadable format version {raw!r}", where="meta"
                        ) from None
                    if not OLDEST_FORMAT_VERSION <= found <= FORMAT_VERSION:
                        raise_version(found, f"journal at {self.path}")
                    if found < FORMAT_VERSION:
                        # records of both formats from here on: a reader of only `found` must refuse it
                        txn.put(_META_VERSION, str(FORMAT_VERSION).encode(), db=self._meta)
                else:
                    txn.put(_META_VERSION, str(FORMAT_VERSION).encode(), db=self._meta)
                self._events = env.open_db(b"events", txn=txn)
                self._runs = env.open_db(b"runs", txn=txn)
                self._active = env.open_db(b"active", txn=txn)
                self._timers = env.open_db(b"timers", txn=txn)
                self._signals = env.open_db(b"signals", txn=txn)
                self._kv = env.open_db(b"kv", txn=txn)
                raw = txn.get(_META_SIGNAL_SEQ, db=self._meta)
                self._sig_seq = 0 if raw is None else unpack_seq(raw)
        except lmdb.Error as exc:
            if _is_disk_full(exc):
                raise JournalFull(f"disk full: cannot initialize journal at {self.path}", path=self.path) from exc
            raise StorageError(f"cannot open LMDB journal at {self.path}: {exc}", path=self.path) from exc

    # --- writes -----------------------------------------------------------------------------
    def submit(self, batch: WriteBatch) -> Future[list[Any]]:
        return self._committer.submit(batch)

    def commit(self, batch: WriteBatch, timeout: float | None = None) -> list[Any]:
        return self._committer.commit(batch, timeout)

    def _apply(self, batches: list[WriteBatch]) -> list[list[Any]]:
        """Group-commit thread: all `batches` in one transaction, grown and retried on MapFull."""
        precise = False
        while True:
            try:
                out = self._write(batches, precise)
                self.commits += 1
                return out
            except _Refused:
                precise = True  # again op by op, so the error names the refused append
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self.adopt_map_size()
            except (lmdb.Error, OSError) as exc:
                if _is_disk_full(exc) or _disk_nearly_full(self.path):
                    raise JournalFull(
                        f"disk full under journal {self.path}: the commit was rolled back and nothing of it "
                        f"was written ({exc}); free space and retry",
                        path=self.path,
                    ) from exc
                if isinstance(exc, lmdb.BadValsizeError):
                    raise StorageError(f"journal key or value too large for LMDB: {exc}") from exc
                raise StorageError(f"journal write failed: {exc}", path=self.path) from exc

    def _grow(self) -> None:
        current = self._env.info()["map_size"]
        if self.max_map_size is not None and current >= self.max_map_size:
            raise JournalFull(
                f"journal at {self.path} reached its max_map_size of {self.max_map_size} bytes; "
                "the commit was rolled back and nothing of it was written",
                path=self.path,
                max_map_size=self.max_map_size,
            )
        new = current * 2
        if self.max_map_size is not None:
            new = min(new, self.max_map_size)
        self._gate.acquire_exclusive()
        try:
            self._env.set_mapsize(new)
        finally:
            self._gate.release_exclusive()
        self.map_growths += 1

    def forget(self, run_ids: Iterable[str]) -> None:
        # dropped by the writer when its next transaction begins, never in the middle of one: an append
        # that missed the cache there checks seq - 1 in the database, where an append earlier in the
        # same transaction is not yet (its put is deferred to the transaction's putmulti)
        self._forgotten.extend(run_ids)

    def _write(self, batches: list[WriteBatch], precise: bool = False) -> list[list[Any]]:
        """All `batches` in one write transaction; per batch, the per-op results.

        Appends are the hot path (one per event): an append of seq N must find seq N-1 already there.
        `_tails` remembers, per run, the seq after the last one this journal wrote, so the common
        append (the next seq of a run we just wrote) needs no read; the no-overwrite flag still
        refuses a seq that exists. The cache is dropped whole when a transaction fails, when
        another writer committed in between (LMDB's txn id skipped), and when it grows large.

        Event appends and run records are written at the end with one `putmulti` per database:
        py-lmdb releases the GIL around every single put, and with other threads wanting the GIL
        each release costs a wait to get it back (`python -m benchmarks.lmdb_gil`: 5-9x less time
        per item in a putmulti with one busy thread beside it). `precise` (the retry after a
        refused append) puts them one by one instead, so the error names the refused append.
        """
        txn = self._env.begin(write=True)
        txn_id = txn.id()
        tails = self._tails
        if txn_id != self._next_txn_id or len(tails) > _TAILS_MAX:
            tails.clear()
        forgotten = self._forgotten
        while forgotten:
            tails.pop(forgotten.popleft(), None)
        sig0 = self._sig_seq
        op: Any = None
        self._pending = pending = _Pending()
        try:
            creates = [
                name_bytes(o[1], "run id") for b in batches if b.creates for o in b.ops if o[0] == OP_CREATE_RUN
            ] if (batches[0].creates if len(batches) == 1 else any(b.creates for b in batches)) else None
            if creates:  # what creating needs to know, read in two calls instead of two per run
                pending.known_runs = dict(txn.cursor(db=self._runs).getmulti(creates))
                pending.leftovers = {k for k, _ in txn.cursor(db=self._events).getmulti([k + SEP + _SEQ1 for k in creates])}
            put = txn.put
            evdb = self._events
            tail = tails.get
            pack = pack_seq
            other = self._write_other
            events = pending.events
            out: list[list[Any]] = []
            for batch in batches:
                ops = batch.ops
                res: list[Any] = [None] * len(ops)
                for i, op in enumerate(ops):
                    if op[0] == OP_APPEND:
                        _, run_id, seq, rec = op
                        if tail(run_id) == seq:  # seq - 1 is the last event this journal wrote for the run
                            key = run_id.encode() + SEP + pack(seq)
                        else:
                            if "\x00" in run_id:
                                raise ValueError(f"invalid run id {run_id!r}: may not contain NUL")
                            prefix = run_id.encode() + SEP
                            if seq and txn.get(prefix + pack(seq - 1), db=evdb) is None:
                                self._append_refused(txn, run_id, seq)
                            key = prefix + pack(seq)
                        if precise:
                            if not put(key, rec, overwrite=False, db=evdb):
                                self._append_refused(txn, run_id, seq)
                        else:
                            events.append((key, rec))
                        tails[run_id] = seq + 1
                    else:
                        res[i] = other(txn, op)
                out.append(res)
            if len(events) == 1:  # one put costs less than a cursor and a putmulti (one GIL release either way)
                if not put(*events[0], overwrite=False, db=evdb):
                    raise _Refused()
            elif events and txn.cursor(db=evdb).putmulti(events, overwrite=False)[1] != len(events):
                raise _Refused()
            if pending.runs:
                self._flush_runs(txn)
            if pending.active:  # (a step's commit appends one event and touches no run record)
                active_puts = []
                for k, live in pending.active.items():
                    if live:
                        active_puts.append((k, b""))
                    else:
                        txn.delete(k, db=self._active)
                if active_puts:
                    # no overwrite: an entry already there stays untouched (rewriting it would copy its page)
                    txn.cursor(db=self._active).putmulti(active_puts, overwrite=False)
            if self._sig_seq != sig0:
                put(_META_SIGNAL_SEQ, pack_seq(self._sig_seq), db=self._meta)
            self._committer.syncing()
            txn.commit()
            self._next_txn_id = txn_id + 1
            if not self._append_cache:
                tails.clear()
        except BaseException as exc:
            tails.clear()
            self._sig_seq = sig0
            self._abort_write(txn)
            if isinstance(exc, (ValueError, TypeError, AttributeError, OverflowError, struct.error)):
                # a malformed op (bad key part, negative seq...): fail its batch, not the writer
                raise StorageError(f"invalid journal op {_describe(op)}: {exc}") from exc
            raise
        if self.sync:
            # LMDB's commit fdatasyncs the data pages and writes the meta page under its writer
            # lock; the meta page's sync runs here, after the lock is released, so writers in other
            # processes sharing the environment (a multiprocess engine's shards and facade) sync in
            # parallel instead of one after another: 3 processes committing to one environment,
            # ~110-210 -> ~300-800 commits/s on this disk. Durable on return as before.
            try:
                self._env.sync(True)
            except (lmdb.Error, OSError) as exc:
                self._tails.clear()
                raise StorageError(
                    f"journal sync failed after a commit ({exc}): its writes are in the journal but "
                    "not known to be on disk, and are reported as failed",
                    path=self.path,
                    committed=True,  # GroupCommitter: no retry batch by batch (it would apply them twice)
                ) from exc
        return out

    def _abort_write(self, txn: lmdb.Transaction) -> None:
        """Abort a write txn with no reader inside LMDB: py-lmdb 2.x/3.0 can deadlock aborting a
        write transaction while other threads run read transactions (1.8 does not)."""
        self._gate.acquire_exclusive()
        try:
            txn.abort()
        except lmdb.Error:
            pass
        finally:
            self._gate.release_exclusive()

    # --- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Commit what is queued, then close the environment; reads after this raise StorageError."""
        with self._close_lock:
            if self._closed:
                return
            self._committer.close()
            self._gate.acquire_exclusive()
            try:
                self._closed = True
                self._env.close()
            finally:
                self._gate.release_exclusive()
                with _OPEN_LOCK:
                    _OPEN_PATHS.discard(self._key)

    @property
    def closed(self) -> bool:
        return self._closed

    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    def __enter__(self) -> LmdbJournal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LmdbJournal({self.path!r}, sync={self.sync})"


def _describe(op: Any) -> str:
    if not isinstance(op, tuple):
        return repr(op)
    return "(" + ", ".join(repr(x) if not isinstance(x, bytes) else f"<{len(x)} bytes>" for x in op) + ")"
