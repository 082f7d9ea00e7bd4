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
