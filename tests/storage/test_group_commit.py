"""GroupCommitter: merging, per-batch failure isolation, the leader/relay path and its corner cases.

A fake `apply` whose first call blocks on a gate makes the interleavings deterministic: while the gate
is shut, everything submitted queues up behind the commit in progress.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import pytest

from actorflow.errors import StorageError
from storage import Codec, GroupCommitter, WriteBatch
from storage._journal import _SyncWaiter


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


class FakeStore:
    """apply(): records each call; batches whose kv key is 'bad' make the whole call fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: set[str] = set()

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    def apply(self, batches: list[WriteBatch]) -> list[list[Any]]:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(30)
        names = [b.ops[0][2] if b.ops else "" for b in batches]
        if "bad" in names:
            raise StorageError("bad batch")
        self.calls.append(names)
        return [[f"ok:{n}"] for n in names]


def kv(name: str) -> WriteBatch:
    b = WriteBatch(Codec())
    b.kv_put("ns", name, None)
    return b


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def committer(store: FakeStore) -> Any:
    c = GroupCommitter(store.apply, name="test-committer", max_ops=1000)
    yield c
    store.gate.set()
    c.close()


def test_queued_batches_merge_into_one_apply(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    first = committer.submit(kv("first"))
    assert store.entered.wait(10)
    futures = [committer.submit(kv(f"f{i}")) for i in range(10)]
    results: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, committer.commit(kv(f"c{i}")))) for i in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: len(committer._queue) == 15)
    store.gate.set()
    for t in threads:
        t.join(10)
    assert first.result(10) == ["ok:first"]
    assert [f.result(10) for f in futures] == [[f"ok:f{i}"] for i in range(10)]
    assert results == {i: [f"ok:c{i}"] for i in range(5)}
    assert store.calls[0] == ["first"]
    assert len(store.calls) == 2 and sorted(store.calls[1]) == sorted([f"f{i}" for i in range(10)] + [f"c{i}" for i in range(5)])


def test_max_ops_splits_rounds(store: FakeStore) -> None:
    c = GroupCommitter(store.apply, name="small", max_ops=3)
    try:
        store.hold()
        first = c.submit(kv("first"))
        assert store.entered.wait(10)
        futures = [c.submit(kv(f"f{i}")) for i in range(7)]
        store.gate.set()
        assert [f.result(10) for f in futures] == [[f"ok:f{i}"] for i in range(7)]
        assert first.result(10)
        assert [len(call) for call in store.calls] == [1, 3, 3, 1]
        assert [n for call in store.calls for n in call] == ["first"] + [f"f{i}" for i in range(7)]  # in order
    finally:
        c.close()


def test_one_bad_batch_fails_alone(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    first = committer.submit(kv("first"))
    assert store.entered.wait(10)
    good1 = committer.submit(kv("good1"))
    bad = committer.submit(kv("bad"))
    good2 = committer.submit(kv("good2"))
    out: dict[str, Any] = {}

    def sync_bad() -> None:
        try:
            committer.commit(kv("bad"))
        except StorageError as exc:
            out["sync_bad"] = exc

    t = threading.Thread(target=sync_bad)
    t.start()
    wait_until(lambda: len(committer._queue) == 4)
    store.gate.set()
    t.join(10)
    assert good1.result(10) == ["ok:good1"] and good2.result(10) == ["ok:good2"]
    with pytest.raises(StorageError, match="bad batch"):
        bad.result(10)
    assert isinstance(out["sync_bad"], StorageError)
    assert first.result(10) == ["ok:first"]


def test_blocking_callers_lead_and_relay(committer: GroupCommitter, store: FakeStore) -> None:
    """64 blocked callers: all get their own result; commits are done by callers, not the writer thread."""
    n = 64
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def caller(i: int) -> None:
        try:
            start.wait()
            for k in range(20):
                results[(i, k)] = committer.commit(kv(f"{i}-{k}"))  # type: ignore[index]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    store.hold()  # the first commit waits until every other caller is queued behind it
    threads = [threading.Thread(target=caller, args=(i,), name=f"caller-{i}") for i in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: len(committer._queue) == n - 1)
    store.gate.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == {(i, k): [f"ok:{i}-{k}"] for i in range(n) for k in range(20)}  # type: ignore[comparison-overlap]
    assert "test-committer" not in store.threads  # no hand-off to the writer thread was needed
    assert sum(len(c) for c in store.calls) == n * 20
    assert len(store.calls[0]) == 1 and len(store.calls[1]) >= n - 1  # the 63 queued went in one round
    assert not committer._busy and not committer._queue


def test_futures_only_go_to_writer_thread_after_a_leader(committer: GroupCommitter, store: FakeStore) -> None:
    """A leader whose successor queue holds only futures hands the lead back to the writer thread."""
    store.hold()
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(committer.commit(kv("lead"))), name="leader")
    t.start()
    assert store.entered.wait(10)
    futures = [committer.submit(kv(f"f{i}")) for i in range(3)]
    store.gate.set()
    t.join(10)
    assert out == [["ok:lead"]]
    assert [f.result(10) for f in futures] == [[f"ok:f{i}"] for i in range(3)]
    assert "test-committer" in store.threads


