"""Engine: registration, start (durable, idempotent per run id), start_many, astart, run/arun, life cycle."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import actorflow
from actorflow import ConfigError, Engine, RunConflict, WorkflowNotRegistered
from storage._journal import OP_CREATE_RUN

from .conftest import TIMEOUT, Calls, FileGate, wait_state, wait_until


def test_public_names_importable() -> None:
    for name in actorflow.__all__:
        assert hasattr(actorflow, name), name
    for name in ("Engine", "RunHandle", "WorkflowContext", "RetryPolicy", "RunState", "RunStatus", "Event", "current_step"):
        assert name in actorflow.__all__


def test_workflow_decorator_returns_function_unchanged_and_names(engine: Engine) -> None:
    async def wf(ctx: Any) -> int:
        return 1

    assert engine.workflow()(wf) is wf
    assert engine.run(wf, timeout=TIMEOUT) == 1
    assert engine.status(engine.start(wf).run_id).workflow == wf.__qualname__

    async def other(ctx: Any) -> int:
        return 2

    engine.workflow(name="custom-name")(other)
    h = engine.start("custom-name")
    assert h.result(TIMEOUT) == 2
    assert h.status().workflow == "custom-name"


def test_non_async_workflow_is_config_error(engine: Engine) -> None:
    def sync_wf(ctx: Any) -> None:
        return None

    with pytest.raises(ConfigError):
        engine.workflow()(sync_wf)

    async def agen(ctx: Any):  # an async generator is not an async def coroutine function
        yield 1

    with pytest.raises(ConfigError):
        engine.workflow()(agen)


def test_unregistered_workflow(engine: Engine) -> None:
    async def stranger(ctx: Any) -> None:
        return None

    with pytest.raises(WorkflowNotRegistered) as ei:
        engine.start("no-such-workflow")
    assert ei.value.name == "no-such-workflow"
    with pytest.raises(WorkflowNotRegistered):
        engine.start(stranger)
    with pytest.raises(WorkflowNotRegistered):
        engine.run("no-such-workflow")
    before = len(engine.runs())
    with pytest.raises(WorkflowNotRegistered):
        engine.start_many("no-such-workflow", [()])
    assert len(engine.runs()) == before  # nothing written


def test_engine_not_open_is_config_error(new_engine: Any) -> None:
    e = new_engine(open=False)

    @e.workflow()
    async def wf(ctx: Any) -> int:
        return 1

    with pytest.raises(ConfigError):
        e.start(wf)
    with e:
        assert e.is_open
        assert e.run(wf, timeout=TIMEOUT) == 1
    assert not e.is_open
    with pytest.raises(ConfigError):
        e.start(wf)
    e.close()  # closing twice is harmless


def test_bad_engine_config() -> None:
    with pytest.raises(ConfigError):
        Engine(None, passivate_after=-1)
    with pytest.raises(ConfigError):
        Engine(None, system="bogus")


def test_start_is_durable_before_it_returns(engine: Engine, tmp_path: Any) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any, x: int) -> int:
        return await ctx.step("hold", lambda: gate(x))

    h = engine.start(wf, 7, run_id="durable-1")
    # the journal has the run and its start event right away, before the run did anything
    rec = engine.journal.get_run("durable-1")
    assert rec is not None and rec.workflow == wf.__qualname__
    ev = engine.history("durable-1")[0]
    assert (ev.seq, ev.kind, ev.data) == (0, "run_started", {"args": (7,)})
    gate.release.set()
    assert h.result(TIMEOUT) == 7


def test_default_run_id_is_a_time_ordered_uuid7(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> str:
        return ctx.run_id

    ids = []
    for _ in range(3):
        h = engine.start(wf)
        u = uuid.UUID(h.run_id)
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert h.result(TIMEOUT) == h.run_id
        ids.append(h.run_id)
    ids += [h.run_id for h in engine.start_many(wf, [()] * 5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # started later sorts later, also within one millisecond
    ms = uuid.UUID(ids[0]).int >> 80
    assert abs(ms / 1000 - time.time()) < 60


def test_same_run_id_same_workflow_returns_existing_run(engine: Engine, tmp_path: Any) -> None:
    calls = Calls(tmp_path)
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def wf(ctx: Any, x: int) -> int:
        await ctx.step("hold", gate)
        return await ctx.step("record", lambda: calls.append(x) or x)

    h1 = engine.start(wf, 1, run_id="same")
    assert gate.entered.wait(TIMEOUT)
    h2 = engine.start(wf, 2, run_id="same")  # while running
    assert h2.run_id == "same"
    gate.release.set()
    assert h1.result(TIMEOUT) == 1
    assert h2.result(TIMEOUT) == 1  # the original args stand
    h3 = engine.start(wf, 3, run_id="same")  # after it finished
    assert h3.result(TIMEOUT) == 1
    assert engine.run(wf, 4, run_id="same", timeout=TIMEOUT) == 1
    assert calls == [1]
    assert gate.calls == 1
    assert [e.kind for e in engine.history("same")].count("run_started") == 1
    assert len(engine.runs(workflow=wf.__qualname__)) == 1


def test_same_run_id_other_workflow_conflicts(engine: Engine) -> None:
    @engine.workflow()
    async def first(ctx: Any) -> str:
        return "first"

    @engine.workflow()
    async def second(ctx: Any) -> str:
        return "second"

    assert engine.run(first, run_id="shared", timeout=TIMEOUT) == "first"
    with pytest.raises(RunConflict) as ei:
        engine.start(second, run_id="shared")
    err = ei.value
    assert err.run_id == "shared"
    assert err.existing == first.__qualname__
    assert err.requested == second.__qualname__
    with pytest.raises(RunConflict):
        engine.start_many(second, [()], run_ids=["shared"])
    assert engine.result("shared", TIMEOUT) == "first"
    assert engine.status("shared").workflow == first.__qualname__


def test_run_and_handle_api(engine: Engine) -> None:
    @engine.workflow()
    async def add(ctx: Any, a: int, b: int) -> int:
        return a + b

    assert engine.run(add, 2, 3, timeout=TIMEOUT) == 5
    assert engine.run(add.__qualname__, 4, 5, run_id="by-name", timeout=TIMEOUT) == 9
    h = engine.start(add, 1, 1)
    assert repr(h) == f"RunHandle({h.run_id!r})"
    assert h.result(timeout=TIMEOUT) == 2
    assert h.status().state == actorflow.RunState.COMPLETED
    assert h.status().progress == 1.0
    assert h.cancel() is False
    assert [e.kind for e in h.history()][-1] == "run_completed"


def test_start_many_is_one_commit(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = engine.journal  # starts are written by this process on both systems
    assert journal is not None
    create_batches: list[int] = []  # CREATE_RUN ops per write transaction
    # memory: _apply(batch), one batch at a time; LMDB: _write(batches), one transaction (one fsync)
    method = "_write" if hasattr(journal, "_write") else "_apply"
    apply = getattr(journal, method)

    def counting(batches: Any, *a: Any, **kw: Any) -> Any:
        n = sum(1 for b in (batches if isinstance(batches, list) else [batches]) for op in b.ops if op[0] == OP_CREATE_RUN)
        if n:
            create_batches.append(n)
        return apply(batches, *a, **kw)

    monkeypatch.setattr(journal, method, counting)

    @engine.workflow()
    async def square(ctx: Any, x: int) -> int:
        return await ctx.step("sq", lambda: x * x)

    handles = engine.start_many(square, [(i,) for i in range(50)])
    assert create_batches == [50]
    assert len({h.run_id for h in handles}) == 50
    assert [h.result(TIMEOUT) for h in handles] == [i * i for i in range(50)]
    named = engine.start_many(square.__qualname__, [(2,), (3,)], run_ids=["m-2", "m-3"])
    assert [h.run_id for h in named] == ["m-2", "m-3"]
    assert [h.result(TIMEOUT) for h in named] == [4, 9]
    # again with the same ids: the existing runs, original args
    again = engine.start_many(square, [(10,), (11,)], run_ids=["m-2", "m-3"])
    assert [h.result(TIMEOUT) for h in again] == [4, 9]
    with pytest.raises(ConfigError):
        engine.start_many(square, [(1,), (2,)], run_ids=["only-one"])


def test_astart_many_concurrent_and_arun(engine: Engine) -> None:
    @engine.workflow()
    async def double(ctx: Any, x: int) -> int:
        return await ctx.step("double", lambda: 2 * x)

    async def main() -> tuple[list[Any], list[int], int]:
        handles = await asyncio.gather(*(engine.astart(double, i) for i in range(100)))
        results = await asyncio.gather(*(h.aresult(TIMEOUT) for h in handles))
        one = await engine.arun(double, 21, run_id="arun-1", timeout=TIMEOUT)
        return handles, results, one

    handles, results, one = asyncio.run(main())
    assert results == [2 * i for i in range(100)]
    assert len({h.run_id for h in handles}) == 100
    assert one == 42
    assert engine.result("arun-1") == 42


def test_astart_same_id_and_conflict(engine: Engine) -> None:
    @engine.workflow()
    async def a(ctx: Any, x: int) -> int:
        return x

    @engine.workflow()
    async def b(ctx: Any, x: int) -> int:
        return -x

    async def main() -> Any:
        h1 = await engine.astart(a, 1, run_id="as-1")
        h2 = await engine.astart(a, 2, run_id="as-1")
        assert await h2.aresult(TIMEOUT) == 1
        with pytest.raises(RunConflict):
            await engine.astart(b, 3, run_id="as-1")
        return await h1.aresult(TIMEOUT)

    assert asyncio.run(main()) == 1


def test_result_timeout(engine: Engine) -> None:
    @engine.workflow()
    async def forever(ctx: Any) -> None:
        await ctx.wait_signal("never")

    h = engine.start(forever)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await h.aresult(timeout=0.05)

    asyncio.run(main())
    assert h.cancel() is True


def test_bad_workflow_arguments_fail_the_run(engine: Engine) -> None:
    @engine.workflow()
    async def one_arg(ctx: Any, x: int) -> int:
        return x

    with pytest.raises(actorflow.WorkflowFailed) as ei:
        engine.run(one_arg, 1, 2, timeout=TIMEOUT)
    assert isinstance(ei.value.__cause__, TypeError)
    assert len(engine.runs(state="failed", workflow=one_arg.__qualname__)) == 1


def test_close_with_running_steps_abandons_them_after_grace(tmp_path: Any, new_engine: Any) -> None:
    gate = FileGate(tmp_path)

    async def wf(ctx: Any) -> int:
        return await ctx.step("hold", lambda: gate(5))

    e1 = new_engine(tmp_path / "data", clock=actorflow.MockClock(autojump=True))
    e1.workflow(name="wf")(wf)
    e1.start("wf", run_id="g-1")
    assert gate.entered.wait(TIMEOUT)
    e1.close(grace=0.05)  # the step is still running: abandoned
    gate.release.set()
    e2 = new_engine(tmp_path / "data", clock=actorflow.MockClock(autojump=True), open=False)
    e2.workflow(name="wf")(wf)
    e2.open()
    assert e2.result("g-1", TIMEOUT) == 5
    assert gate.calls == 2  # at-least-once: it ran again after reopening
    kinds = [e.kind for e in e2.history("g-1")]
    assert kinds.count("step_completed") == 1


def test_concurrent_astarts_share_commits(tmp_path: Any, new_engine: Any) -> None:
    engine = new_engine(tmp_path / "data", clock=actorflow.MockClock(autojump=True), open=False)

    @engine.workflow()
    async def wf(ctx: Any, x: int) -> int:
        return x

    engine.open()
    journal = engine.journal
    create_txns: list[int] = []
    orig_write = journal._write  # type: ignore[attr-defined]

    def write(batches: list[Any], precise: bool = False) -> Any:
        n = sum(1 for b in batches for op in b.ops if op[0] == OP_CREATE_RUN)
        if n:
            create_txns.append(n)
        return orig_write(batches, precise)

    journal._write = write  # type: ignore[attr-defined]

    async def main() -> list[int]:
        handles = await asyncio.gather(*(engine.astart(wf, i) for i in range(100)))
        return await asyncio.gather(*(h.aresult(TIMEOUT) for h in handles))

    assert asyncio.run(main()) == list(range(100))
    assert sum(create_txns) == 100
    assert len(create_txns) < 50, create_txns  # many starts per LMDB transaction (one fsync each)


def test_astart_burst_commits_in_chunks_and_a_bad_payload_fails_alone(
    tmp_path: Any, new_engine: Any, monkeypatch: Any
) -> None:
    from actorflow import PayloadError, _aio

    monkeypatch.setattr(_aio, "START_CHUNK", 8)
    engine = new_engine(tmp_path / "data", clock=actorflow.MockClock(autojump=True), open=False)

    @engine.workflow()
    async def wf(ctx: Any, x: Any) -> Any:
        return x

    engine.open()
    journal = engine.journal
    batch_sizes: list[int] = []
    orig_submit = journal.submit

    def submit(batch: Any) -> Any:
        batch_sizes.append(sum(1 for op in batch.ops if op[0] == OP_CREATE_RUN))
        return orig_submit(batch)

    journal.submit = submit  # type: ignore[method-assign]

    async def main() -> list[Any]:
        args: list[Any] = list(range(30))
        args[11] = threading.Lock()  # cannot be journaled
        got = await asyncio.gather(*(engine.astart(wf, a) for a in args), return_exceptions=True)
        return [g if isinstance(g, BaseException) else await g.aresult(TIMEOUT) for g in got]

    out = asyncio.run(main())
    assert isinstance(out[11], PayloadError)
    assert [x for i, x in enumerate(out) if i != 11] == [i for i in range(30) if i != 11]
    assert sum(batch_sizes) == 29
    assert max(batch_sizes) <= 8 and len(batch_sizes) >= 4, batch_sizes  # chunked, not one batch of 30


def test_astart_cancelled_caller_still_gets_its_durable_run_started(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any, x: int) -> int:
        return x * 3

    async def main() -> None:
        task = asyncio.ensure_future(engine.astart(wf, 7, run_id="cancelled-caller"))
        await asyncio.sleep(0)  # the task queued its start for this iteration's commit
        task.cancel()  # before the commit: the start is journaled all the same
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # the commit was in flight when the caller gave up: it lands, and the run is handed to its host
    wait_until(lambda: any(r.run_id == "cancelled-caller" for r in engine.runs()), what="the start's commit")
    assert engine.result("cancelled-caller", TIMEOUT) == 21


def test_ctx_identity(engine: Engine) -> None:
    @engine.workflow(name="ident")
    async def wf(ctx: Any) -> Any:
        return ctx.run_id, ctx.workflow, ctx.is_replaying, isinstance(ctx, actorflow.WorkflowContext)

    assert engine.run("ident", run_id="who", timeout=TIMEOUT) == ("who", "ident", False, True)


def test_cancel_right_after_start(engine: Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.wait_signal("never")

    for i in range(10):
        h = engine.start(wf, run_id=f"quick-{i}")
        assert h.cancel() is True
        with pytest.raises(actorflow.Cancelled):
            h.result(TIMEOUT)
        assert h.status().state == actorflow.RunState.CANCELLED


def test_open_leaves_the_host_logging_configuration_alone(tmp_path: Any, new_engine: Any) -> None:
    """Thespian replaces logging config unless told not to: the engine must not touch the host's."""
    import logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("Thespian").handlers[:])
    sentinel = logging.NullHandler()
    root.addHandler(sentinel)
    try:
        e = new_engine(tmp_path / "data", open=False)

        @e.workflow()
        async def wf(ctx: Any) -> int:
            return await ctx.step("one", lambda: 1)

        with e:
            assert e.run(wf, timeout=TIMEOUT) == 1
            assert sentinel in root.handlers
            assert root.level == before[1]
        assert list(root.handlers) == before[0] + [sentinel]
        assert logging.getLogger("Thespian").handlers == before[2]
    finally:
        root.removeHandler(sentinel)



