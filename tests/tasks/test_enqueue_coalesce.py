"""Concurrent threaded enqueue calls share one commit (tasks/_coalesce.py): each still returns once its
own execution is durable - a kill -9 loses no acknowledged enqueue - and gets its own id or error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine
from actorflow.errors import RunConflict, StorageError
from actorflow.tasks._coalesce import Coalescer

ROOT = Path(__file__).resolve().parents[2]


# --- the coalescer alone, on a journal double that records its commits ---------------------------
class _Batch:
    def __init__(self, ops: list[Any] | None = None) -> None:
        self.ops: list[Any] = ops or []
        self.creates = 0


class _Journal:
    """commit(): 30 ms per call (so callers queue behind a round); a batch holding a "bad" op fails."""

    def __init__(self) -> None:
        self.commits: list[list[Any]] = []
        self.lock = threading.Lock()

    def batch(self) -> _Batch:
        return _Batch()

    def commit(self, batch: _Batch) -> list[Any]:
        time.sleep(0.03)
        with self.lock:
            self.commits.append(list(batch.ops))
        if "bad" in batch.ops:
            raise StorageError("invalid journal op: bad")
        return [None] * len(batch.ops)


class _Rt:
    def __init__(self) -> None:
        self.journal = _Journal()


class _Rec:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


def _enqueue_all(co: Coalescer, rt: _Rt, ops: list[str]) -> dict[str, Any]:
    """Every op from its own thread, all at once; per op: its run id or the exception it raised."""
    out: dict[str, Any] = {}
    go = threading.Barrier(len(ops))

    def call(op: str) -> None:
        go.wait()
        try:
            out[op] = co.commit(rt, _Batch([op]), 0, _Rec(op), ())  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[op] = exc

    threads = [threading.Thread(target=call, args=(op,)) for op in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return out


def test_concurrent_callers_share_commits_and_each_gets_its_own_id() -> None:
    rt, started = _Rt(), []
    co = Coalescer(lambda rt_, rec, copy, existing: started.append(rec.run_id) or rec.run_id)  # type: ignore[arg-type,func-returns-value]
    ops = [f"op{i}" for i in range(16)]
    out = _enqueue_all(co, rt, ops)
    assert out == {op: op for op in ops}
    assert sorted(started) == sorted(ops)  # each run handed to its host once
    # 16 callers, 30 ms a commit: the first commits alone, the rest queue behind it and share rounds
    assert len(rt.journal.commits) <= 4, rt.journal.commits
    assert sorted(op for c in rt.journal.commits for op in c) == sorted(ops)


def test_a_bad_batch_fails_alone_in_a_shared_commit() -> None:
    rt = _Rt()
    co = Coalescer(lambda rt_, rec, copy, existing: rec.run_id)  # type: ignore[arg-type]
    ops = [f"op{i}" for i in range(12)] + ["bad"]
    out = _enqueue_all(co, rt, ops)
    assert isinstance(out["bad"], StorageError)
    assert {op: v for op, v in out.items() if op != "bad"} == {op: op for op in ops if op != "bad"}


def test_a_failed_hand_over_is_that_callers_error() -> None:
    def start(rt_: Any, rec: Any, copy: Any, existing: Any) -> str:
        if rec.run_id == "op3":
            raise RunConflict(rec.run_id, "other", "task:x")
        return str(rec.run_id)

    out = _enqueue_all(Coalescer(start), _Rt(), [f"op{i}" for i in range(8)])  # type: ignore[arg-type]
    assert isinstance(out["op3"], RunConflict)
    assert {op: v for op, v in out.items() if op != "op3"} == {f"op{i}": f"op{i}" for i in range(8) if i != 3}


# --- on the engine --------------------------------------------------------------------------------
def _inc(ctx: Any, input: dict[str, Any]) -> int:
    return int(input["x"]) + 1


def test_concurrent_enqueues_with_one_conflict(tmp_path: Path) -> None:
    """16 threads enqueue at once; one names an execution id held by another task's execution: it alone
    gets RunConflict, every other call its own execution, run and journaled."""
    engine = Engine(str(tmp_path / "af"))
    engine.task(name="inc")(_inc)
    engine.task(name="other")(_inc)
    with engine:
        engine._tasks.enqueue("other", {"x": 0}, execution_id="taken", delay=3600)
        go = threading.Barrier(16)
        out: dict[int, Any] = {}

        def call(k: int) -> None:
            go.wait()
            try:
                for i in range(k * 20, k * 20 + 20):
                    eid = "taken" if i == 5 else None
                    out[i] = engine._tasks.enqueue("inc", {"x": i}, execution_id=eid)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                out[-1] = exc

        threads = [threading.Thread(target=call, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert isinstance(out.pop(-1), RunConflict)
        assert sorted(out) == list(range(5)) + list(range(20, 320))  # thread 0 stopped at its conflict
        assert [engine.result(out[i], 60) for i in sorted(out)] == [i + 1 for i in sorted(out)]
        assert len(set(out.values())) == len(out)


def _acked(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line]  # a torn last line is not an ack


@pytest.mark.timeout(180)
def test_kill9_loses_no_acknowledged_enqueue(tmp_path: Path) -> None:
    data, acks = tmp_path / "data", tmp_path / "acks"
    proc = subprocess.Popen([sys.executable, "-m", "tests.tasks._enqueue_child", str(data), str(acks)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(_acked(acks)) < 800 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert len(_acked(acks)) >= 800, "the child did not acknowledge 800 enqueues"
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: 16 threads inside enqueue
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    acked = _acked(acks)
    engine = Engine(str(data))
    engine.task(name="slow")(lambda ctx, input: int(input["x"]))
    with engine:
        journal = engine._runtime().journal
        missing = [eid for eid in acked if journal.get_run(eid) is None]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged enqueues are not in the journal"


def _refuse() -> None:
    raise RuntimeError("this value does not load")


class _Unloadable:
    """Pickles, but its unpickling raises: refused on read-back, before anything is written."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def test_an_unloadable_input_fails_alone_among_concurrent_aenqueues(tmp_path: Path) -> None:
    import asyncio

    from actorflow.errors import PayloadError

    engine = Engine(str(tmp_path / "af"))
    engine.task(name="inc")(_inc)

    async def main() -> list[Any]:
        calls = [engine.aenqueue("inc", {"x": i} if i != 7 else {"x": i, "bad": _Unloadable()}) for i in range(40)]
        return await asyncio.gather(*calls, return_exceptions=True)  # one loop iteration: one shared batch

    with engine:
        out = asyncio.run(main())
        assert isinstance(out[7], PayloadError), out[7]
        ok = [i for i in range(40) if i != 7]
        assert [engine.result(out[i], 60) for i in ok] == [i + 1 for i in ok]
    with Engine(str(tmp_path / "af")) as reopened:
        reopened.task(name="inc")(_inc)
        assert len(reopened.tasks(name="inc")) == 39


def test_task_policy_memo_keeps_each_policys_own_delay_function() -> None:
    """The execution's policy is memoized by identity: two policies equal but for their custom delay
    function (equality ignores it) each keep their own; TaskFailure is never retried."""
    from actorflow import RetryPolicy
    from actorflow.tasks._execution import _task_policy
    from actorflow.tasks._model import TaskFailure

    a = RetryPolicy.custom(3, lambda n: 1.0)
    b = RetryPolicy.custom(3, lambda n: 2.0)
    assert a == b  # what an equality-keyed memo would conflate
    ta, tb = _task_policy(a), _task_policy(b)
    assert ta.delay_for_attempt is a.delay_for_attempt and tb.delay_for_attempt is b.delay_for_attempt
    assert _task_policy(a) is ta  # the same policy object: built once
    assert TaskFailure in ta.non_retryable and TaskFailure in tb.non_retryable
