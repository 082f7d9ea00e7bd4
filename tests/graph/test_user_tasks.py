"""User tasks: a node waiting for a human decision (a signal), with a timeout and an escalation edge."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actorflow import MockClock, RunState, WorkflowFailed
from actorflow.graph import ExecutorRegistry, GraphRunner, GraphTaskFailed
from actorflow.testing import memory_engine

from .conftest import TIMEOUT


def approval_graph(timeout: float | None = 3600.0, escalate: bool = True) -> dict[str, Any]:
    config: dict[str, Any] = {"signal": "approval", "port_from": "decision"}
    if timeout is not None:
        config["timeout"] = timeout
    edges = [
        {"from": "prepare", "to": "manager"},
        {"from": "manager", "to": "process", "port": "approved"},
        {"from": "manager", "to": "rejected", "port": "rejected"},
    ]
    if escalate:
        edges.append({"from": "manager", "to": "escalate", "port": "timeout"})
    nodes = [
        {"id": "prepare", "type": "test.echo", "config": {"output": {"amount": 5000}}},
        {"id": "manager", "type": "graph.user_task", "config": config},
        {"id": "process", "type": "test.echo"},
        {"id": "rejected", "type": "test.echo"},
    ]
    if escalate:
        nodes.append({"id": "escalate", "type": "test.echo"})
    return {"nodes": nodes, "edges": edges}


def wait_for(pred: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_the_decision_arrives_as_a_signal_and_picks_the_port(registry: ExecutorRegistry) -> None:
    clock = MockClock()  # no autojump: the timeout cannot fire on its own while we look
    engine = memory_engine(clock)
    runner = GraphRunner(engine, registry)
    with engine:
        handle = runner.start(approval_graph(), {"employee": "ann"}, run_id="exp-1")
        wait_for(lambda: handle.status().state == RunState.WAITING, "the user task to wait")
        clock.advance(3599)  # just inside the deadline
        engine.signal("exp-1", "approval", {"decision": "rejected", "comment": "too much"})
        result = handle.result(timeout=TIMEOUT)
    assert result["visited"] == ["prepare", "manager", "rejected"]
    assert result["output"]["comment"] == "too much" and result["output"]["amount"] == 5000


def test_timeout_takes_the_escalation_edge_with_mock_clock(registry: ExecutorRegistry) -> None:
    clock = MockClock()
    engine = memory_engine(clock)
    runner = GraphRunner(engine, registry)
    with engine:
        started = clock.now()
        handle = runner.start(approval_graph(timeout=2 * 86400), run_id="exp-2")
        wait_for(lambda: handle.status().state == RunState.WAITING, "the user task to wait")
        # the durable timeout is due exactly two days after the task was reached
        [due] = [ev.data for ev in engine.history("exp-2") if ev.kind == "wait_started"]
        assert due == started + 2 * 86400
        clock.advance(2 * 86400)
        result = handle.result(timeout=TIMEOUT)
        kinds = [ev.kind for ev in engine.history("exp-2")]
    assert result["visited"] == ["prepare", "manager", "escalate"]
    assert result["output"]["timed_out"] is True
    assert "wait_timeout" in kinds and "signal_received" not in kinds


def test_timeout_without_an_escalation_edge_fails_the_run(registry: ExecutorRegistry) -> None:
    engine = memory_engine()  # autojump: a two-day timeout passes at once
    runner = GraphRunner(engine, registry)
    with engine, pytest.raises(WorkflowFailed) as info:
        runner.run(approval_graph(timeout=172800, escalate=False), timeout=TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, GraphTaskFailed) and cause.node == "manager" and cause.error_type == "timeout"


def test_a_signal_sent_before_the_task_is_reached_is_kept(runner: GraphRunner, engine: Any) -> None:
    g = approval_graph(timeout=None, escalate=False)
    handle = runner.start(g, run_id="early")
    engine.signal("early", "approval", {"decision": "approved", "by": "bo"})
    assert handle.result(timeout=TIMEOUT)["visited"] == ["prepare", "manager", "process"]


def test_a_decision_without_an_edge_is_refused_and_the_task_keeps_waiting(runner: GraphRunner, engine: Any) -> None:
    handle = runner.start(approval_graph(timeout=None, escalate=False), run_id="picky")
    engine.signal("picky", "approval", {"decision": "maybe"})
    engine.signal("picky", "approval", "yes")
    engine.signal("picky", "approval", {"decision": "approved"})
    result = handle.result(timeout=TIMEOUT)
    assert result["visited"] == ["prepare", "manager", "process"]
    reasons = [e["data"]["reason"] for e in result["events"] if e["event_type"] == "user_task_decision_rejected"]
    assert len(reasons) == 2 and "'maybe' has no edge" in reasons[0] and "must be a JSON object" in reasons[1]
