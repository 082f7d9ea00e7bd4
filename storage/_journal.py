"""The journal interface every backend implements, and the records it stores."""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from actorflow.errors import InvalidRunId, PayloadError

from ._codec import Codec

__all__ = [
    "Event",
    "RunRecord",
    "WriteBatch",
    "Journal",
    "FINISHED_STATES",
    "SignalResult",
]

FINISHED_STATES = frozenset({"completed", "failed", "cancelled"})


class Event(NamedTuple):
    """One journaled fact of a run: its sequence number, kind, name, command position and data.

    Immutable; a NamedTuple rather than a frozen dataclass because one is built per event written
    and per event read, and a frozen dataclass costs ~3x as much to build (one object.__setattr__
    per field)."""

    seq: int
    kind: str
    name: str
    data: Any
    at: float
    pos: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "name": self.name,
            "pos": self.pos,
            "at": self.at,
            "data": _json_safe(self.data),
        }


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _json_safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_safe(v) for v in value]
        return repr(value)


@dataclass(slots=True)
class RunRecord:
    """The mutable summary of a run, indexed for `status()`, `runs()` and recovery."""

    run_id: str
    workflow: str
    state: str = "pending"
    created_at: float = 0.0
    updated_at: float = 0.0
    progress: float = 0.0
    error: str | None = None
    parent: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.run_id,
            self.workflow,
            self.state,
            self.created_at,
            self.updated_at,
            self.progress,
            self.error,
            self.parent,
            self.meta,
        )

    @classmethod
    def from_tuple(cls, t: tuple[Any, ...]) -> RunRecord:
        return cls(*t)


class SignalResult:
    """Outcome codes of a conditional `put_signal` op."""

    NOT_FOUND = "not_found"


# op codes inside a WriteBatch (tuples keep batches cheap to build and to apply)
OP_APPEND = 1  # (op, run_id, seq, record_bytes)
OP_PUT_RUN = 2  # (op, run_id, record_bytes, finished)
OP_CREATE_RUN = 3  # (op, run_id, record_bytes, event_record_bytes, workflow)
OP_PUT_TIMER = 4  # (op, due, run_id, pos, record_bytes)
OP_DEL_TIMER = 5  # (op, due, run_id, pos)
OP_PUT_SIGNAL = 6  # (op, run_id, name, record_bytes)
OP_DEL_SIGNAL = 7  # (op, run_id, name, seq)
OP_KV_PUT = 8  # (op, ns, key, record_bytes) - the kv ops are numbered last: >= OP_KV_PUT
OP_KV_DEL = 9  # (op, ns, key)
OP_KV_PUT_NEW = 10  # (op, ns, key, record_bytes, value): put unless present; result: the value held after
OP_KV_DEL_IF = 11  # (op, ns, key, expected): delete if it holds `expected`; result: whether it did

# kv namespaces of the indexes the engine keeps besides runs, events, timers and signals
NS_UNIQUE = "unique"  # unique key -> its holder (a run id)
NS_TAGS = "tags"  # tag NUL run id -> None
NS_SCHEDULES = "schedules"  # schedule name -> its spec


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"invalid {what} {name!r}: a non-empty string without NUL")


def check_run_id(run_id: str) -> None:
    """InvalidRunId (a ValueError) unless `run_id` can name a run in every index."""
    if not isinstance(run_id, str) or not run_id or "\x00" in run_id:
        raise InvalidRunId(run_id)
    if run_id.isascii():
        if len(run_id) > 400:
            raise InvalidRunId(run_id)
        return
    try:  # a lone surrogate has no UTF-8: no key could hold it
        size = len(run_id.encode())
    except UnicodeEncodeError:
        raise InvalidRunId(run_id) from None
    if size > 400:
        raise InvalidRunId(run_id)


def undecodable_event(seq: int, exc: Exception) -> Event:
    """What a non-strict read shows for a record it could not decode."""
    return Event(seq, "undecodable", "", {"error": str(exc), "type": type(exc).__name__}, 0.0, -1)


