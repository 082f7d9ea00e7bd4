"""rate_limit="N/period" holds executions to that rate: checked on the grant times the limit's owner
journals with each execution's dispatch signal (on the clock it decides by), never on wall-clock timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine
from actorflow.tasks import TaskQueued, parse_rate_limit
from actorflow.testing import MockClock, memory_engine

from . import _handlers as h

T = 30.0


def grant_time(engine: Engine, execution_id: str) -> float:
    """When the dispatcher granted this execution its start (the payload of its dispatch signal)."""
    got = [e.data["payload"]["granted_at"] for e in engine.history(execution_id)
           if e.kind == "signal_received" and e.name == "actorflow.dispatch"]
    assert len(got) == 1, (execution_id, got)  # one grant per execution, never two
    return float(got[0])


def most_in_any_window(times: list[float], per: float) -> int:
    """The largest number of grants inside any half-open window [t, t + per)."""
    ts = sorted(times)
    return max(sum(1 for u in ts[i:] if u < t + per - 1e-9) for i, t in enumerate(ts))


def test_rate_limit_holds_on_the_engine_clock() -> None:
    """MockClock without autojump: time moves only when the test says, so every grant time is exact."""
    clock = MockClock()
    engine = memory_engine(clock=clock)

    @engine.task(name="rl", rate_limit="3/m")
    def rl(ctx: Any, input: dict[str, Any]) -> int:
        return int(input["i"])

    with engine:
        t0 = clock.now()
        ids = [engine.enqueue("rl", {"i": i}) for i in range(8)]
        assert [engine.result(i, T) for i in ids[:3]] == [0, 1, 2]  # the first window's 3, in enqueue order
        assert all(isinstance(engine.task_status(i), TaskQueued) for i in ids[3:])
        clock.advance(30)  # half a window later: still 3 in the last 60 s, nothing may start
        clock.advance(30)
        assert [engine.result(i, T) for i in ids[3:6]] == [3, 4, 5]
        assert all(isinstance(engine.task_status(i), TaskQueued) for i in ids[6:])
        clock.advance(60)
        assert [engine.result(i, T) for i in ids[6:]] == [6, 7]
        times = [grant_time(engine, i) for i in ids]
    assert [t - t0 for t in times] == [0.0] * 3 + [60.0] * 3 + [120.0] * 2
    assert most_in_any_window(times, 60.0) == 3


@pytest.fixture(params=["embedded", "multiproc"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    e = h.register(Engine(tmp_path / "data", system=request.param, sync=False, shards=2))
    with e:
        yield e


def test_rate_limit_holds_across_processes(engine: Engine, tmp_path: Path) -> None:
    """'2/s' on the real clock: 5 executions take at least 2 s, whichever process runs them; checked on
    the dispatcher's own grant times (no bound on how late a grant may be: the machine may be slow)."""
    limit = parse_rate_limit("2/s")
    path = str(tmp_path / "rated")
    ids = [engine.enqueue("rated", {"path": path, "label": str(i)}) for i in range(5)]
    assert [engine.result(i, T)["label"] for i in ids] == [str(i) for i in range(5)]
    times = [grant_time(engine, i) for i in ids]
    assert most_in_any_window(times, limit.per) <= limit.count
    assert sorted(times) == times  # granted in enqueue order (same priority)
    assert times[-1] - times[0] >= 2 * limit.per - 1e-6  # the 5th grant waited for two windows to pass
    assert sorted(h.lines(path)) == [str(i) for i in range(5)]  # each ran once
