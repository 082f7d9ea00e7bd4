"""The control inbox's "requeue" command (what the standalone dashboard's requeue button writes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine, RunNotFound
from actorflow import _control as control
from actorflow.errors import ConfigError
from actorflow.tasks import TaskResult
from storage import LmdbJournal

_tries: list[int] = []


def _register(engine: Engine) -> None:
    @engine.task("flaky")
    def flaky(ctx: Any, input: dict[str, Any]) -> Any:
        _tries.append(1)
        return TaskResult.failure("first time unlucky") if len(_tries) == 1 else "ok"

    @engine.workflow(name="plain")
    async def plain(ctx: Any) -> int:
        return 1


def test_a_requeue_queued_without_an_engine_is_applied_at_the_next_open(tmp_path: Path) -> None:
    _tries.clear()
    e1 = Engine(str(tmp_path))
    _register(e1)
    with e1:
        dead = e1.enqueue("flaky", {"x": 1})
        for _ in e1.monitor_execution(dead, timeout=30):
            pass
        e1.start("plain", run_id="p").result(timeout=30)
    with LmdbJournal(tmp_path) as j:
        for bad, err in (("nope", RunNotFound), ("p", ConfigError)):
            with pytest.raises(err):
                control.submit_requeue(j, bad)
        assert control.pending(j) == []  # refused before anything was written
        cmd = control.submit_requeue(j, dead)
        with pytest.raises(ConfigError, match="already waiting"):
            control.submit_requeue(j, dead)
        batch = j.batch()  # a second one behind it, as a racing writer might leave
        batch.kv_put(control.CONTROL_NS, cmd.id + "-2", cmd.to_record())
        j.commit(batch)
    e2 = Engine(str(tmp_path))
    _register(e2)
    with e2:
        journal = e2.journal
        assert journal is not None
        deadline = time.monotonic() + 30
        while len(done := control.outcomes(journal, dead)) < 2:  # the engine drains its inbox on a thread
            assert time.monotonic() < deadline, control.pending(journal)
            time.sleep(0.02)
        assert len(done) == 2 and control.pending(journal) == []
        first = next(o for o in done if o.id == cmd.id)
        assert first.ok and first.detail.startswith("requeued as ")
        again = first.detail.removeprefix("requeued as ")
        assert e2.result(again, timeout=30) == "ok"
        second = next(o for o in done if o.id != cmd.id)
        assert not second.ok and "already requeued" in second.detail  # refused, not stuck in the inbox
        assert e2.dead_letters() == []
