"""Control plane (workers, ping, queue stats, the CLI's workers/queues), lifecycle hooks, FakeTasks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigError, Engine, RetryPolicy, TaskNotRegistered
from actorflow.tasks import (
    EnqueuedInfo,
    FailedInfo,
    RetryInfo,
    StartedInfo,
    SucceededInfo,
    TaskContext,
    TaskFailed,
    TaskFailure,
    TaskQueued,
    TaskResult,
    TaskSucceeded,
)
from actorflow.testing import FakeTasks

from . import _qhandlers as q
from ._handlers import lines

T = 30.0


def _wait_for(cond: Any, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


_BATCH = """
import contextlib, io, json, sys
from actorflow._cli import main
out = []
for argv in json.loads(sys.argv[1]):
    o = io.StringIO()
    with contextlib.redirect_stdout(o):
        code = main(argv)
    out.append([code, o.getvalue()])
print(json.dumps(out))
"""


def _cli(data: Path, *commands: str) -> list[str]:
    """Each `actorflow COMMAND --data-dir data` (with --json if it ends in '+json'), in one subprocess
    (an import of the CLI costs ~1-2 s under load); returns their outputs."""
    argvs = [[c.removesuffix("+json"), "--data-dir", str(data), *(["--json"] if c.endswith("+json") else [])] for c in commands]
    p = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(argvs)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    assert all(code == 0 for code, _ in results), results
    return [out for _, out in results]


@pytest.mark.parametrize("system", ["embedded", "multiproc"])
def test_workers_ping_and_queue_stats_of_a_live_engine_and_the_cli(tmp_path: Path, system: str) -> None:
    data = tmp_path / "d"
    e = Engine(data, system=system, sync=False, shards=2, queues=["default", "reports"], capabilities={"gpu": False})
    e.task(queue="reports")(q.hold)
    e.task()(q.where)
    e.declare_queue("reports", priority=(0, 9))
    log, release = str(tmp_path / "hold.log"), str(tmp_path / "release")
    with e:
        held = [e.enqueue("hold", {"path": log, "release": release}) for _ in range(2)]
        done = e.result(e.enqueue("where", {}), T)
        assert done["queue"] == "default"
        stuck = e.enqueue("where", {}, requires={"gpu": True})
        _wait_for(lambda: len(lines(log)) == 2)
        # exact at once from the embedded host; a shard's running state reaches the journal within ~1 s
        _wait_for(lambda: e.workers()[0].in_flight == {"reports": 2})
        me = e.workers()[0]
        assert me.alive and me.pid == os.getpid() and me.system == system
        assert me.queues == ("default", "reports") and me.capabilities == {"gpu": False}
        assert me.in_flight == {"reports": 2}
        assert time.time() - me.last_heartbeat < 10
        pongs = e.ping()
        assert [p.worker_id for p in pongs] == [f"{me.worker_id}/shard-{i}" for i in range(2)]
        assert all(p.ok and p.latency >= 0 for p in pongs), pongs
        stats = {s.queue: s for s in e.queue_stats()}
        assert stats["reports"].in_flight == 2 and stats["reports"].priority == (0, 9)
        assert stats["default"].depth == 1 and stats["default"].unplaceable == 1 and stats["default"].oldest_age >= 0
        assert stats["default"].rate > 0  # one finished within the last minute
        if system == "embedded":  # the CLI beside the live engine reads the same journal (the same code for both)
            # another process sees a handler running once its run's state record says so (written lazily)
            _wait_for(lambda: [r.state for r in e.journal.get_runs(held)] == ["running", "running"])  # type: ignore[union-attr]
            wjson, qjson, table = _cli(data, "workers+json", "queues+json", "queues")
            workers = [json.loads(ln) for ln in wjson.splitlines()]
            assert workers[0]["worker_id"] == me.worker_id and workers[0]["alive"] and workers[0]["in_flight"] == {"reports": 2}
            queues = {r["queue"]: r for r in map(json.loads, qjson.splitlines())}
            assert queues["reports"]["in_flight"] == 2 and queues["default"]["unplaceable"] == 1
            assert "reports" in table and "unplaceable" in table
        open(release, "w").close()
        assert [e.result(h, T) for h in held] == ["released", "released"]
        assert e.cancel_execution(stuck)
    if system == "embedded":
        wjson, table = _cli(data, "workers+json", "workers")
        after = [json.loads(ln) for ln in wjson.splitlines()]
        assert after[0]["worker_id"] == me.worker_id and not after[0]["alive"] and after[0]["stopped_at"] is not None
        assert "down" in table


def test_hooks_around_enqueue_start_success_failure_retry(tmp_path: Path) -> None:
    e = Engine(tmp_path / "d", sync=False, shards=2)
    e.task(retry=RetryPolicy.linear(2, 0.01, jitter=False))(q.picky)
    e.task(queue="mail")(q.where)
    seen: list[Any] = []
    e.add_task_hook("enqueue", seen.append)
    e.add_task_hook("start", seen.append)

    @e.on_task("success")
    async def on_success(info: SucceededInfo) -> None:  # async hooks are awaited too
        await asyncio.sleep(0)
        seen.append(info)

    e.add_task_hook("failure", seen.append)
    e.add_task_hook("retry", seen.append)

    def broken_hook(info: Any) -> None:
        raise RuntimeError("a broken hook")

    for kind in ("enqueue", "start", "success", "failure", "retry"):
        e.add_task_hook(kind, broken_hook)  # logged, never breaks the task
    with e:
        ok = e.enqueue("picky", {"value": 7}, tags=["t"], priority=2)
        assert e.result(ok, T) == 7
        bad = e.enqueue("picky", {"fail": True})
        with pytest.raises(Exception, match="ValueError: no"):
            e.result(bad, T)
        mail = e.enqueue("where", {})
        e.result(mail, T)
        _wait_for(lambda: sum(isinstance(s, SucceededInfo) for s in seen) == 2)
    mine = [s for s in seen if s.execution_id == ok]
    assert mine[0] == EnqueuedInfo(ok, "picky", "default", {"value": 7}, 2, ("t",), {})
    assert mine[1] == StartedInfo(ok, "picky", "default", 1)
    assert isinstance(mine[2], SucceededInfo) and mine[2].output == 7 and mine[2].duration >= 0
    kinds = [type(s).__name__ for s in seen if s.execution_id == bad]
    assert kinds == ["EnqueuedInfo", "StartedInfo", "RetryInfo", "StartedInfo", "FailedInfo"]
    failed = [s for s in seen if isinstance(s, (FailedInfo, RetryInfo))]
    assert all("ValueError: no" in s.error for s in failed) and [s.attempt for s in failed] == [1, 2]
    assert [s.queue for s in seen if s.execution_id == mail] == ["mail", "mail", "mail"]
    with pytest.raises(ConfigError, match="unknown task hook 'done'"):
        e.add_task_hook("done", print)


# --- FakeTasks ----------------------------------------------------------------------------------
def signup(tasks: Any, email: str) -> str:
    """'Service code' under test: enqueues through whatever it is given (an Engine or a FakeTasks)."""
    return str(tasks.enqueue("send_welcome", {"email": email}, tags=["signup"], queue="emails"))


def _send_welcome(ctx: TaskContext, input: dict[str, Any]) -> Any:
    if ctx.attempt == 1:
        return TaskResult.retry_later()
    return {"sent": input["email"], "attempt": ctx.attempt}


def test_fake_tasks_records_and_runs_inline() -> None:
    fake = FakeTasks()
    fake.task(name="send_welcome", retry=RetryPolicy.linear(3, 60, jitter=False))(_send_welcome)
    events: list[Any] = []
    fake.add_task_hook("retry", events.append)
    eid = signup(fake, "a@b.c")
    rec = fake.assert_enqueued("send_welcome", {"email": "a@b.c"}, queue="emails", tags=("signup",))
    assert rec.execution_id == eid
    assert fake.result(eid) == {"sent": "a@b.c", "attempt": 2}  # retried inline, the 60 s backoff not slept
    assert fake.task_status(eid) == TaskSucceeded(eid, {"sent": "a@b.c", "attempt": 2})
    assert [type(x).__name__ for x in events] == ["RetryInfo"]
    with pytest.raises(AssertionError, match=r"(?s)expected one enqueue of 'send_welcome'.*found 0.*a@b\.c"):
        fake.assert_enqueued("send_welcome", {"email": "x@y.z"})
    with pytest.raises(TaskNotRegistered):
        fake.enqueue("nope")
    with pytest.raises(ConfigError, match="input must be a dict"):
        fake.enqueue("send_welcome", [1])  # type: ignore[arg-type]


def test_fake_tasks_record_only_failures_unique_and_of_engine(tmp_path: Path) -> None:
    e = Engine(tmp_path / "d")  # never opened: FakeTasks.of takes its tasks, routes and hooks
    e.task(name="send_welcome")(_send_welcome)
    e.route("bulk", task="send_*")
    e.declare_queue("bulk", priority=(0, 1))

    @e.task(name="refuse")
    async def refuse(ctx: TaskContext, input: dict[str, Any]) -> Any:
        return TaskResult.failure("bad request")

    fake = FakeTasks.of(e, run=False)
    a = fake.enqueue("send_welcome", {"email": "a"}, unique_key="u")
    assert fake.enqueue("send_welcome", {"email": "b"}, unique_key="u") == a  # keep: the queued one
    assert fake.enqueued_for("send_welcome")[0].queue == "bulk"
    with pytest.raises(ConfigError, match="outside queue 'bulk'"):
        fake.enqueue("send_welcome", {}, priority=5)
    r = fake.enqueue("refuse")
    assert fake.task_status(r) == TaskQueued(r)
    assert fake.run_pending() == [a, r]
    assert fake.task_status(r) == TaskFailed(r, "bad request")
    with pytest.raises(TaskFailure, match="bad request"):
        fake.result(r)
    assert isinstance(fake.task_status(a), TaskFailed)  # no retry policy: retry_later fails it


def test_hooks_travel_to_the_shard_processes_under_multiproc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = str(tmp_path / "hooks.log")
    monkeypatch.setenv("AF_HOOK_LOG", log)
    e = Engine(tmp_path / "d", system="multiproc", sync=False, shards=2)
    e.task()(q.where)
    for kind in ("enqueue", "start", "success"):
        e.add_task_hook(kind, q.file_hook)
    with e:
        with pytest.raises(ConfigError, match="before engine.open"):
            e.add_task_hook("start", q.file_hook)
        eid = e.enqueue("where", {})
        shard_pid = e.result(eid, T)["pid"]
        _wait_for(lambda: len(lines(log)) == 3)
    assert sorted(lines(log)) == sorted([f"EnqueuedInfo {eid} {os.getpid()}", f"StartedInfo {eid} {shard_pid}",
                                         f"SucceededInfo {eid} {shard_pid}"])
    assert shard_pid != os.getpid()
