"""An in-memory journal with the LMDB journal's semantics, for tests and the in-memory engine."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from actorflow.errors import JournalCorrupt, JournalVersionError, StorageError

from ._codec import Codec
from ._journal import (
    OP_APPEND,
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
    Event,
    Journal,
    RunRecord,
    SignalResult,
    WriteBatch,
    undecodable_event,
)

__all__ = ["MemoryJournal"]


class MemoryJournal(Journal):
    """Keeps encoded records in dicts; every commit is atomic and immediately 'durable'."""

    def __init__(self, codec: Codec | None = None, **_: Any) -> None:
        self.codec = codec or Codec()
        self._lock = threading.RLock()
        self._events: dict[str, list[bytes]] = {}
        self._runs: dict[str, bytes] = {}
        self._active: set[str] = set()
        self._timers: list[tuple[float, str, int]] = []
        self._timer_data: dict[tuple[float, str, int], bytes] = {}
        self._signals: dict[str, dict[str, dict[int, bytes]]] = {}
        self._signal_seq = 0
        self._kv: dict[str, dict[str, bytes]] = {}
        self._closed = False
        self.commits = 0

    def submit(self, batch: WriteBatch) -> Future[list[Any]]:
        fut: Future[list[Any]] = Future()
        try:
            fut.set_result(self._apply(batch))
        except BaseException as exc:  # noqa: BLE001
            fut.set_exception(exc)
        return fut

    def _apply(self, batch: WriteBatch) -> list[Any]:
        with self._lock:
            if self._closed:
                raise StorageError("journal is closed")
            results: list[Any] = []
            undo: list[Callable[[], object]] = []
            try:
                for op in batch.ops:
                    results.append(self._apply_op(op, undo))
            except BaseException:
                for action in reversed(undo):  # a batch is atomic: nothing of a failed one stays
                    action()
                raise
            self.commits += 1
            return results

    def _apply_op(self, op: tuple[Any, ...], undo: list[Callable[[], object]]) -> Any:
        code = op[0]
        if code >= OP_KV_PUT and "\x00" in op[1]:  # as LMDB's key layout refuses it
            raise StorageError(f"invalid kv namespace {op[1]!r}: may not contain NUL")
        if code == OP_APPEND:
            _, run_id, seq, rec = op
            if "\x00" in run_id:
                raise StorageError(f"invalid run id {run_id!r}: may not contain NUL")
            log = self._events.get(run_id)
            if log is None:
                log = self._events[run_id] = []
                undo.append(lambda: self._events.pop(run_id, None))
            if seq != len(log):
                raise StorageError(f"run {run_id!r}: append of seq {seq} but next is {len(log)}")
            log.append(rec)
            undo.append(log.pop)
        elif code == OP_PUT_RUN:
            _, run_id, rec, finished = op
            undo.append(self._run_restorer(run_id))
            self._runs[run_id] = rec
            (self._active.discard if finished else self._active.add)(run_id)
        elif code == OP_CREATE_RUN:
            _, run_id, rec, ev, _wf = op
            if run_id in self._runs:
                return self._decode_run(run_id, self._runs[run_id])
            undo.append(self._run_restorer(run_id))
            old_log = self._events.get(run_id)
            undo.append(
                lambda: self._events.pop(run_id, None)
                if old_log is None
                else self._events.__setitem__(run_id, old_log)
            )
            self._runs[run_id] = rec
            self._active.add(run_id)
            self._events[run_id] = [ev]
        elif code == OP_PUT_TIMER:
            _, due, run_id, pos, rec = op
            key = (due, run_id, pos)
            undo.append(self._timer_restorer(key))
            if key not in self._timer_data:
                bisect.insort(self._timers, key)
            self._timer_data[key] = rec
        elif code == OP_DEL_TIMER:
            key = (op[1], op[2], op[3])
            undo.append(self._timer_restorer(key))
            if self._timer_data.pop(key, None) is not None:
                i = bisect.bisect_left(self._timers, key)
                del self._timers[i]
        elif code == OP_PUT_SIGNAL:
            _, run_id, name, rec = op
            if "\x00" in name:
                raise StorageError(f"invalid signal name {name!r}: may not contain NUL")
            raw = self._runs.get(run_id)
            if raw is None:
                return SignalResult.NOT_FOUND
            run = self._decode_run(run_id, raw)
            if run.finished:
                return run.state
            old_seq = self._signal_seq
            self._signal_seq += 1
            inbox = self._signals.setdefault(run_id, {}).setdefault(name, {})
            inbox[self._signal_seq] = rec
            def undo_signal() -> None:
                inbox.pop(old_seq + 1, None)
                self._signal_seq = old_seq

            undo.append(undo_signal)
            return self._signal_seq
        elif code == OP_DEL_SIGNAL:
            _, run_id, name, seq = op
            inbox = self._signals.get(run_id, {}).get(name, {})
            old = inbox.pop(seq, None)
            if old is not None:
                undo.append(lambda: inbox.__setitem__(seq, old))
        elif code == OP_KV_PUT:
            undo.append(self._kv_restorer(op[1], op[2]))
            self._kv.setdefault(op[1], {})[op[2]] = op[3]
        elif code == OP_KV_DEL:
            undo.append(self._kv_restorer(op[1], op[2]))
            self._kv.get(op[1], {}).pop(op[2], None)
        elif code == OP_KV_PUT_NEW:
            _, ns, key, rec, value = op
            present = self._kv.get(ns, {}).get(key)
            if present is not None:
                return self.codec.decode(present, f"{ns}/{key}")
            undo.append(self._kv_restorer(ns, key))
            self._kv.setdefault(ns, {})[key] = rec
            return value
        elif code == OP_KV_DEL_IF:
            _, ns, key, expected = op
            present = self._kv.get(ns, {}).get(key)
            if present is None or self.codec.decode(present, f"{ns}/{key}") != expected:
                return False
            undo.append(self._kv_restorer(ns, key))
            del self._kv[ns][key]
            return True
        else:
            raise StorageError(f"unknown journal op {code}")
        return None

    def _run_restorer(self, run_id: str) -> Callable[[], object]:
        old = self._runs.get(run_id)
        was_active = run_id in self._active

        def restore() -> None:
            if old is None:
                self._runs.pop(run_id, None)
            else:
                self._runs[run_id] = old
            (self._active.add if was_active else self._active.discard)(run_id)

        return restore

    def _timer_restorer(self, key: tuple[float, str, int]) -> Callable[[], object]:
        old = self._timer_data.get(key)

        def restore() -> None:
            present = key in self._timer_data
            if old is None:
                if present:
                    del self._timer_data[key]
                    del self._timers[bisect.bisect_left(self._timers, key)]
            else:
                if not present:
                    bisect.insort(self._timers, key)
                self._timer_data[key] = old

        return restore

    def _kv_restorer(self, ns: str, key: str) -> Callable[[], object]:
        old = self._kv.get(ns, {}).get(key)

        def restore() -> None:
            if old is None:
                self._kv.get(ns, {}).pop(key, None)
            else:
                self._kv.setdefault(ns, {})[key] = old

        return restore

    def _decode_run(self, run_id: str, raw: bytes) -> RunRecord:
        return RunRecord.from_tuple(self.codec.decode(raw, f"run record {run_id!r}"))

    def events(self, run_id: str, from_seq: int = 0, *, strict: bool = True) -> list[Event]:
        with self._lock:
            log = list(self._events.get(run_id, ()))
        out = []
        for seq in range(from_seq, len(log)):
            try:
                kind, name, pos, at, data = self.codec.decode(log[seq], f"run {run_id!r} seq {seq}")
            except (JournalCorrupt, JournalVersionError) as exc:
                if strict:
                    raise JournalCorrupt(exc.message, where=exc.evidence.get("where"), run_id=run_id, seq=seq) from exc
                out.append(undecodable_event(seq, exc))
                continue
            out.append(Event(seq, kind, name, data, at, pos))
        return out

    def last_seq(self, run_id: str) -> int:
        with self._lock:
            return len(self._events.get(run_id, ())) - 1

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            raw = self._runs.get(run_id)
        return None if raw is None else self._decode_run(run_id, raw)

    def iter_runs(self) -> Iterator[RunRecord]:
        with self._lock:
            items = sorted(self._runs.items())
        for run_id, raw in items:
            yield self._decode_run(run_id, raw)

    def active_run_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def timers(self, until: float, start: float = 0.0, limit: int | None = None) -> list[tuple[float, str, int, Any]]:
        with self._lock:
            i = bisect.bisect_left(self._timers, (start, "", -1))
            out: list[tuple[float, str, int, Any]] = []
            while i < len(self._timers) and self._timers[i][0] < until and (limit is None or len(out) < limit):
                key = self._timers[i]
                out.append((key[0], key[1], key[2], self.codec.decode(self._timer_data[key], "timer")))
                i += 1
            return out

    def timer_count(self) -> int:
        with self._lock:
            return len(self._timers)

    def signals(self, run_id: str, name: str | None = None) -> list[tuple[str, int, Any]]:
        with self._lock:
            by_name = self._signals.get(run_id, {})
            names = [name] if name is not None else sorted(by_name)
            out = []
            for n in names:
                for seq, rec in sorted(by_name.get(n, {}).items()):
                    out.append((n, seq, self.codec.decode(rec, f"signal {n!r} of run {run_id!r}")))
            return out

    def runs_page(
        self,
        after: str | None = None,
        limit: int = 100,
        *,
        prefix: str = "",
        reverse: bool = False,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        if limit <= 0:
            return []
        with self._lock:  # sorts the ids per call: fine for tests, not for millions of runs
            ids = sorted(self._active if unfinished else self._runs)
            if reverse:
                hi = len(ids) if after is None else bisect.bisect_left(ids, after)
                chosen = [r for r in reversed(ids[:hi]) if r.startswith(prefix)][:limit]
            else:
                lo = 0 if after is None else bisect.bisect_right(ids, after)
                chosen = [r for r in ids[lo:] if r.startswith(prefix)][:limit]
            raw = [(r, self._runs[r]) for r in chosen]
        return [self._decode_run(r, v) for r, v in raw]

    def run_counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._runs), len(self._active)

    def change_marker(self) -> int:
        return self.commits

    def kv_get(self, ns: str, key: str) -> Any:
        with self._lock:
            raw = self._kv.get(ns, {}).get(key)
        return None if raw is None else self.codec.decode(raw, f"{ns}/{key}")

    def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, Any]]:
        with self._lock:
            items = sorted((k, v) for k, v in self._kv.get(ns, {}).items() if k.startswith(prefix))
        return [(k, self.codec.decode(v, f"{ns}/{k}")) for k, v in items]

    def close(self) -> None:
        with self._lock:
            self._closed = True