class WriteBatch:
    """Writes that commit atomically; values are encoded here, so PayloadError comes before any write."""

    __slots__ = ("codec", "ops", "creates")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.ops: list[tuple[Any, ...]] = []
        self.creates = 0  # create_run ops among them (a commit reads ahead for those, and skips the scan without)

    def __len__(self) -> int:
        return len(self.ops)

    def truncate(self, n: int) -> None:
        """Drop every op after the first `n` (undo what one failed step of a batch's builder added)."""
        dropped = self.ops[n:]
        if dropped:
            del self.ops[n:]
            self.creates -= sum(1 for op in dropped if op[0] == OP_CREATE_RUN)

    def append(self, run_id: str, event: Event) -> int:
        fields = (event.kind, event.name, event.pos, event.at, event.data)
        try:
            rec = self.codec.encode(fields, "event")
        except PayloadError:  # again, to name the event (not formatted on every append)
            rec = self.codec.encode(fields, f"{event.kind} {event.name!r}")
        self.ops.append((OP_APPEND, run_id, event.seq, rec))
        return len(self.ops) - 1

    def append_encoded(self, run_id: str, seq: int, record: bytes) -> int:
        self.ops.append((OP_APPEND, run_id, seq, record))
        return len(self.ops) - 1

    def put_run(self, rec: RunRecord) -> int:
        self.ops.append((OP_PUT_RUN, rec.run_id, self.codec.encode(rec.as_tuple(), "run record"), rec.finished))
        return len(self.ops) - 1

    def create_run(self, rec: RunRecord, started: Event) -> int:
        """Create the run unless its id exists; result: None if created, else the existing RunRecord."""
        check_run_id(rec.run_id)
        ev = self.codec.encode(
            (started.kind, started.name, started.pos, started.at, started.data), "workflow arguments"
        )
        self.ops.append((OP_CREATE_RUN, rec.run_id, self.codec.encode(rec.as_tuple(), "run record"), ev, rec.workflow))
        self.creates += 1
        return len(self.ops) - 1

    def put_timer(self, due: float, run_id: str, pos: int, data: Any = None) -> int:
        self.ops.append((OP_PUT_TIMER, due, run_id, pos, self.codec.encode(data, "timer data")))
        return len(self.ops) - 1

    def del_timer(self, due: float, run_id: str, pos: int) -> int:
        self.ops.append((OP_DEL_TIMER, due, run_id, pos))
        return len(self.ops) - 1

    def put_signal(self, run_id: str, name: str, payload: Any) -> int:
        """Queue a signal in the run's inbox; result: its inbox seq, NOT_FOUND, or the finished state."""
        self.ops.append((OP_PUT_SIGNAL, run_id, name, self.codec.encode(payload, f"signal {name!r} payload")))
        return len(self.ops) - 1

    def del_signal(self, run_id: str, name: str, seq: int) -> int:
        self.ops.append((OP_DEL_SIGNAL, run_id, name, seq))
        return len(self.ops) - 1

    def kv_put(self, ns: str, key: str, value: Any) -> int:
        self.ops.append((OP_KV_PUT, ns, key, self.codec.encode(value, f"{ns} value")))
        return len(self.ops) - 1

    def kv_del(self, ns: str, key: str) -> int:
        self.ops.append((OP_KV_DEL, ns, key))
        return len(self.ops) - 1

    def kv_put_new(self, ns: str, key: str, value: Any) -> int:
        """Put unless the key is present (earlier in this batch included); result: the value it holds after."""
        self.ops.append((OP_KV_PUT_NEW, ns, key, self.codec.encode(value, f"{ns} value"), value))
        return len(self.ops) - 1

    def kv_del_if(self, ns: str, key: str, expected: Any) -> int:
        """Delete the key only if it holds `expected`; result: whether it did."""
        self.ops.append((OP_KV_DEL_IF, ns, key, expected))
        return len(self.ops) - 1

    # --- the unique-key, tag and schedule indexes -------------------------------------------
    def claim_unique(self, key: str, holder: str) -> int:
        """Take a unique key (e.g. a task's dedup key) for `holder`; result: the key's holder after -
        `holder` if it got the key or had it already, else whoever holds it."""
        _check_name(holder, "unique key holder")
        return self.kv_put_new(NS_UNIQUE, key, holder)

    def release_unique(self, key: str, holder: str) -> int:
        """Give a unique key back; only its holder can. Result: whether it was released."""
        return self.kv_del_if(NS_UNIQUE, key, holder)

    def add_tag(self, tag: str, run_id: str) -> int:
        _check_name(tag, "tag")
        return self.kv_put(NS_TAGS, tag + "\x00" + run_id, None)

    def remove_tag(self, tag: str, run_id: str) -> int:
        _check_name(tag, "tag")
        return self.kv_del(NS_TAGS, tag + "\x00" + run_id)

    def put_schedule(self, name: str, spec: Any) -> int:
        """Create or replace the schedule `name` (an interval or cron spec and what it starts)."""
        _check_name(name, "schedule name")
        return self.kv_put(NS_SCHEDULES, name, spec)

    def del_schedule(self, name: str) -> int:
        return self.kv_del(NS_SCHEDULES, name)



