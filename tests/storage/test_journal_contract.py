"""One contract for every journal backend: MemoryJournal is the reference, LmdbJournal must match it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from actorflow.errors import StorageError
from storage import Event, Journal, RunRecord, SignalResult


def ev(seq: int, data: Any = None, kind: str = "step", name: str = "s", pos: int = -1, at: float = 1.5) -> Event:
    return Event(seq, kind, name, data, at, pos)


def append(j: Journal, run_id: str, *seqs: int, data: Callable[[int], Any] = lambda s: {"v": s}) -> None:
    b = j.batch()
    for s in seqs:
        b.append(run_id, ev(s, data(s)))
    j.commit(b)


def create(j: Journal, run_id: str, workflow: str = "wf", args: Any = ("a",), state: str = "pending") -> Any:
    b = j.batch()
    b.create_run(RunRecord(run_id, workflow, state=state, created_at=1.0), Event(0, "started", workflow, args, 1.0))
    return j.commit(b)[0]


def put_run(j: Journal, run_id: str, state: str, workflow: str = "wf") -> None:
    b = j.batch()
    b.put_run(RunRecord(run_id, workflow, state=state))
    j.commit(b)


# --- events -------------------------------------------------------------------------------------
def test_append_and_read_in_order(journal: Journal) -> None:
    append(journal, "r1", 0, 1, 2)
    append(journal, "r2", 0)
    append(journal, "r1", 3, 4)
    evs = journal.events("r1")
    assert [e.seq for e in evs] == [0, 1, 2, 3, 4]
    assert [e.data for e in evs] == [{"v": s} for s in range(5)]
    assert evs[0] == Event(0, "step", "s", {"v": 0}, 1.5, -1)
    assert [e.seq for e in journal.events("r1", from_seq=3)] == [3, 4]
    assert journal.events("r1", from_seq=5) == []
    assert [e.seq for e in journal.events("r2")] == [0]
    assert journal.events("nope") == []


def test_run_id_prefixes_do_not_mix(journal: Journal) -> None:
    for rid in ("a", "ab", "a b", "b", "é", "a/0"):
        append(journal, rid, 0, 1, data=lambda s, rid=rid: (rid, s))
    for rid in ("a", "ab", "a b", "b", "é", "a/0"):
        assert [e.data for e in journal.events(rid)] == [(rid, 0), (rid, 1)]
        assert journal.last_seq(rid) == 1
    assert journal.last_seq("") == -1


def test_last_seq(journal: Journal) -> None:
    assert journal.last_seq("r") == -1
    append(journal, "r", 0)
    assert journal.last_seq("r") == 0
    append(journal, "r", 1, 2, 3)
    append(journal, "q", 0, 1, 2, 3, 4, 5)  # a later run id does not leak into r
    append(journal, "s", 0)
    assert journal.last_seq("r") == 3
    assert journal.last_seq("q") == 5
    assert journal.last_seq("s") == 0
    assert journal.last_seq("t") == -1


@pytest.mark.parametrize("bad_seq", [0, 2, 5])
def test_out_of_order_append_fails_the_batch(journal: Journal, bad_seq: int) -> None:
    append(journal, "r", 0)
    b = journal.batch()
    b.append("r", ev(bad_seq))
    with pytest.raises(StorageError, match="append of seq"):
        journal.commit(b)
    assert [e.seq for e in journal.events("r")] == [0]
    append(journal, "r", 1)  # the journal goes on
    assert journal.last_seq("r") == 1


def test_batch_is_atomic(journal: Journal) -> None:
    create(journal, "r")
    b = journal.batch()
    b.append("r", ev(1, "ok"))
    b.kv_put("ns", "k", "written?")
    b.put_timer(10.0, "r", 1, "t")
    b.put_signal("r", "go", 1)
    b.put_run(RunRecord("r", "wf", state="completed"))
    b.append("r", ev(3, "gap"))  # invalid: next is 2
    with pytest.raises(StorageError):
        journal.commit(b)
    assert [e.seq for e in journal.events("r")] == [0]
    assert journal.kv_get("ns", "k") is None
    assert journal.timers(100.0) == []
    assert journal.signals("r") == []
    assert journal.get_run("r").state == "pending"  # type: ignore[union-attr]
    assert journal.active_run_ids() == ["r"]
    # the signal seq counter did not move either: the next signal is number 1 on both backends
    b = journal.batch()
    b.put_signal("r", "go", 1)
    assert journal.commit(b) == [1]


def test_results_per_op(journal: Journal) -> None:
    b = journal.batch()
    b.create_run(RunRecord("r", "wf"), Event(0, "started", "wf", None, 1.0))
    b.append("r", ev(1))
    b.put_signal("r", "go", "x")
    b.kv_put("n", "k", 1)
    b.put_signal("ghost", "go", "x")
    assert journal.commit(b) == [None, None, 1, None, SignalResult.NOT_FOUND]


def test_empty_batch(journal: Journal) -> None:
    assert journal.commit(journal.batch()) == []


# --- runs ---------------------------------------------------------------------------------------
def test_create_run_conflict_returns_existing(journal: Journal) -> None:
    assert create(journal, "r", "wf", args=("first",)) is None
    existing = create(journal, "r", "other", args=("second",))
    assert isinstance(existing, RunRecord)
    assert (existing.run_id, existing.workflow, existing.created_at) == ("r", "wf", 1.0)
    evs = journal.events("r")
    assert len(evs) == 1 and evs[0].data == ("first",) and evs[0].kind == "started"
    assert journal.get_run("r").workflow == "wf"  # type: ignore[union-attr]


def test_create_run_twice_in_one_batch(journal: Journal) -> None:
    b = journal.batch()
    b.create_run(RunRecord("r", "wf"), Event(0, "started", "wf", 1, 1.0))
    b.create_run(RunRecord("r", "wf2"), Event(0, "started", "wf2", 2, 1.0))
    first, second = journal.commit(b)
    assert first is None and second.workflow == "wf"
    assert [e.data for e in journal.events("r")] == [1]


def test_create_run_rejects_bad_ids(journal: Journal) -> None:
    b = journal.batch()
    for bad in ("", "a\x00b", "x" * 401):
        with pytest.raises(ValueError):
            b.create_run(RunRecord(bad, "wf"), Event(0, "started", "wf", None, 1.0))
    assert len(b) == 0


def test_put_run_and_active_index(journal: Journal) -> None:
    assert journal.active_run_ids() == []
    create(journal, "b")
    create(journal, "a")
    put_run(journal, "c", "running")
    assert journal.active_run_ids() == ["a", "b", "c"]
    put_run(journal, "b", "completed")
    put_run(journal, "c", "failed")
    assert journal.active_run_ids() == ["a"]
    put_run(journal, "c", "running")  # a state change back (e.g. a repaired run) re-activates
    assert journal.active_run_ids() == ["a", "c"]
    assert [r.run_id for r in journal.iter_runs()] == ["a", "b", "c"]
    assert [r.state for r in journal.iter_runs()] == ["pending", "completed", "running"]
    assert [r.run_id for r in journal.runs(state="completed")] == ["b"]
    assert [r.run_id for r in journal.runs(workflow="wf")] == ["a", "b", "c"]
    assert journal.get_run("zzz") is None


def test_run_record_round_trip(journal: Journal) -> None:
    rec = RunRecord("r", "wf", "sleeping", 1.25, 2.5, 0.75, "boom", "parent", {"k": [1, 2]})
    b = journal.batch()
    b.put_run(rec)
    journal.commit(b)
    assert journal.get_run("r") == rec


def test_many_runs_scan(journal: Journal) -> None:
    b = journal.batch()
    for i in range(2500):  # more than one LMDB scan chunk
        b.put_run(RunRecord(f"run-{i:05d}", "wf", state="running" if i % 3 else "completed"))
    journal.commit(b)
    ids = [r.run_id for r in journal.iter_runs()]
    assert ids == [f"run-{i:05d}" for i in range(2500)]
    assert journal.active_run_ids() == [f"run-{i:05d}" for i in range(2500) if i % 3]


def test_runs_in_an_unfinished_state_read_only_the_active_index(journal: Journal, monkeypatch: Any) -> None:
    b = journal.batch()
    for i in range(300):
        state = ("completed", "failed", "sleeping", "running", "cancelled", "waiting")[i % 6]
        b.put_run(RunRecord(f"run-{i:03d}", "wf-a" if i % 4 else "wf-b", state=state))
    journal.commit(b)
    everything = list(journal.iter_runs())
    expected = {
        (st, wf): [r.run_id for r in everything if r.state == st and (wf is None or r.workflow == wf)]
        for st in ("sleeping", "running", "waiting", "pending")
        for wf in (None, "wf-a", "wf-b")
    }
    monkeypatch.setattr(journal, "iter_runs", lambda: pytest.fail("an unfinished state scanned every run"))
    for (st, wf), ids in expected.items():
        assert [r.run_id for r in journal.runs(state=st, workflow=wf)] == ids
    assert len(expected[("sleeping", None)]) == 50


def test_get_runs_keeps_order_and_gives_none_for_unknown_ids(journal: Journal) -> None:
    b = journal.batch()
    for i in range(1500):  # more than one read chunk
        b.put_run(RunRecord(f"r-{i:04d}", "wf", state="running", created_at=float(i)))
    journal.commit(b)
    ids = [f"r-{i:04d}" for i in range(1499, -1, -3)] + ["nope", "r-0001", "r-0001"]
    got = journal.get_runs(ids)
    assert [r.run_id if r else None for r in got] == [None if i == "nope" else i for i in ids]
    assert [r.created_at for r in got[:2] if r] == [1499.0, 1496.0]
    assert journal.get_runs([]) == []


# --- timers -------------------------------------------------------------------------------------
def _timer(j: Journal, due: float, run_id: str, pos: int, data: Any = None, delete: bool = False) -> None:
    b = j.batch()
    (b.del_timer(due, run_id, pos) if delete else b.put_timer(due, run_id, pos, data))
    j.commit(b)


def test_timers_range_order_limit_delete(journal: Journal) -> None:
    dues = [(1700000000.123456, "r2", 3), (5.0, "r1", 1), (5.0, "r0", 2), (5.0, "r0", 1), (0.0, "r", 0), (7.5, "r", -1)]
    for due, rid, pos in dues:
        _timer(journal, due, rid, pos, {"due": due})
    assert journal.timer_count() == 6
    everything = journal.timers(float("inf"))
    assert [(d, r, p) for d, r, p, _ in everything] == sorted(dues)
    assert all(data == {"due": d} for d, _, _, data in everything)
    assert everything[-1][0] == 1700000000.123456  # exact float back
    assert [(d, r, p) for d, r, p, _ in journal.timers(5.0)] == [(0.0, "r", 0)]  # until is exclusive
    assert [(d, r, p) for d, r, p, _ in journal.timers(7.5, start=5.0)] == [(5.0, "r0", 1), (5.0, "r0", 2), (5.0, "r1", 1)]
    assert [(r, p) for _, r, p, _ in journal.timers(100.0, limit=2)] == [("r", 0), ("r0", 1)]
    assert journal.timers(100.0, limit=0) == []
    assert journal.timers(5.0, start=5.0) == []
    _timer(journal, 5.0, "r0", 1, delete=True)
    _timer(journal, 5.0, "r0", 99, delete=True)  # deleting what is not there is fine
    assert [(r, p) for _, r, p, _ in journal.timers(6.0)] == [("r", 0), ("r0", 2), ("r1", 1)]
    assert journal.timer_count() == 5
    _timer(journal, 5.0, "r0", 2, "replaced")  # same key: replaced, not doubled
    assert journal.timer_count() == 5
    assert journal.timers(6.0, start=5.0)[0][3] == "replaced"


def test_timer_dues_sort_numerically(journal: Journal) -> None:
    dues = [0.0, 1e-9, 0.5, 1.0, 2.0, 10.0, 255.0, 256.0, 1e6, 1.7e9, 4.1e9, 1e300]
    for i, d in enumerate(reversed(dues)):
        _timer(journal, d, f"r{i}", 0)
    assert [d for d, *_ in journal.timers(float("inf"))] == dues


# --- signals ------------------------------------------------------------------------------------
def _signal(j: Journal, run_id: str, name: str, payload: Any) -> Any:
    b = j.batch()
    b.put_signal(run_id, name, payload)
    return j.commit(b)[0]


def test_signals_order_delete_not_found_finished(journal: Journal) -> None:
    assert _signal(journal, "ghost", "go", 1) == SignalResult.NOT_FOUND
    create(journal, "r")
    create(journal, "q")
    s1 = _signal(journal, "r", "go", "first")
    s2 = _signal(journal, "q", "go", "other run")
    s3 = _signal(journal, "r", "go", "second")
    s4 = _signal(journal, "r", "alpha", {"x": 1})
    s5 = _signal(journal, "r", "go", "third")
    assert s1 < s2 < s3 < s4 < s5  # one global, increasing inbox seq
    assert journal.signals("r", "go") == [("go", s1, "first"), ("go", s3, "second"), ("go", s5, "third")]
    assert journal.signals("r") == [("alpha", s4, {"x": 1}), ("go", s1, "first"), ("go", s3, "second"), ("go", s5, "third")]
    assert journal.signals("q") == [("go", s2, "other run")]
    assert journal.signals("r", "g") == []  # a name prefix is not the name
    b = journal.batch()
    b.del_signal("r", "go", s3)
    b.del_signal("r", "go", 12345)
    journal.commit(b)
    assert [p for _, _, p in journal.signals("r", "go")] == ["first", "third"]
    put_run(journal, "r", "completed")
    assert _signal(journal, "r", "go", "late") == "completed"
    assert [p for _, _, p in journal.signals("r", "go")] == ["first", "third"]
    put_run(journal, "q", "cancelled")
    assert _signal(journal, "q", "go", "late") == "cancelled"
    # the counter never goes back, even after refusals
    create(journal, "z")
    assert _signal(journal, "z", "go", 0) == s5 + 1


def test_signal_names_with_nul_are_refused(journal: Journal) -> None:
    create(journal, "r")
    b = journal.batch()
    b.put_signal("r", "a\x00b", 1)
    with pytest.raises(StorageError, match="NUL"):
        journal.commit(b)


# --- kv -----------------------------------------------------------------------------------------
def test_kv(journal: Journal) -> None:
    assert journal.kv_get("ns", "k") is None
    b = journal.batch()
    b.kv_put("ns", "k", {"a": 1})
    b.kv_put("ns", "k2", [1])
    b.kv_put("ns", "j", "jay")
    b.kv_put("nsx", "k", "other namespace")
    b.kv_put("n", "sk", "prefix namespace")
    journal.commit(b)
    assert journal.kv_get("ns", "k") == {"a": 1}
    assert journal.kv_scan("ns") == [("j", "jay"), ("k", {"a": 1}), ("k2", [1])]
    assert journal.kv_scan("ns", "k") == [("k", {"a": 1}), ("k2", [1])]
    assert journal.kv_scan("nsx") == [("k", "other namespace")]
    assert journal.kv_scan("n") == [("sk", "prefix namespace")]
    assert journal.kv_scan("none") == []
    b = journal.batch()
    b.kv_put("ns", "k", "new")
    b.kv_del("ns", "k2")
    b.kv_del("ns", "absent")
    journal.commit(b)
    assert journal.kv_scan("ns") == [("j", "jay"), ("k", "new")]


# --- concurrency and durability -----------------------------------------------------------------
def test_concurrent_submit_64_threads(make_journal: Callable[..., Journal]) -> None:
    j = make_journal()
    n_threads, per_thread = 64, 12
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def writer(i: int) -> None:
        run_id = f"run-{i}"
        try:
            start.wait()
            for s in range(per_thread):
                b = j.batch()
                b.append(run_id, ev(s, (i, s)))
                if i % 2:
                    j.commit(b)
                else:  # half the writers use futures
                    assert j.submit(b).result(timeout=60) == [None]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    j = make_journal()  # reopen (LMDB): all of it was durable
    for i in range(n_threads):
        assert [(e.seq, e.data) for e in j.events(f"run-{i}")] == [(s, (i, s)) for s in range(per_thread)]


def test_concurrent_appends_to_one_run_keep_seq_dense(make_journal: Callable[..., Journal]) -> None:
    """Racing writers of one run: exactly one append per seq wins, the others fail cleanly."""
    j = make_journal()
    wins: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def racer(i: int) -> None:
        start.wait()
        for _ in range(20):
            seq = j.last_seq("shared") + 1
            b = j.batch()
            b.append("shared", ev(seq, i))
            try:
                j.commit(b)
            except StorageError:
                continue
            with lock:
                wins.append((seq, i))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    evs = j.events("shared")
    assert [e.seq for e in evs] == list(range(len(evs)))
    assert sorted(wins) == [(e.seq, e.data) for e in evs]


def test_reopen_sees_everything(make_journal: Callable[..., Journal]) -> None:
    j = make_journal()
    create(j, "r")
    append(j, "r", 1, 2)
    put_run(j, "done", "completed")
    _timer(j, 3.0, "r", 2, "t")
    s = _signal(j, "r", "go", "payload")
    b = j.batch()
    b.kv_put("ns", "k", "v")
    j.commit(b)
    j = make_journal()
    assert [e.seq for e in j.events("r")] == [0, 1, 2]
    assert j.last_seq("r") == 2
    assert j.active_run_ids() == ["r"]
    assert [r.run_id for r in j.iter_runs()] == ["done", "r"]
    assert j.timers(10.0) == [(3.0, "r", 2, "t")]
    assert j.signals("r") == [("go", s, "payload")]
    assert j.kv_get("ns", "k") == "v"
    assert _signal(j, "r", "go", 2) == s + 1  # the inbox seq survives a reopen


def test_close_drains_pending_commits(make_journal: Callable[..., Journal]) -> None:
    j = make_journal()
    futures = []
    for s in range(200):
        b = j.batch()
        b.append("r", ev(s))
        futures.append(j.submit(b))
    j.close()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [[None]] * 200
    j = make_journal()
    assert j.last_seq("r") == 199


def test_closed_journal_refuses(make_journal: Callable[..., Journal]) -> None:
    j = make_journal()
    j.close()
    j.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        j.commit(j.batch())
    if make_journal.backend == "lmdb":  # type: ignore[attr-defined]
        with pytest.raises(StorageError, match="closed"):
            j.events("r")


def test_load_run_returns_record_events_and_inbox_of_that_run_only(journal: Journal) -> None:
    create(journal, "r1")
    append(journal, "r1", 1, 2)
    create(journal, "r10")  # a run id that extends r1: its events and signals must not leak in
    append(journal, "r10", 1)
    b = journal.batch()
    b.put_signal("r1", "go", "p1")
    b.put_signal("r10", "go", "other")
    b.put_signal("r1", "go", "p2")
    journal.commit(b)
    rec, events, signals = journal.load_run("r1")
    assert rec is not None and rec.run_id == "r1"
    assert [e.seq for e in events] == [0, 1, 2]
    assert [(name, payload) for name, _seq, payload in signals] == [("go", "p1"), ("go", "p2")]
    assert journal.load_run("missing") == (None, [], [])
    put_run(journal, "r10", "completed")
    rec10, ev10, sig10 = journal.load_run("r10")
    assert rec10 is not None and rec10.finished and ev10 == [] and sig10 == []


def test_load_runs_reads_many_runs_as_load_run_does(journal: Journal) -> None:
    create(journal, "r1")
    append(journal, "r1", 1, 2)
    create(journal, "r10")
    append(journal, "r10", 1)
    create(journal, "done")
    put_run(journal, "done", "completed")
    b = journal.batch()
    b.put_signal("r10", "go", "p")
    journal.commit(b)
    ids = ["r10", "missing", "r1", "done"]
    got = journal.load_runs(ids)
    assert list(got) == ids
    for run_id in ids:
        assert got[run_id] == journal.load_run(run_id)
    assert [e.seq for e in got["r1"][1]] == [0, 1, 2]
    assert [(n, p) for n, _s, p in got["r10"][2]] == [("go", "p")]
    assert got["missing"] == (None, [], [])
    assert got["done"][1:] == ([], [])