def test_interrupted_follower_does_not_stall_others(committer: GroupCommitter, store: FakeStore) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread to receive SIGINT")
    store.hold()
    leader_out: list[Any] = []
    leader = threading.Thread(target=lambda: leader_out.append(committer.commit(kv("lead"))))
    leader.start()
    assert store.entered.wait(10)
    followers_out: dict[int, Any] = {}
    followers = [
        threading.Thread(target=lambda i=i: followers_out.__setitem__(i, committer.commit(kv(f"after{i}"))))
        for i in range(3)
    ]

    def interrupt_main_when_blocked() -> None:
        wait_until(lambda: any(b.ops[0][2] == "main" for b, _ in list(committer._queue)))
        for t in followers:  # more blocked callers queue up behind the main thread
            t.start()
        wait_until(lambda: len(committer._queue) == 4)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    helper = threading.Thread(target=interrupt_main_when_blocked)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        committer.commit(kv("main"))
    helper.join(10)
    store.gate.set()
    leader.join(10)
    for t in followers:
        t.join(10)
    assert leader_out == [["ok:lead"]]
    assert followers_out == {i: [f"ok:after{i}"] for i in range(3)}
    # the interrupted caller's batch was already queued: it is committed anyway (like a Future's)
    assert any("main" in call for call in store.calls)
    assert committer.commit(kv("later")) == ["ok:later"]


def test_abandoned_successor_hands_the_lead_back(committer: GroupCommitter, store: FakeStore) -> None:
    """If the chosen next leader gave up waiting, the relay returns the lead to the writer thread."""
    store.hold()
    pending = committer.submit(kv("queued"))
    with committer._lock:
        committer._busy = True  # as if a leader had just chosen w as its successor
    w = _SyncWaiter()
    w.lead = True
    w.abandoned = True
    store.gate.set()
    assert not pending.done()
    committer._wake(w)
    assert pending.result(10) == ["ok:queued"]
    assert "test-committer" in store.threads


def test_cancelled_future_does_not_kill_the_writer(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    first = committer.submit(kv("first"))
    assert store.entered.wait(10)
    doomed = committer.submit(kv("doomed"))
    assert doomed.cancel()
    after = committer.submit(kv("after"))
    store.gate.set()
    assert first.result(10) and after.result(10) == ["ok:after"]
    assert committer.submit(kv("again")).result(10) == ["ok:again"]


def test_commit_inside_a_commit_callback_is_refused(committer: GroupCommitter, store: FakeStore) -> None:
    """Callbacks run in the committing thread: a blocking commit there would wait for itself."""
    store.hold()
    committer.submit(kv("first"))
    assert store.entered.wait(10)
    seen: list[BaseException] = []
    fut: Future[Any] = committer.submit(kv("x"))

    def callback(_: Any) -> None:
        try:
            committer.commit(kv("nested"))
        except StorageError as exc:
            seen.append(exc)
        committer.submit(kv("submitted from callback"))  # this is fine

    fut.add_done_callback(callback)
    store.gate.set()
    assert fut.result(10) == ["ok:x"]
    wait_until(lambda: bool(seen))
    assert "deadlock" in str(seen[0])
    wait_until(lambda: any("submitted from callback" in c for c in store.calls))


def test_close_drains_and_refuses(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    futures = [committer.submit(kv(f"f{i}")) for i in range(5)]
    assert store.entered.wait(10)
    closer = threading.Thread(target=committer.close)
    closer.start()
    wait_until(lambda: committer._closed)
    with pytest.raises(StorageError, match="closed"):
        committer.submit(kv("late"))
    with pytest.raises(StorageError, match="closed"):
        committer.commit(kv("late"))
    store.gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(0) for f in futures] == [[f"ok:f{i}"] for i in range(5)]


def test_commit_with_timeout(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    committer.submit(kv("first"))
    assert store.entered.wait(10)
    with pytest.raises(TimeoutError):
        committer.commit(kv("slow"), timeout=0.05)
    store.gate.set()
    assert committer.commit(kv("fast"), timeout=10) == ["ok:fast"]
