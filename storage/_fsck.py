"""fsck of an LMDB journal: every record's checksum, event sequences, and each index against the events.

The events are the truth; everything else in the environment is either a summary written beside them
in the same transaction (run records) or an index derivable from them:

- active:  exactly the runs whose record is not in a finished state
- timers:  for each unfinished run, the sleeps (`timer_started`) and signal-wait timeouts
           (`wait_started`) it journaled and has not resolved (`timer_fired`, `signal_received`,
           `wait_timeout`, or a `cancel_requested` after it), at the journaled due time
- signals: the undelivered inbox: entries of existing runs whose inbox seq no `signal_received` took;
           meta `signal_seq` at or above every inbox seq (a lower one would hand a seq out twice)
- kv/unique: each key held by an existing run of the key's task
- kv/tags: every tag a task execution was started with, and no tag of a run that does not exist
- kv/schedules: well-formed specs (not derivable: checked, never rebuilt)

A check reads one LMDB read transaction, so it sees one committed state and can run beside a live
engine. `repair` rewrites only derivable index entries (and `signal_seq`) in one write transaction;
it never writes, deletes or rewrites an event, and it refuses while an engine holds the directory.
Findings are "damage" (records that fail their checksum, gaps, runs whose events contradict their
record: a person must look) or "index" (an index disagrees with the events: `repair` fixes it).
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import lmdb

from actorflow.errors import JournalCorrupt, JournalVersionError, StorageError

from ._codec import Codec
from ._fsck_report import _SEVERITY, DAMAGE, INDEX, Finding, FsckReport
from ._journal import NS_SCHEDULES, NS_TAGS, NS_UNIQUE, RunRecord
from ._keys import SEP, pack_seq, parse_timer_key, timer_key, unpack_seq
from ._lmdb import _META_SIGNAL_SEQ, LmdbJournal

__all__ = ["Finding", "FsckReport", "fsck", "DAMAGE", "INDEX"]

_TERMINAL = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}
_TASK_PREFIX = "task:"
_MAX_LISTED = 10_000  # findings kept in a report (counts go on past it)

Repair = Callable[["_Dbs", lmdb.Transaction], None]


@dataclass(frozen=True)
class _Dbs:
    events: Any
    runs: Any
    active: Any
    timers: Any
    signals: Any
    kv: Any
    meta: Any


class _Checker:
    def __init__(self, journal: LmdbJournal, txn: lmdb.Transaction, report: FsckReport) -> None:
        self.j = journal
        self.codec: Codec = journal.codec
        self.txn = txn
        self.report = report
        self.db = _Dbs(journal._events, journal._runs, journal._active, journal._timers, journal._signals,
                       journal._kv, journal._meta)
        self.repairs: list[Repair] = []
        self.records: dict[str, RunRecord | None] = {}  # run id -> record (None: undecodable)
        # runs with damage of their own (record or events): what their events imply is not sure, so
        # no index entry of theirs is called wrong or rewritten - the damage finding says why
        self.unsure: set[str] = set()
        self.unfinished: set[str] = set()
        self.expected_timers: dict[bytes, tuple[str, float, int, str]] = {}
        self.delivered: set[tuple[str, int]] = set()  # (run id, inbox seq) taken by signal_received
        self.task_tags: dict[str, list[str]] = {}  # run id -> tags it was started with
        self.children: list[tuple[str, str, int]] = []  # (parent, child, seq)

    def add(self, kind: str, where: str, message: str, run_id: str | None = None, repair: Repair | None = None) -> None:
        r = self.report
        r.by_kind[kind] = r.by_kind.get(kind, 0) + 1
        if len(r.findings) < _MAX_LISTED:
            r.findings.append(Finding(kind, _SEVERITY[kind], where, message, run_id, repair is not None))
        else:
            r.truncated = True
        if repair is not None:
            self.repairs.append(repair)

    def decode(self, raw: bytes, where: str, run_id: str | None = None) -> tuple[bool, Any]:
        try:
            return True, self.codec.decode(raw, where)
        except (JournalCorrupt, JournalVersionError) as exc:
            self.add("checksum", where, str(exc), run_id)
            if run_id is not None:
                self.unsure.add(run_id)
            return False, None

    def cursor(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        cur = self.txn.cursor(db=db)
        if cur.first():
            for k, v in cur.iternext():
                yield cast(bytes, k), cast(bytes, v)

    # --- runs and their events ------------------------------------------------------------------
    def check_runs(self) -> None:
        n = 0
        for k, v in self.cursor(self.db.runs):
            n += 1
            run_id = k.decode(errors="replace")
            ok, t = self.decode(v, f"run record {run_id!r}", run_id)
            rec = None
            if ok:
                try:
                    rec = RunRecord.from_tuple(t)
                except TypeError:
                    self.add("checksum", f"run record {run_id!r}", "not a run record tuple", run_id)
            self.records[run_id] = rec
            if rec is not None and not rec.finished:
                self.unfinished.add(run_id)
        self.report.counts["runs"] = n
        active = 0
        for k, _ in self.cursor(self.db.active):
            active += 1
            run_id = k.decode(errors="replace")
            if run_id not in self.records:
                self.add("active_stale", f"active {run_id!r}", "active index names a run that does not exist", run_id,
                         _delete(self.db.active, k))
            elif self.records[run_id] is not None and run_id not in self.unfinished:
                rec = cast(RunRecord, self.records[run_id])
                self.add("active_stale", f"active {run_id!r}", f"active index holds a {rec.state} run", run_id,
                         _delete(self.db.active, k))
        self.report.counts["active"] = active
        for run_id in sorted(self.unfinished):
            if self.txn.get(run_id.encode(), db=self.db.active) is None:
                self.add("active_missing", f"active {run_id!r}",
                         f"{cast(RunRecord, self.records[run_id]).state} run missing from the active index "
                         "(recovery would not resume it)", run_id, _put(self.db.active, run_id.encode(), b""))

    def check_events(self) -> None:
        seen: set[str] = set()
        n = 0
        group: list[tuple[int, bytes]] = []
        current: bytes | None = None
        for k, v in self.cursor(self.db.events):
            n += 1
            cut = k.rfind(SEP, 0, len(k) - 8)
            if cut < 0 or len(k) - cut != 9:
                self.add("checksum", f"event key {k!r}", "malformed event key")
                continue
            prefix = k[: cut + 1]
            if prefix != current:
                if current is not None:
                    self.check_run_events(current[:-1].decode(errors="replace"), group)
                    seen.add(current[:-1].decode(errors="replace"))
                current, group = prefix, []
            group.append((unpack_seq(k[cut + 1 :]), v))
        if current is not None:
            self.check_run_events(current[:-1].decode(errors="replace"), group)
            seen.add(current[:-1].decode(errors="replace"))
        self.report.counts["events"] = n
        for run_id in sorted(set(self.records) - seen):
            self.add("no_events", f"run {run_id!r}", "run record without any event", run_id)

    def check_run_events(self, run_id: str, group: list[tuple[int, bytes]]) -> None:
        if run_id not in self.records:
            self.add("orphan_events", f"run {run_id!r}", f"{len(group)} event(s) of a run that has no run record", run_id)
            return
        rec = self.records[run_id]
        expect = 0
        end: tuple[int, str] | None = None
        started: dict[int, tuple[str, float, str]] = {}  # pos -> (tag, due, name) of open durable timers
        for seq, raw in group:
            if seq != expect:
                self.add("seq_gap", f"run {run_id!r} seq {expect}",
                         f"events jump from seq {expect - 1} to {seq}: seq {expect}..{seq - 1} missing", run_id)
                self.unsure.add(run_id)
            expect = seq + 1
            where = f"run {run_id!r} seq {seq}"
            ok, ev = self.decode(raw, where, run_id)
            if not ok:
                continue
            try:
                kind, name, pos, _at, data = ev
            except (TypeError, ValueError):
                self.add("checksum", where, "not an event record", run_id)
                self.unsure.add(run_id)
                continue
            if end is not None:
                self.add("after_end", where, f"{kind} after the run's {end[1]} at seq {end[0]}", run_id)
            if seq == 0:
                if kind != "run_started":
                    self.add("no_run_started", where, f"seq 0 is {kind!r}, not run_started", run_id)
                elif name.startswith(_TASK_PREFIX):
                    self._task_started(run_id, data)
            if kind in _TERMINAL:
                end = (seq, kind)
            elif kind == "timer_started" and _is_due(data):
                started[pos] = ("sleep", float(data), name)
            elif kind == "wait_started" and _is_due(data):
                started[pos] = ("wait", float(data), name)
            elif kind in ("timer_fired", "wait_timeout"):
                started.pop(pos, None)
            elif kind == "signal_received":
                started.pop(pos, None)
                if isinstance(data, dict) and isinstance(data.get("seq"), int):
                    self.delivered.add((run_id, data["seq"]))
            elif kind == "cancel_requested":
                started.clear()  # cancelling deletes every pending timer of the run
            elif kind == "child_started" and isinstance(data, dict) and isinstance(data.get("run_id"), str):
                self.children.append((run_id, data["run_id"], seq))
        if rec is None:  # undecodable record: the events alone say whether the run is still going
            if end is None:
                for pos, (tag, due, _name) in started.items():
                    self.expected_timers[timer_key(due, run_id, pos)] = (run_id, due, pos, tag)
            return
        if rec.finished and end is None:
            self.add("state_mismatch", f"run record {run_id!r}",
                     f"record says {rec.state} but the events hold no run_completed/failed/cancelled", run_id)
            self.unsure.add(run_id)
        elif end is not None and _TERMINAL[end[1]] != rec.state:
            self.add("state_mismatch", f"run record {run_id!r}",
                     f"record says {rec.state} but the events end with {end[1]} at seq {end[0]}", run_id)
            self.unsure.add(run_id)
        if run_id in self.unfinished or (run_id in self.unsure and end is None):
            for pos, (tag, due, _name) in started.items():
                self.expected_timers[timer_key(due, run_id, pos)] = (run_id, due, pos, tag)

    def _task_started(self, run_id: str, data: Any) -> None:
        try:
            opts = data["args"][1]
            tags = opts.get("tags", [])
        except (TypeError, KeyError, IndexError, AttributeError):
            return
        if isinstance(tags, list):
            self.task_tags[run_id] = [t for t in tags if isinstance(t, str) and t and "\x00" not in t]

    def check_children(self) -> None:
        for parent, child, seq in self.children:
            if child not in self.records:
                self.add("child_missing", f"run {parent!r} seq {seq}", f"child run {child!r} does not exist", parent)

    # --- timers, inbox ---------------------------------------------------------------------------
    def check_timers(self) -> None:
        n = 0
        found: set[bytes] = set()
        for k, v in self.cursor(self.db.timers):
            n += 1
            try:
                due, run_id, pos = parse_timer_key(k)
            except (UnicodeDecodeError, ValueError, IndexError) as exc:
                self.add("checksum", f"timer key {k!r}", f"malformed timer key: {exc}")
                continue
            where = f"timer {run_id!r} pos {pos}"
            self.decode(v, where, run_id)
            if k in self.expected_timers:
                found.add(k)
                continue
            if run_id in self.unsure:
                continue
            rec = self.records.get(run_id, None)
            if run_id not in self.records:
                why = "of a run that does not exist"
            elif rec is not None and rec.finished:
                why = f"of a {rec.state} run"
            else:
                why = "that no open sleep or wait of the run's events asks for"
            self.add("timer_stale", where, f"timer due {due!r} {why} (it would fire for nothing at every open)",
                     run_id, _delete(self.db.timers, k))
        self.report.counts["timers"] = n
        codec = self.codec
        for k, (run_id, due, pos, tag) in self.expected_timers.items():
            if k not in found and run_id not in self.unsure:
                self.add("timer_missing", f"timer {run_id!r} pos {pos}",
                         f"the run's {tag} at pos {pos} (due {due!r}) has no timer: it would never fire", run_id,
                         _put(self.db.timers, k, codec.encode(tag, "timer data")))

    def check_signals(self) -> None:
        n = 0
        top = 0
        for k, v in self.cursor(self.db.signals):
            n += 1
            parts = k[:-9].split(SEP, 1) if len(k) > 9 and k[-9:-8] == SEP else []
            if len(parts) != 2:
                self.add("checksum", f"signal key {k!r}", "malformed inbox key")
                continue
            run_id, name = parts[0].decode(errors="replace"), parts[1].decode(errors="replace")
            seq = unpack_seq(k[-8:])
            top = max(top, seq)
            where = f"signal {name!r} #{seq} of run {run_id!r}"
            self.decode(v, where, run_id)
            if run_id not in self.records:
                self.add("inbox_orphan", where, "inbox entry of a run that does not exist", run_id,
                         _delete(self.db.signals, k))
            elif run_id in self.unsure:
                continue
            elif (run_id, seq) in self.delivered:
                self.add("inbox_delivered", where,
                         "inbox entry the run already received (signal_received): it would be delivered twice "
                         "to a later wait", run_id, _delete(self.db.signals, k))
        self.report.counts["signals"] = n
        raw = cast("bytes | None", self.txn.get(_META_SIGNAL_SEQ, db=self.db.meta))
        have = 0 if raw is None or len(raw) != 8 else unpack_seq(raw)
        top = max([top, *(seq for _, seq in self.delivered)])
        if have < top:
            self.add("signal_seq", "meta signal_seq",
                     f"signal_seq is {have} but inbox seq {top} was handed out: the next signal would reuse a seq",
                     None, _put(self.db.meta, _META_SIGNAL_SEQ, pack_seq(top)))

    # --- kv indexes ------------------------------------------------------------------------------
    def check_kv(self) -> None:
        n = 0
        tags_seen: set[tuple[str, str]] = set()
        for k, v in self.cursor(self.db.kv):
            n += 1
            ns_b, sep, key_b = k.partition(SEP)
            ns, key = ns_b.decode(errors="replace"), key_b.decode(errors="replace")
            ok, value = self.decode(v, f"{ns}/{key!r}")
            if not sep or not ok:
                continue
            if ns == NS_UNIQUE:
                self._unique(k, key, value)
            elif ns == NS_TAGS:
                tag, _, run_id = key.partition("\x00")
                tags_seen.add((tag, run_id))
                if run_id not in self.records:
                    self.add("tag_dangling", f"tags/{tag!r}", f"tag of run {run_id!r}, which does not exist",
                             run_id, _delete(self.db.kv, k))
            elif ns == NS_SCHEDULES:
                why = _schedule_problem(value)
                if why:
                    self.add("schedule_bad", f"schedules/{key!r}", why)
        self.report.counts["kv"] = n
        for run_id, tags in self.task_tags.items():
            for tag in tags:
                if (tag, run_id) not in tags_seen:
                    kk = (NS_TAGS + "\x00" + tag + "\x00" + run_id).encode()
                    self.add("tag_missing", f"tags/{tag!r}", f"task run {run_id!r} was started with tag {tag!r} "
                             "but the tag index does not list it", run_id,
                             _put(self.db.kv, kk, self.codec.encode(None, "tag")))

    def _unique(self, k: bytes, key: str, holder: Any) -> None:
        task, _, ukey = key.partition("\x00")
        where = f"unique/{task}/{ukey!r}"
        if not isinstance(holder, str) or holder not in self.records:
            self.add("unique_dangling", where, f"held by {holder!r}, which is not a run: the key could never "
                     "be taken again while it stays", holder if isinstance(holder, str) else None,
                     _delete(self.db.kv, k))
            return
        rec = self.records[holder]
        if rec is not None and rec.workflow != _TASK_PREFIX + task:
            self.add("unique_dangling", where, f"held by run {holder!r} of workflow {rec.workflow!r}, not of task "
                     f"{task!r}", holder, _delete(self.db.kv, k))

    def run(self) -> None:
        self.check_runs()
        self.check_events()
        self.check_children()
        self.check_timers()
        self.check_signals()
        self.check_kv()


def _is_due(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _schedule_problem(spec: Any) -> str:
    if not isinstance(spec, dict):
        return f"spec is a {type(spec).__name__}, not a dict"
    missing = [k for k in ("task", "every", "cron", "anchor", "last_slot", "input") if k not in spec]
    if missing:
        return f"spec lacks {', '.join(missing)}"
    if (spec["every"] is None) == (spec["cron"] is None):
        return "spec must have exactly one of every and cron"
    if spec["every"] is not None and (not _is_due(spec["every"]) or spec["every"] <= 0):
        return f"interval {spec['every']!r} is not a positive number"
    if not _is_due(spec["anchor"]) or (spec["last_slot"] is not None and not _is_due(spec["last_slot"])):
        return "anchor or last_slot is not a time"
    return ""


def _delete(db: Any, key: bytes) -> Repair:
    def fix(dbs: _Dbs, txn: lmdb.Transaction) -> None:
        txn.delete(key, db=db)

    return fix


def _put(db: Any, key: bytes, value: bytes) -> Repair:
    def fix(dbs: _Dbs, txn: lmdb.Transaction) -> None:
        txn.put(key, value, db=db)

    return fix


def fsck(path: str | os.PathLike[str], *, repair: bool = False) -> FsckReport:
    """Check the LMDB journal at `path`; with `repair`, rewrite the index entries found inconsistent
    (never an event) and check again. StorageError if `path` holds no journal, or (repair) an engine
    holds it."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise StorageError(f"no LMDB journal at {path!r} (no data.mdb)", path=path)
    lock_fd = _lock(path) if repair else None
    try:
        with LmdbJournal(path) as journal:
            report = _check(journal, path)
            if repair and report.index:
                fixed = _repair(journal, path)
                report = _check(journal, path)
                report.repaired = fixed
            return report
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _check(journal: LmdbJournal, path: str) -> FsckReport:
    report = FsckReport(path)
    txn = journal._read_txn()
    try:
        _Checker(journal, txn, report).run()
    finally:
        journal._end_read(txn)
    return report


def _repair(journal: LmdbJournal, path: str) -> int:
    """Collect the repairs in one read and apply them in one write transaction."""
    report = FsckReport(path)
    txn = journal._read_txn()
    try:
        checker = _Checker(journal, txn, report)
        checker.run()
    finally:
        journal._end_read(txn)
    if not checker.repairs:
        return 0
    wtxn = journal._env.begin(write=True)
    try:
        for fix in checker.repairs:
            fix(checker.db, wtxn)
        wtxn.commit()
    except BaseException:
        wtxn.abort()
        raise
    journal._env.sync(True)
    return len(checker.repairs)


def _lock(path: str) -> int:
    """Hold the engine lock while repairing: an engine writing beside the repair would race it."""
    fd = os.open(os.path.join(path, "engine.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StorageError(
            f"an engine (pid {holder}) holds {path}: stop it before `fsck --repair` (a check alone may run beside it)",
            path=path,
            pid=holder,
        ) from None
    return fd