class Journal(abc.ABC):
    """Append-only per-run event logs plus the indexes the engine needs, with group commit.

    `commit`/`submit` make a batch durable (fsync'd, unless opened with sync=False) before they
    return or resolve. Concurrent submitters are merged into one transaction and one fsync.
    """

    codec: Codec

    def batch(self) -> WriteBatch:
        return WriteBatch(self.codec)

    @abc.abstractmethod
    def submit(self, batch: WriteBatch) -> Future[list[Any]]:
        """Queue `batch` for the next group commit; the future resolves (per-op results) once durable."""

    def commit(self, batch: WriteBatch, timeout: float | None = None) -> list[Any]:
        """Commit `batch` and wait until it is durable."""
        return self.submit(batch).result(timeout)

    def forget(self, run_ids: Iterable[str]) -> None:
        """A hint: these runs left memory, their next write is far off; drop what is cached about them.

        After a burst a per-run cache entry (its run id string) outlives the burst's transient
        objects and keeps their memory pages from being given back (issue 17). Always safe: a
        forgotten run's next write only reads what the cache would have told."""
        return None  # nothing cached here; LmdbJournal drops its append fast path's entries

    # --- reads ------------------------------------------------------------------------------
    @abc.abstractmethod
    def events(self, run_id: str, from_seq: int = 0, *, strict: bool = True) -> list[Event]:
        """The run's events with seq >= from_seq, in order.

        A record that cannot be decoded raises JournalCorrupt naming the run and seq; with
        `strict=False` it is returned as an `undecodable` event carrying that error instead (for
        tools that show a damaged run's journal as far as it can be read)."""

    @abc.abstractmethod
    def last_seq(self, run_id: str) -> int:
        """The highest event seq of the run, -1 if it has none."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    def get_runs(self, run_ids: Iterable[str]) -> list[RunRecord | None]:
        """The records of `run_ids`, in that order (None where there is none); backends batch the reads."""
        return [self.get_run(r) for r in run_ids]

    @abc.abstractmethod
    def iter_runs(self) -> Iterator[RunRecord]:
        """Every run record, in run id order."""

    @abc.abstractmethod
    def active_run_ids(self) -> list[str]:
        """Ids of runs not in a finished state (what recovery must look at)."""

    @abc.abstractmethod
    def timers(self, until: float, start: float = 0.0, limit: int | None = None) -> list[tuple[float, str, int, Any]]:
        """Timers with start <= due < until as (due, run_id, pos, data), by due time."""

    @abc.abstractmethod
    def timer_count(self) -> int: ...

    @abc.abstractmethod
    def signals(self, run_id: str, name: str | None = None) -> list[tuple[str, int, Any]]:
        """The run's undelivered signals as (name, seq, payload), per name in arrival order."""

    @abc.abstractmethod
    def kv_get(self, ns: str, key: str) -> Any: ...

    @abc.abstractmethod
    def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, Any]]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Flush pending commits and release the store."""

    def load_run(self, run_id: str) -> tuple[RunRecord | None, list[Event], list[tuple[str, int, Any]]]:
        """What waking a run needs: its record, and for an unfinished run its events and inbox."""
        rec = self.get_run(run_id)
        if rec is None or rec.finished:
            return rec, [], []
        return rec, self.events(run_id), self.signals(run_id)

    def load_runs(self, run_ids: list[str]) -> dict[str, tuple[RunRecord | None, list[Event], list[tuple[str, int, Any]]]]:
        """`load_run` for many runs at once (a crowd of timers firing); backends read them in one go."""
        return {run_id: self.load_run(run_id) for run_id in run_ids}

    def unique_holder(self, key: str) -> str | None:
        """Who holds the unique key (see `WriteBatch.claim_unique`), None if nobody."""
        holder = self.kv_get(NS_UNIQUE, key)
        return None if holder is None else str(holder)

    def tagged(self, tag: str) -> list[str]:
        """The run ids carrying `tag`, in run id order."""
        _check_name(tag, "tag")
        prefix = tag + "\x00"
        return [k[len(prefix) :] for k, _ in self.kv_scan(NS_TAGS, prefix)]

    def schedules(self) -> list[tuple[str, Any]]:
        """Every schedule as (name, spec), in name order."""
        return self.kv_scan(NS_SCHEDULES)

    def schedule(self, name: str) -> Any:
        return self.kv_get(NS_SCHEDULES, name)

    # --- paged reads (for views over many runs: a page costs its own size, not the journal's) ---
    def runs_page(
        self,
        after: str | None = None,
        limit: int = 100,
        *,
        prefix: str = "",
        reverse: bool = False,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` run records in run id order (descending with `reverse`) whose ids start with
        `prefix`, strictly past `after` in that order; `unfinished`: only runs of the active index.

        A keyset page: pass the last id of one page as `after` of the next. Backends seek to the
        position and read just the page. This default filters a full scan; both backends override it."""
        if limit <= 0:
            return []
        if unfinished:
            ids = [r for r in self.active_run_ids() if r.startswith(prefix)]
            pool: list[RunRecord] = [r for r in self.get_runs(ids) if r is not None]
        else:
            pool = [r for r in self.iter_runs() if r.run_id.startswith(prefix)]
        if reverse:
            pool.reverse()
            pool = [r for r in pool if after is None or r.run_id < after]
        else:
            pool = [r for r in pool if after is None or r.run_id > after]
        return pool[:limit]

    def run_counts(self) -> tuple[int, int]:
        """(all runs, unfinished runs); backends answer from index sizes without reading records."""
        return sum(1 for _ in self.iter_runs()), len(self.active_run_ids())

    @abc.abstractmethod
    def change_marker(self) -> int:
        """A number that changes whenever a commit lands - with LMDB, a commit by any process. Lets a
        view poll for changes with one cheap call instead of re-reading what it shows."""

    def runs(self, state: str | None = None, workflow: str | None = None) -> list[RunRecord]:
        """Run records by state and workflow, in run id order; an unfinished state reads only the
        active index's runs (not every run the journal ever held)."""
        if state is not None and state not in FINISHED_STATES:
            records: Iterable[RunRecord | None] = self.get_runs(self.active_run_ids())
        else:
            records = self.iter_runs()
        return [
            r
            for r in records
            if r is not None and (state is None or r.state == state) and (workflow is None or r.workflow == workflow)
        ]
