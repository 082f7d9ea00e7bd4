"""Every task call on the embedded and the multiprocess system."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorflow import ConfigError, Engine, PayloadError, RetryPolicy, TaskNotRegistered, WorkflowFailed
from actorflow.tasks import (
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskRetrying,
    TaskRunning,
    TaskSucceeded,
)

from . import _handlers as h

T = 30.0


@pytest.fixture(params=["embedded", "multiproc"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    e = h.register(Engine(tmp_path / "data", system=request.param, sync=False, shards=2))
    with e:
        yield e


def _describe(ev: TaskEvent) -> str:
    match ev:  # exhaustive over the sealed family
        case TaskQueued():
            return "queued"
        case TaskRunning(progress=p):
            return f"running {p}"
        case TaskRetrying(next_attempt_in=n):
            return f"retrying in {n:.2f}"
        case TaskSucceeded(output=o):
            return f"ok {o}"
        case TaskFailed(message=m):
            return f"failed {m}"
        case TaskCancelled():
            return "cancelled"


def test_enqueue_result_status_and_listing(engine: Engine) -> None:
    eid = engine.enqueue("add", {"a": 2, "b": 3}, tags=["math"])
    assert engine.result(eid, T) == {"sum": 5}
    assert engine.task_status(eid) == TaskSucceeded(eid, {"sum": 5})
    assert "progress" in [e.kind for e in engine.history(eid)]  # the handler's report_progress is journaled
    other = engine.enqueue("add", {"a": 1, "b": 1})
    engine.result(other, T)
    assert [t.execution_id for t in engine.tasks(tag="math")] == [eid]
    assert {t.execution_id for t in engine.tasks(name="add", state="succeeded")} == {eid, other}
    assert engine.tasks(name="add", state="failed") == []


def test_async_handler_and_monitor_execution(engine: Engine) -> None:
    eid = engine.enqueue("double", {"sum": 21})
    events = list(engine.monitor_execution(eid, T))
    assert events[-1] == TaskSucceeded(eid, {"sum": 42})
    assert all(e.execution_id == eid for e in events)
    assert [_describe(e) for e in events][-1] == "ok {'sum': 42}"


def test_async_monitor(engine: Engine) -> None:
    async def main() -> list[TaskEvent]:
        eid = engine.enqueue("add", {"a": 1, "b": 2})
        return [ev async for ev in engine.amonitor_execution(eid)]

    events = asyncio.run(main())
    assert isinstance(events[-1], TaskSucceeded) and events[-1].output == {"sum": 3}


def test_retry_later_then_success(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "flaky")
    eid = engine.enqueue("flaky", {"path": path, "ok_at": 3})
    assert engine.result(eid, T) == {"attempt": 3}
    assert len(h.lines(path)) == 3


def test_retrying_status_is_visible(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "slow-retry")
    eid = engine.enqueue("flaky", {"path": path, "ok_at": 2}, retry=RetryPolicy.linear(2, 2.0, jitter=False))
    deadline = time.time() + T
    while not h.lines(path) and time.time() < deadline:
        time.sleep(0.01)
    seen = None
    while time.time() < deadline:
        seen = engine.task_status(eid)
        if isinstance(seen, TaskRetrying):
            break
        time.sleep(0.01)
    assert isinstance(seen, TaskRetrying) and 0 < seen.next_attempt_in <= 2.0 and seen.attempt == 1
    assert engine.result(eid, T) == {"attempt": 2}


def test_exhausted_retries_dead_letter_and_requeue(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "broken")
    eid = engine.enqueue("broken", {"path": path})
    with pytest.raises(WorkflowFailed):
        engine.result(eid, T)
    assert len(h.lines(path)) == 2
    st = engine.task_status(eid)
    assert isinstance(st, TaskFailed) and "always broken" in st.message
    [dead] = engine.dead_letters()
    assert (dead.execution_id, dead.task, dead.attempts, dead.input) == (eid, "broken", 2, {"path": path})
    again = engine.requeue(eid)
    assert again != eid
    with pytest.raises(WorkflowFailed):
        engine.result(again, T)
    assert len(h.lines(path)) == 4
    assert [d.execution_id for d in engine.dead_letters()] == [again]
    with pytest.raises(ConfigError, match="already requeued"):
        engine.requeue(eid)


def test_failure_result_is_final(engine: Engine) -> None:
    eid = engine.enqueue("refuse", retry=RetryPolicy.linear(5, 0.01))
    with pytest.raises(WorkflowFailed):
        engine.result(eid, T)
    assert engine.task_status(eid) == TaskFailed(eid, "bad request")
    assert [e.kind for e in engine.history(eid)].count("step_attempt_failed") == 0


def test_delay_is_a_durable_timer_and_cancel_reaches_it(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "delayed")
    eid = engine.enqueue("record", {"path": path}, delay=60)
    assert engine.task_status(eid) == TaskQueued(eid)
    deadline = time.time() + T
    assert engine.journal is not None
    while eid not in [t[1] for t in engine.journal.timers(float("inf"))] and time.time() < deadline:
        time.sleep(0.01)
    assert eid in [t[1] for t in engine.journal.timers(float("inf"))]  # on disk, in the timer index
    assert engine.cancel_execution(eid)
    assert engine.task_status(eid) == TaskCancelled(eid)
    assert h.lines(path) == []
    short = engine.enqueue("record", {"path": path, "label": "late"}, delay=0.2)
    assert engine.result(short, T) == "late"


def test_cancel_running_is_cooperative(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "running")
    eid = engine.enqueue("record", {"path": path, "hold": 20})
    deadline = time.time() + T
    while not h.lines(path) and time.time() < deadline:
        time.sleep(0.01)
    assert engine.cancel_execution(eid)
    while not h.lines(path + ".cancelled") and time.time() < deadline:
        time.sleep(0.01)
    assert h.lines(path + ".cancelled") == [eid]  # the handler saw ctx.cancelled and stopped
    assert engine.task_status(eid) == TaskCancelled(eid)


def test_cancel_by_name_tag_and_all(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "never")
    a = [engine.enqueue("record", {"path": path}, delay=60, tags=["t1"]) for _ in range(3)]
    b = [engine.enqueue("echo", {"path": path}, delay=60) for _ in range(2)]
    c = engine.enqueue("add", {"a": 1, "b": 1}, delay=60)
    assert engine.cancel_by_tag("t1") == 3
    assert engine.cancel_by_name("echo") == 2
    assert engine.cancel_all() == 1
    for eid in [*a, *b, c]:
        assert engine.task_status(eid) == TaskCancelled(eid)
    assert engine.cancel_all() == 0
    assert h.lines(path) == []


def test_unique_keep_and_replace_debounce(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "unique")
    first = engine.enqueue("record", {"path": path, "label": "1"}, delay=60, unique_key="u")
    assert engine.enqueue("record", {"path": path, "label": "2"}, delay=60, unique_key="u") == first
    last = ""
    for i in range(3):  # debounce: each replaces the previous one
        last = engine.enqueue("record", {"path": path, "label": f"r{i}"}, delay=0.3, unique_key="u",
                              unique_policy="replace")
    assert engine.result(last, T) == "r2"
    assert h.lines(path) == ["r2"]
    assert engine.task_status(first) == TaskCancelled(first)
    after = engine.enqueue("record", {"path": path, "label": "n"}, unique_key="u")  # finished holder: new one
    assert after != last and engine.result(after, T) == "n"


def test_chain_then_all_and_cancel_chain(engine: Engine, tmp_path: Path) -> None:
    cid = engine.chain("calc").then("add").then_all(["double", "double"]).enqueue({"a": 1, "b": 2})
    assert engine.result(cid, T) == {"double": {"sum": 6}, "double#2": {"sum": 6}}
    path = str(tmp_path / "chain")
    slow = engine.chain("slow").then("record").then("echo").enqueue({"path": path, "hold": 20, "label": "x"})
    deadline = time.time() + T
    while not h.lines(path) and time.time() < deadline:
        time.sleep(0.01)
    assert engine.cancel_chain(slow)
    with pytest.raises(BaseException, match="cancel"):
        engine.result(slow, T)
    assert h.lines(path) == ["x"]  # echo never ran


def test_on_failure_group_and_chord(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "chord")
    cid = engine.chain("fragile").then("refuse").then("echo").on_failure("on_fail").enqueue({"path": path})
    with pytest.raises(WorkflowFailed):
        engine.result(cid, T)
    assert h.lines(path) == ["on_failure"]
    gid = engine.group([("echo", {"path": path, "label": "g1"}), ("echo", {"path": path, "label": "g2"})]).enqueue()
    assert set(engine.result(gid, T)) == {"echo", "echo#2"}
    chord = engine.chord([("echo", {"path": path, "label": "c1"}), ("add", {"a": 1, "b": 2})], "merge").enqueue()
    assert engine.result(chord, T) == ["add", "echo"]
    assert h.lines(path).count("callback") == 1


def test_concurrency_limit_holds(engine: Engine, tmp_path: Path) -> None:
    d = tmp_path / "lim"
    d.mkdir()
    ids = [engine.enqueue("limited_body", {"dir": str(d)}, priority=i % 3) for i in range(8)]
    assert all(engine.result(i, T) <= 2 for i in ids)
    assert max(int(x) for x in h.lines(str(d / "max.log.done"))) <= 2


def test_schedule_every_fires_durably(engine: Engine, tmp_path: Path) -> None:
    path = str(tmp_path / "sched")
    engine.schedule("record", every=0.2, input={"path": path, "label": "tick"})
    engine.schedule("record", every=0.2, input={"path": path, "label": "tick"})  # idempotent
    deadline = time.time() + T
    while len(h.lines(path)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert engine.unschedule("record")
    assert not engine.unschedule("record")
    ids = [t.execution_id for t in engine.tasks(tag="schedule:record")]
    assert len(ids) >= 2 and all(i.startswith("sched:record:") for i in ids)
    assert len(set(ids)) == len(ids)


def test_monitor_task_streams_every_execution(engine: Engine) -> None:
    stream = engine.monitor_task("add", timeout=T)
    ids = [engine.enqueue("add", {"a": i, "b": 0}) for i in range(3)]
    done: dict[str, TaskEvent] = {}
    for ev in stream:
        if isinstance(ev, TaskSucceeded):
            done[ev.execution_id] = ev
        if len(done) == 3:
            break
    assert set(done) == set(ids)
    assert {d.output["sum"] for d in done.values()} == {0, 1, 2}  # type: ignore[union-attr]


def test_bad_input_clear_errors(engine: Engine) -> None:
    with pytest.raises(TaskNotRegistered, match="'nope'"):
        engine.enqueue("nope")
    with pytest.raises(ConfigError, match="must be a dict"):
        engine.enqueue("add", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="cannot be serialized"):
        engine.enqueue("add", {"f": lambda: 1})
    with pytest.raises(ConfigError, match="unique_policy 'merge'"):
        engine.enqueue("add", {}, unique_key="k", unique_policy="merge")
    with pytest.raises(ConfigError, match="invalid cron"):
        engine.schedule("add", cron="61 * * *")
    with pytest.raises(ConfigError, match="positive"):
        engine.schedule("add", every=0)
    with pytest.raises(ConfigError, match="exactly one"):
        engine.schedule("add")
    with pytest.raises(ConfigError, match="rate_limit '10 per minute'"):
        engine.task("x", rate_limit="10 per minute")(h.add)
    with pytest.raises(ConfigError, match="unknown task state"):
        engine.tasks(state="done")
    with pytest.raises(ConfigError, match="no schedule"):
        engine.reschedule("add", every=1)
    assert engine.tasks() == []  # nothing was written


def test_rate_limit_parsing() -> None:
    from actorflow.tasks import parse_rate_limit

    assert parse_rate_limit("100/m").per == 60 and parse_rate_limit("100/m").count == 100
    assert parse_rate_limit("10/30s").per == 30
    for bad in ("0/m", "x/m", "5/fortnight", "5"):
        with pytest.raises(ConfigError):
            parse_rate_limit(bad)