def test_one_engine_per_data_dir_across_processes(tmp_path: Any, new_engine: Any) -> None:
    """A second process must not recover (and re-run) the runs an engine already owns."""
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from actorflow import Engine; e = Engine(sys.argv[1]); e.open(); "
         "print('open', flush=True); sys.stdin.read()", str(data)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match=f"pid {child.pid}"):
            new_engine(data)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(TIMEOUT)
    e = new_engine(data)  # the kernel released the dead holder's lock
    assert e.runs() == []


def test_cli_reads_a_journal_beside_nothing_else(tmp_path: Any, capsys: Any, new_engine: Any) -> None:
    import json

    from actorflow._cli import main

    e = new_engine(tmp_path / "d", open=False)

    @e.workflow(name="one")
    async def one(ctx: Any) -> int:
        return await ctx.step("s", lambda: 1)

    with e:
        e.run("one", run_id="r1", timeout=TIMEOUT)
    assert main(["runs", "--data-dir", str(tmp_path / "d")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["state"]) for r in rows] == [("r1", "completed")]
    assert main(["history", "r1", "--data-dir", str(tmp_path / "d")]) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["run_started", "step_completed", "run_completed"]
    assert main(["history", "nope", "--data-dir", str(tmp_path / "d")]) == 3  # not found (actorflow.cli exit codes)
    assert "no workflow run with id 'nope'" in capsys.readouterr().err



