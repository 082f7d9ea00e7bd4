"""GroupCommitter: merging, per-batch failure isolation, the leader/relay path and its corner cases.

A fake `apply` whose first call blocks on a gate makes the interleavings deterministic: while the gate
is shut, everything submitted queues up behind the commit in progress.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import pytest

from actorflow.errors import StorageError
from storage import Codec, GroupCommitter, WriteBatch
from storage._commit_future import CommitFuture
from storage._group_commit import _SyncWaiter


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
    # a process started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: put it in place for this test
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupted_follower(committer, store)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted_follower(committer: GroupCommitter, store: FakeStore) -> None:
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


# --- CommitFuture: the cheap Future that submit() returns -------------------------------------------


def test_submit_returns_a_real_concurrent_future(committer: GroupCommitter, store: FakeStore) -> None:
    fut = committer.submit(kv("a"))
    assert isinstance(fut, Future) and isinstance(fut, CommitFuture)
    assert fut.result(10) == ["ok:a"]
    assert fut.done() and not fut.cancelled() and not fut.running() and fut.exception() is None
    assert "finished" in repr(fut)
    seen: list[Any] = []
    fut.add_done_callback(seen.append)  # already done: runs at once, in the caller's thread
    assert seen == [fut]


def test_futures_resolve_fifo_across_rounds_with_callbacks_in_order(store: FakeStore) -> None:
    c = GroupCommitter(store.apply, name="fifo", max_ops=5)  # 40 batches: at least 8 rounds
    order: list[str] = []
    try:
        store.hold()
        first = c.submit(kv("first"))
        first.add_done_callback(lambda f: order.append("first"))
        assert store.entered.wait(10)
        futures = []
        for i in range(40):
            f = c.submit(kv(f"f{i}"))
            f.add_done_callback(lambda f, i=i: order.append(f"f{i}"))
            f.add_done_callback(lambda f, i=i: order.append(f"f{i}'"))  # callbacks in registration order
            futures.append(f)
        store.gate.set()
        assert [f.result(10) for f in futures] == [[f"ok:f{i}"] for i in range(40)]
        wait_until(lambda: len(order) == 81)
        assert order == ["first"] + [x for i in range(40) for x in (f"f{i}", f"f{i}'")]
        assert len(store.calls) >= 9
    finally:
        store.gate.set()
        c.close()


def test_failed_merged_round_isolates_the_bad_batch_and_keeps_fifo(committer: GroupCommitter, store: FakeStore) -> None:
    store.hold()
    committer.submit(kv("first"))
    assert store.entered.wait(10)
    names = ["g0", "g1", "bad", "g2", "bad", "g3"]
    outcomes: list[tuple[str, Any]] = []
    futures = []
    for n in names:
        f = committer.submit(kv(n))
        f.add_done_callback(lambda f, n=n: outcomes.append((n, f.exception() or f.result())))
        futures.append(f)
    store.gate.set()
    for n, f in zip(names, futures):
        if n == "bad":
            with pytest.raises(StorageError, match="bad batch"):
                f.result(10)
        else:
            assert f.result(10) == [f"ok:{n}"]
    wait_until(lambda: len(outcomes) == len(names))
    assert [n for n, _ in outcomes] == names  # delivered in submission order, failures included
    assert all(isinstance(v, StorageError) == (n == "bad") for n, v in outcomes)
    # the good ones were committed one by one after the merged attempt failed, still in order
    assert [n for call in store.calls[1:] for n in call] == ["g0", "g1", "g2", "g3"]


def test_blocking_result_and_wait_are_woken(committer: GroupCommitter, store: FakeStore) -> None:
    """Threads that block on a CommitFuture (result(), exception(), futures.wait, as_completed) build
    its Condition lazily; they must all be woken when the round completes."""
    store.hold()
    committer.submit(kv("first"))
    assert store.entered.wait(10)
    futures = [committer.submit(kv(f"w{i}")) for i in range(8)]
    got: dict[str, Any] = {}

    def by_result() -> None:
        got["result"] = futures[0].result(10)

    def by_exception() -> None:
        got["exception"] = futures[1].exception(10)

    def by_wait() -> None:
        done, not_done = concurrent.futures.wait(futures[2:5], timeout=10)
        got["wait"] = (len(done), len(not_done))

    def by_as_completed() -> None:
        got["as_completed"] = sorted(f.result() for f in concurrent.futures.as_completed(futures[5:], timeout=10))

    threads = [threading.Thread(target=t) for t in (by_result, by_exception, by_wait, by_as_completed)]
    for t in threads:
        t.start()
    wait_until(lambda: all(f._cond is not None for f in futures))  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        futures[0].result(0.01)
    store.gate.set()
    for t in threads:
        t.join(10)
    assert got == {
        "result": ["ok:w0"],
        "exception": None,
        "wait": (3, 0),
        "as_completed": [["ok:w5"], ["ok:w6"], ["ok:w7"]],
    }


def test_lazy_condition_race_stress(committer: GroupCommitter) -> None:
    """Many threads submit and immediately block on result() while rounds complete underneath:
    none may miss its wakeup (the setter/waiter ordering of the lazy Condition)."""
    n_threads, per = 16, 200
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for k in range(per):
                f = committer.submit(kv(f"{i}-{k}"))
                if k % 3 == 0:
                    assert concurrent.futures.wait([f], timeout=10).done == {f}
                assert f.result(10) == [f"ok:{i}-{k}"]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


def test_commit_future_set_twice_and_cancel() -> None:
    f = CommitFuture()
    calls: list[Any] = []
    f.add_done_callback(lambda x: calls.append(("cb", x.cancelled())))
    assert f.cancel() and f.cancel() and f.cancelled() and f.done()
    assert calls == [("cb", True)]
    with pytest.raises(InvalidStateError):
        f.set_result(1)
    with pytest.raises(concurrent.futures.CancelledError):
        f.result(0)
    g = CommitFuture()
    g.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        g.result()
    assert isinstance(g.exception(), ValueError) and not g.cancel()
    with pytest.raises(InvalidStateError):
        g.set_result(2)
    h = CommitFuture()
    assert h.set_running_or_notify_cancel() and h.running() and not h.cancel()
    h.set_result(3)
    assert h.result() == 3


def test_commit_future_callback_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    f = CommitFuture()
    after: list[int] = []
    f.add_done_callback(lambda _: 1 / 0)
    f.add_done_callback(lambda _: after.append(1))
    f.set_result(None)
    assert after == [1]
    assert "exception calling callback" in caplog.text


def test_asyncio_wrap_future_result_error_and_cancel(committer: GroupCommitter, store: FakeStore) -> None:
    async def main() -> None:
        assert await asyncio.wrap_future(committer.submit(kv("a"))) == ["ok:a"]
        with pytest.raises(StorageError, match="bad batch"):
            await asyncio.wrap_future(committer.submit(kv("bad")))
        store.hold()
        committer.submit(kv("first"))
        await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, 10)
        src = committer.submit(kv("cancelled"))
        task = asyncio.ensure_future(asyncio.wrap_future(src))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # the loop passes the cancel on in its next iteration
        assert src.cancelled()  # cancelling the awaiting side cancels the journal future
        after = committer.submit(kv("after"))
        store.gate.set()
        assert await asyncio.wrap_future(after) == ["ok:after"]

    asyncio.run(main())
    assert any("cancelled" in call for call in store.calls)  # queued before the cancel: committed anyway


def test_an_interrupt_fails_its_round_without_retrying_batch_by_batch() -> None:
    """KeyboardInterrupt/SystemExit inside a merged write is no bad batch: the round fails as it is."""
    calls: list[int] = []
    gate = threading.Event()

    def apply(batches: list[WriteBatch]) -> list[list[Any]]:
        calls.append(len(batches))
        if len(calls) == 1:
            assert gate.wait(10)  # hold the first round so the next submits merge into one
            return [["ok"] for _ in batches]
        raise KeyboardInterrupt  # as a signal handler would, in the middle of a write

    gc = GroupCommitter(apply, name="interrupted")
    try:
        first = gc.submit(kv("first"))
        wait_until(lambda: bool(calls))
        later = [gc.submit(kv(f"f{i}")) for i in range(3)]
        gate.set()
        assert first.result(10) == ["ok"]
        assert all(isinstance(f.exception(10), KeyboardInterrupt) for f in later)
        assert calls == [1, 3]  # one merged attempt, no retries one by one
    finally:
        gc.close()


def test_a_lone_commit_that_fails_still_passes_the_lead_on(committer: GroupCommitter, store: FakeStore) -> None:
    """The lone-caller round (nothing queued when it began): its failure is raised to its caller alone,
    and what queued behind it meanwhile (a blocked caller, a future) is committed after it, in order."""
    store.hold()
    raised: list[BaseException] = []

    def lone() -> None:
        try:
            committer.commit(kv("bad"))
        except StorageError as exc:
            raised.append(exc)

    t = threading.Thread(target=lone, name="lone")
    t.start()
    assert store.entered.wait(10)  # inside apply, with nothing queued: the lone round
    behind: list[Any] = []
    follower = threading.Thread(target=lambda: behind.append(committer.commit(kv("next"))), name="follower")
    follower.start()
    wait_until(lambda: len(committer._queue) == 1)
    fut = committer.submit(kv("later"))
    store.gate.set()
    t.join(10)
    follower.join(10)
    assert [str(e) for e in raised] == ["bad batch"]
    assert behind == [["ok:next"]]
    assert fut.result(10) == ["ok:later"]
    assert store.calls == [["next", "later"]]  # one round, led by the follower (no writer-thread hand-off)
    assert "test-committer" not in store.threads
    assert not committer._busy and not committer._queue
