"""The LMDB journal's writes other than appends, inside the write transaction `LmdbJournal._write`
opens: run records and creations (held back for one `putmulti` per database), signals, timers and
the kv indexes. A mixin of `LmdbJournal` (`_lmdb.py`: the environment, the transaction, appends)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lmdb

from actorflow.errors import StorageError

from ._journal import (
    FINISHED_STATES,
    OP_CREATE_RUN,
    OP_DEL_SIGNAL,
    OP_DEL_TIMER,
    OP_KV_DEL,
    OP_KV_DEL_IF,
    OP_KV_PUT,
    OP_KV_PUT_NEW,
    OP_PUT_RUN,
    OP_PUT_SIGNAL,
    OP_PUT_TIMER,
    RunRecord,
    SignalResult,
)
from ._keys import SEP, kv_key, name_bytes, pack_seq, signal_key, timer_key
from ._lmdb_reads import _key

if TYPE_CHECKING:
    from ._codec import Codec

__all__ = ["LmdbOps"]

_SEQ1 = pack_seq(1)
_NOT_FOUND = SignalResult.NOT_FOUND


class _Refused(Exception):
    """A batched append found its key taken: the transaction is redone op by op to name it."""


class _Pending:
    """Writes of the open write transaction held back for one `putmulti` per database."""

    __slots__ = ("events", "runs", "active", "known_runs", "leftovers")

    def __init__(self) -> None:
        self.known_runs: dict[bytes, bytes] = {}  # records, read ahead, of runs this txn creates
        self.leftovers: set[bytes] = set()  # their seq-1 event keys found (events left from before)
        self.events: list[tuple[bytes, bytes]] = []
        self.runs: dict[bytes, bytes] = {}
        self.active: dict[bytes, bool] = {}  # run key -> in the active index at the end of the txn


class LmdbOps:
    """The non-append half of LmdbJournal's write path (which sets up the attributes below)."""

    if TYPE_CHECKING:
        codec: Codec
        _pending: _Pending
        _tails: dict[str, int]
        _sig_seq: int
        _events: Any
        _runs: Any
        _signals: Any
        _timers: Any
        _kv: Any

        def _last_seq_in(self, txn: lmdb.Transaction, prefix: bytes) -> int: ...

    def _flush_runs(self, txn: lmdb.Transaction) -> None:
        """Write the run records put so far in this transaction (before anything reads them)."""
        runs = self._pending.runs
        if runs:
            txn.cursor(db=self._runs).putmulti(list(runs.items()))
            runs.clear()

    def _append_refused(self, txn: lmdb.Transaction, run_id: str, seq: int) -> None:
        prefix = run_id.encode() + SEP
        raise StorageError(
            f"run {run_id!r}: append of seq {seq} but next is {self._next_seq(txn, prefix)}",
            run_id=run_id,
            seq=seq,
        )

    def _write_other(self, txn: lmdb.Transaction, op: tuple[Any, ...]) -> Any:
        """Every op but an append (inside `_write`'s transaction); returns the op's result."""
        code = op[0]
        put = txn.put
        pending = self._pending
        if code == OP_PUT_RUN:
            _, run_id, rec, finished = op
            k = name_bytes(run_id, "run id")
            pending.runs[k] = rec  # a later record of the same run in this transaction wins
            pending.active[k] = not finished
            return None
        if code == OP_CREATE_RUN:
            _, run_id, rec, ev, _wf = op
            k = name_bytes(run_id, "run id")
            existing = pending.runs.get(k) or pending.known_runs.get(k)
            if existing is not None:
                return RunRecord.from_tuple(self.codec.decode(existing, f"run record {run_id!r}"))
            pending.runs[k] = rec
            pending.active[k] = True
            prefix = k + SEP
            if prefix + _SEQ1 in pending.leftovers:
                self._drop_events(txn, prefix)
            put(prefix + pack_seq(0), ev, db=self._events)
            self._tails[run_id] = 1  # the run's only event is now seq 0
            return None
        if code == OP_PUT_SIGNAL:
            _, run_id, name, rec = op
            k = name_bytes(run_id, "run id")
            raw = pending.runs.get(k)
            if raw is None:
                raw = cast("bytes | None", txn.get(k, db=self._runs))
            if raw is None:
                return _NOT_FOUND
            state = self.codec.decode(raw, f"run record {run_id!r}")[2]
            if state in FINISHED_STATES:
                return state
            self._sig_seq += 1
            put(signal_key(run_id, name, self._sig_seq), rec, db=self._signals)
            return self._sig_seq
        if code == OP_DEL_SIGNAL:
            txn.delete(signal_key(op[1], op[2], op[3]), db=self._signals)
            return None
        if code == OP_PUT_TIMER:
            put(timer_key(op[1], op[2], op[3]), op[4], db=self._timers)
            return None
        if code == OP_DEL_TIMER:
            txn.delete(timer_key(op[1], op[2], op[3]), db=self._timers)
            return None
        if code == OP_KV_PUT:
            put(kv_key(op[1], op[2]), op[3], db=self._kv)
            return None
        if code == OP_KV_DEL:
            txn.delete(kv_key(op[1], op[2]), db=self._kv)
            return None
        if code == OP_KV_PUT_NEW:
            _, ns, key, rec, value = op
            k = kv_key(ns, key)
            if put(k, rec, overwrite=False, db=self._kv):
                return value
            return self.codec.decode(cast(bytes, txn.get(k, db=self._kv)), f"{ns}/{key}")
        if code == OP_KV_DEL_IF:
            _, ns, key, expected = op
            k = kv_key(ns, key)
            present = cast("bytes | None", txn.get(k, db=self._kv))
            if present is None or self.codec.decode(present, f"{ns}/{key}") != expected:
                return False
            txn.delete(k, db=self._kv)
            return True
        raise StorageError(f"unknown journal op {code}")

    def _next_seq(self, txn: lmdb.Transaction, prefix: bytes) -> int:
        return self._last_seq_in(txn, prefix) + 1

    def _drop_events(self, txn: lmdb.Transaction, prefix: bytes) -> None:
        cur = txn.cursor(db=self._events)
        if cur.set_range(prefix):
            while _key(cur).startswith(prefix):
                if not cur.delete():
                    break
