"""GroupCommitter overlap: callbacks that outlast a sync run on the completer during the next round's sync.

The fake store's `apply` calls `syncing()` and then sleeps as its "sync" (a sleep releases the GIL, as
LMDB's fsync does); the writers are actor-style, each keeping a few appends outstanding and resubmitting
from a done callback that spins for a while (Python holding the GIL, as real callbacks do).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from actorflow.errors import ConfigError, StorageError
from storage import Codec, GroupCommitter, WriteBatch


class SyncingStore:
    """apply(): one result per op; between building and returning, a GIL-free 'sync' it records."""

    def __init__(self, sync_s: float = 0.001) -> None:
        self.committer: GroupCommitter | None = None
        self.name = ""
        self.sync_s = sync_s
        self.syncs: list[tuple[float, float]] = []
        self.rounds: list[int] = []
        self.applied: list[str] = []

    def apply(self, batches: list[WriteBatch]) -> list[list[Any]]:
        assert self.committer is not None
        self.rounds.append(len(batches))
        self.applied += [b.ops[0][2] for b in batches]
        self.committer.syncing()
        t0 = time.perf_counter()
        time.sleep(self.sync_s)
        self.syncs.append((t0, time.perf_counter()))
        return [[b.ops[0][2]] for b in batches]


_names = itertools.count()


def make(sync_s: float = 0.001, **kw: Any) -> tuple[GroupCommitter, SyncingStore]:
    store = SyncingStore(sync_s)
    store.name = f"overlap-test-{next(_names)}"
    c = GroupCommitter(store.apply, name=store.name, **kw)
    store.committer = c
    return c, store


def kv(name: str) -> WriteBatch:
    b = WriteBatch(Codec())
    b.kv_put("ns", name, None)
    return b


def spin(seconds: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass


class Writers:
    """`n` actor-style writers, each keeping `depth` submits outstanding, `per_writer` in all."""

    def __init__(
        self,
        c: GroupCommitter,
        n: int = 64,
        depth: int = 4,
        per_writer: int = 40,
        spin_s: float = 50e-6,
        on_callback: Callable[[], None] | None = None,
    ) -> None:
        self.c, self.n, self.depth, self.per_writer, self.spin_s = c, n, depth, per_writer, spin_s
        self.on_callback = on_callback
        self.acked: list[list[str]] = [[] for _ in range(n)]
        self.sent = [0] * n
        self.locks = [threading.RLock() for _ in range(n)]
        self.callbacks: list[tuple[float, float, str]] = []
        self.errors: list[BaseException] = []
        self.finished = threading.Event()
        self.remaining = n
        self.count_lock = threading.Lock()

    def submit(self, i: int) -> None:
        name = f"{i}:{self.sent[i]}"
        self.sent[i] += 1
        self.c.submit(kv(name)).add_done_callback(lambda f: self.step(i, f))

    def step(self, i: int, f: Any) -> None:
        t0 = time.perf_counter()
        spin(self.spin_s)
        if self.on_callback is not None:
            self.on_callback()
        with self.locks[i]:
            try:
                self.acked[i].append(f.result()[0])
                if self.sent[i] < self.per_writer:
                    self.submit(i)
                elif len(self.acked[i]) == self.per_writer:
                    with self.count_lock:
                        self.remaining -= 1
                        if not self.remaining:
                            self.finished.set()
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                self.errors.append(exc)
                self.finished.set()
        self.callbacks.append((t0, time.perf_counter(), threading.current_thread().name))

    def run(self, timeout: float = 60.0) -> None:
        for i in range(self.n):
            with self.locks[i]:
                for _ in range(self.depth):
                    self.submit(i)
        assert self.finished.wait(timeout), "writers did not finish"
        if self.errors:
            raise self.errors[0]

    def check_order(self) -> None:
        for i, acks in enumerate(self.acked):
            assert acks == [f"{i}:{k}" for k in range(self.per_writer)]


def overlapped(store: SyncingStore, callbacks: list[tuple[float, float, str]]) -> int:
    """How many callbacks ran (at least partly) inside a sync."""
    return sum(any(t0 < s1 and t1 > s0 for s0, s1 in store.syncs) for t0, t1, _ in callbacks)


def completer_threads(store: SyncingStore) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == store.name + "-completer"]


def test_callbacks_that_outlast_a_sync_run_during_the_next_sync_in_order() -> None:
    c, store = make()
    w = Writers(c)
    try:
        w.run()
        w.check_order()  # per writer, acknowledged in submission order
        assert store.applied.index("0:1") > store.applied.index("0:0")
        threads = {name for _, _, name in w.callbacks}
        assert store.name + "-completer" in threads
        assert overlapped(store, w.callbacks) > 0
    finally:
        c.close()


def test_the_writers_settle_into_two_even_cohorts() -> None:
    c, store = make()
    w = Writers(c, per_writer=60)
    try:
        w.run()
        w.check_order()
        outstanding = w.n * w.depth
        later = sorted(store.rounds[len(store.rounds) // 2 :])
        # each round carries about half of everything outstanding (a single cohort would carry all of it)
        assert later[len(later) // 2] <= 0.75 * outstanding, store.rounds
    finally:
        c.close()


def test_cheap_callbacks_stay_on_the_committing_thread() -> None:
    c, store = make(sync_s=0.002)
    w = Writers(c, n=16, depth=2, per_writer=30, spin_s=0.0)
    try:
        w.run()
        w.check_order()
        assert {name for _, _, name in w.callbacks} == {store.name}
        assert overlapped(store, w.callbacks) == 0
        assert completer_threads(store) == []  # never started
    finally:
        c.close()


def test_overlap_can_be_turned_off() -> None:
    c, store = make(overlap=False)
    w = Writers(c, per_writer=20)
    try:
        w.run()
        w.check_order()
        assert {name for _, _, name in w.callbacks} == {store.name}
        assert overlapped(store, w.callbacks) == 0
        assert completer_threads(store) == []
    finally:
        c.close()


def test_commit_from_a_completer_callback_is_refused() -> None:
    c, _ = make()
    refused: list[BaseException] = []

    def try_commit() -> None:
        if threading.current_thread().name.endswith("-completer") and not refused:
            try:
                c.commit(kv("from-callback"))
            except StorageError as exc:
                refused.append(exc)

    w = Writers(c, on_callback=try_commit)
    try:
        w.run()
        w.check_order()
        assert refused and "deadlock" in str(refused[0])
    finally:
        c.close()


def test_blocking_callers_commit_beside_overlapped_writers() -> None:
    c, store = make()
    w = Writers(c, per_writer=60)
    results: list[list[Any]] = []
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        try:
            for j in range(20):
                results.append(c.commit(kv(f"sync-{k}-{j}")))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        w.run()
        for t in threads:
            t.join(60)
        assert not errors
        assert sorted(r[0] for r in results) == sorted(f"sync-{k}-{j}" for k in range(4) for j in range(20))
        w.check_order()
    finally:
        c.close()


def test_close_settles_everything_handed_to_the_completer() -> None:
    c, store = make()
    on_completer = threading.Event()

    def note_thread() -> None:
        if threading.current_thread().name == store.name + "-completer":
            on_completer.set()

    w = Writers(c, per_writer=1000, on_callback=note_thread)  # still busy when close() comes
    for i in range(w.n):
        with w.locks[i]:
            for _ in range(w.depth):
                w.submit(i)
    assert on_completer.wait(30)  # callbacks are running on the completer
    c.close()
    assert completer_threads(store) == []
    # everything committed was acknowledged, in order; what callbacks submitted after close was refused
    applied = set(store.applied)
    for i, acks in enumerate(w.acked):
        assert acks == [f"{i}:{k}" for k in range(len(acks))]
        assert {f"{i}:{k}" for k in range(w.sent[i]) if f"{i}:{k}" in applied} == set(acks)
    assert all(isinstance(e, StorageError) and "closed" in str(e) for e in w.errors)


def test_a_failing_completer_callback_is_logged_and_the_rest_still_run(caplog: pytest.LogCaptureFixture) -> None:
    c, _ = make()
    failed: list[str] = []

    def boom(f: Any) -> None:
        if threading.current_thread().name.endswith("-completer"):
            failed.append(f.result()[0])
            raise RuntimeError("callback bug")

    w = Writers(c, per_writer=60)
    plain_submit = w.submit

    def submit(i: int) -> None:  # every 10th append also brings a bystander whose callback raises
        plain_submit(i)
        if w.sent[i] % 10 == 0:
            c.submit(kv(f"bystander-{i}-{w.sent[i]}")).add_done_callback(boom)

    w.submit = submit  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR):
            w.run()
        w.check_order()
        assert failed
        assert any("exception calling callback" in r.getMessage() for r in caplog.records)
    finally:
        c.close()


@pytest.mark.parametrize("overlap", [True, "always"])
def test_waiting_for_a_commit_inside_a_commit_callback_fails_instead_of_hanging(overlap: bool | str) -> None:
    """On the committing thread (inline) or the completer ("always"), a wait could never end."""
    c, _ = make(overlap=overlap)
    outcome: list[Any] = []
    done = threading.Event()

    def callback(f: Any) -> None:
        inner = c.submit(kv("inner"))
        try:
            outcome.append(("result", inner.result(30)))
        except StorageError as exc:
            outcome.append(("refused", str(exc)))
        inner.add_done_callback(lambda g: (outcome.append(("chained", g.result())), done.set()))

    try:
        c.submit(kv("outer")).add_done_callback(callback)
        assert done.wait(30)
        assert outcome[0][0] == "refused" and "would deadlock" in outcome[0][1]
        assert outcome[1] == ("chained", ["inner"])  # chaining with add_done_callback works
    finally:
        c.close()


@pytest.mark.parametrize("bad", ["0", "1", 1, None, "ALWAYS"])
def test_a_bad_overlap_setting_is_refused_before_anything_is_opened(bad: Any, tmp_path: Any) -> None:
    from storage import LmdbJournal

    with pytest.raises(ConfigError, match="commit overlap must be") as info:
        LmdbJournal(tmp_path / "j", commit_overlap=bad)
    assert info.value.overlap == repr(bad)
    assert not (tmp_path / "j").exists()  # refused before the directory was made
    with pytest.raises(ConfigError):
        GroupCommitter(lambda batches: [], name="never-started", overlap=bad)
    assert not [t for t in threading.enumerate() if t.name == "never-started"]


def test_lmdb_journal_passes_always_to_its_committer(tmp_path: Any) -> None:
    """commit_overlap="always": even a cheap one-future round is settled on the completer thread."""
    from storage import LmdbJournal

    with LmdbJournal(tmp_path / "j", sync=False, commit_overlap="always") as j:
        threads: list[str] = []
        done = threading.Event()
        b = j.batch()
        b.kv_put("ns", "k", 1)
        j.submit(b).add_done_callback(lambda f: (threads.append(threading.current_thread().name), done.set()))
        assert done.wait(30)
        assert threads == ["actorflow-journal-j-completer"]
