"""`engine.dashboard()`: served from inside the service, acting through the engine itself."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from actorflow import ConfigError
from actorflow.testing import memory_engine

from .conftest import http


def test_served_by_the_engine_a_signal_applies_at_once_and_close_stops_it() -> None:
    engine = memory_engine()

    @engine.workflow(name="hold")
    async def hold(ctx: Any) -> Any:
        return await ctx.wait_signal("go")

    with pytest.raises(ConfigError, match="open the engine"):
        engine.dashboard(port=0)
    with engine:
        handle = engine.start("hold", run_id="h")
        board = engine.dashboard(port=0)
        assert board.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        code, page = http(board.url + "/runs/h")
        assert code == 200 and "Served by the engine itself" in page
        token = page.split('name="csrf" value="')[1].split('"')[0]
        code, _ = http(board.url + "/actions/signal", {"run_id": "h", "name": "go", "payload": '{"n": 7}', "csrf": token})
        assert code == 303
        assert handle.result(timeout=10) == {"n": 7}  # no inbox in between: the engine's own signal()
        code, body = http(board.url + "/actions/signal", {"run_id": "h", "name": "go", "csrf": token})
        assert code == 409 and "already finished" in body
        code, body = http(board.url + "/api/runs")
        assert code == 200 and '"run_id":"h"' in body
        port = board.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # engine.close() stopped the server


def test_served_by_the_engine_fork_and_requeue_call_the_engine() -> None:
    from actorflow.tasks import TaskResult

    engine = memory_engine()
    tries: list[int] = []

    @engine.workflow(name="twice")
    async def twice(ctx: Any, n: int) -> int:
        a = await ctx.step("one", lambda: n + 1)
        return int(await ctx.step("two", lambda: a * 2))

    @engine.task("flaky")
    def flaky(ctx: Any, input: dict[str, Any]) -> Any:
        tries.append(1)
        return TaskResult.failure("no") if len(tries) == 1 else "ok"

    with engine:
        assert engine.start("twice", 3, run_id="t").result(timeout=10) == 8
        dead = engine.enqueue("flaky", {})
        for _ in engine.monitor_execution(dead, timeout=10):
            pass  # until its final event: failed
        assert [d.execution_id for d in engine.dead_letters()] == [dead]
        board = engine.dashboard(port=0)
        code, page = http(board.url + "/runs/t")
        assert code == 200 and 'id="fork-form"' in page and '<option value="2" selected>' in page
        token = page.split('name="csrf" value="')[1].split('"')[0]
        code, _ = http(board.url + "/actions/fork", {"run_id": "t", "from_step": "1", "new_run_id": "t2", "csrf": token})
        assert code == 303
        assert engine.result("t2", timeout=10) == 8  # loaded at once by engine.fork(), step "one" replayed
        assert [e.name for e in engine.history("t2") if e.kind == "step_completed"] == ["one", "two"]
        code, body = http(board.url + "/tasks/dead-letters")
        assert code == 200 and f'data-execution="{dead}"' in body
        code, _ = http(board.url + "/actions/requeue", {"run_id": dead, "csrf": token})
        assert code == 303
        (again,) = [d for d in engine.tasks("flaky") if d.execution_id != dead]
        assert engine.result(again.execution_id, timeout=10) == "ok"
        assert engine.dead_letters() == []
        code, body = http(board.url + "/actions/requeue", {"run_id": dead, "csrf": token})
        assert code == 400 and "already requeued" in body