def test_result_of_a_run_this_engine_started_needs_no_journal_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    gate = FileGate(tmp_path)

    @engine.workflow()
    async def held(ctx: Any) -> str:
        return await ctx.step("wait", lambda: gate("released"))  # type: ignore[no-any-return]

    h = engine.start(held)
    journal = engine.journal
    assert journal is not None
    reads: list[str] = []
    orig = journal.get_run
    monkeypatch.setattr(journal, "get_run", lambda run_id: reads.append(run_id) or orig(run_id))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(h.result(TIMEOUT)))
    waiter.start()
    notifier = engine._runtime().notifier
    wait_until(lambda: h.run_id in notifier._waiters, what="result() waiting")
    gate.release.set()
    waiter.join(TIMEOUT)
    assert got == ["released"]
    assert reads == []  # it knew the run was unfinished without asking the journal


def test_result_of_a_fresh_handle_whose_outcome_left_memory_reads_the_journal(
    new_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actorflow._runtime import Notifier

    monkeypatch.setattr(Notifier, "RECENT", 2)

    async def quick(ctx: Any, i: int) -> int:
        return i

    engine = new_engine(workflows=[quick])  # its own: the cache of recent outcomes starts empty

    first = engine.start(quick, 1)
    wait_state(engine, first.run_id, "completed")
    for i in range(3):  # push the first outcome out of the in-memory cache
        assert engine.run(quick, 10 + i, timeout=TIMEOUT) == 10 + i
    assert first.run_id not in engine._runtime().notifier.recent
    assert first.result(TIMEOUT) == 1


def test_close_leaves_no_step_threads_behind(tmp_path: Any, new_engine: Any) -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = new_engine(tmp_path / "af", step_threads=8, open=False)

    @engine.workflow(name="one")
    async def one(ctx: Any) -> int:
        return await ctx.step("s", lambda: 1)  # type: ignore[no-any-return]

    with engine:
        assert engine.run("one") == 1
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == []
