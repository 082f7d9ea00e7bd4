"""Routing by port and condition, parallel split and join, effects, typed executors, retries, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from actorflow import WorkflowFailed
from actorflow.graph import (
    CancelUserTasks,
    ExecutionContext,
    ExecutorRegistry,
    GraphRunError,
    GraphRunner,
    GraphTaskFailed,
    RecordEvent,
    SetOutput,
    TaskExecutor,
    TaskResult,
    TaskSuccess,
    TypedTaskExecutor,
)

from .conftest import TIMEOUT, Echo, Flaky, chain


def echo(registry: ExecutorRegistry) -> Echo:
    ex = registry.get("test.echo")
    assert isinstance(ex, Echo)
    return ex


def test_a_chain_passes_each_output_on(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    result = runner.run(chain("a", "b", "c"), {"order": 7}, timeout=TIMEOUT)
    assert result["visited"] == ["a", "b", "c"] and result["ends"] == ["c"]
    assert result["output"] == {"order": 7, "a": True, "b": True, "c": True}
    assert echo(registry).calls == [("a", {"order": 7}), ("b", {"a": True}), ("c", {"b": True})]


def port_graph(port: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "route", "type": "test.echo", "config": {"port": port, "output": {"routed": port}}},
            {"id": "high", "type": "test.echo"},
            {"id": "low", "type": "test.echo"},
        ],
        "edges": [{"from": "route", "to": "high", "port": "high"}, {"from": "route", "to": "low", "port": "low"}],
    }


@pytest.mark.parametrize("port", ["high", "low"])
def test_routing_by_output_port(runner: GraphRunner, port: str) -> None:
    result = runner.run(port_graph(port), timeout=TIMEOUT)
    assert result["visited"] == ["route", port]


def test_a_port_without_an_edge_fails_the_run_naming_it(runner: GraphRunner) -> None:
    with pytest.raises(WorkflowFailed) as info:
        runner.run(port_graph("sideways"), timeout=TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, GraphRunError) and cause.node == "route" and "'sideways'" in str(cause)


def cond_graph() -> dict[str, Any]:
    return {
        "nodes": [{"id": "start", "type": "test.echo", "config": {"output": {}}}] + [
            {"id": n, "type": "test.echo"} for n in ("big", "medium", "small")
        ],
        "edges": [
            {"from": "start", "to": "big", "condition": {">": [{"var": "amount"}, 10000]}},
            {"from": "start", "to": "small"},
            {"from": "start", "to": "medium", "condition": {"and": [
                {">": [{"var": "amount"}, 1000]}, {"in": [{"var": "currency"}, ["EUR", "USD"]]}]}},
        ],
    }


@pytest.mark.parametrize(
    ("data", "taken"),
    [({"amount": 20000}, "big"), ({"amount": 5000, "currency": "EUR"}, "medium"),
     ({"amount": 5000, "currency": "JPY"}, "small"), ({"amount": "lots"}, "small")],
)
def test_routing_by_condition_first_match_else_default(runner: GraphRunner, data: dict[str, Any], taken: str) -> None:
    assert runner.run(cond_graph(), data, timeout=TIMEOUT)["visited"] == ["start", taken]


def test_no_condition_and_no_default_fails(runner: GraphRunner) -> None:
    g = cond_graph()
    g["edges"] = [e for e in g["edges"] if "condition" in e]
    g["nodes"] = [n for n in g["nodes"] if n["id"] != "small"]
    with pytest.raises(WorkflowFailed, match="no edge condition held"):
        runner.run(g, {"amount": 1}, timeout=TIMEOUT)


def split_join(extra_edges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "split", "type": "test.echo"},
            {"id": "left", "type": "test.echo", "config": {"output": {"l": 1, "shared": "left"}}},
            {"id": "right1", "type": "test.echo", "config": {"output": {"r": 1}}},
            {"id": "right2", "type": "test.echo", "config": {"output": {"r": 2, "shared": "right"}}},
            {"id": "join", "type": "test.echo", "join": True},
        ],
        "edges": [
            {"from": "split", "to": "left"}, {"from": "split", "to": "right1"},
            {"from": "right1", "to": "right2"}, {"from": "left", "to": "join"}, {"from": "right2", "to": "join"},
        ] + (extra_edges or []),
    }


class Branches(TaskExecutor):
    schema_type = "test.branches"
    name = "Report the branches of a join"

    def execute(self, context: ExecutionContext) -> TaskResult:
        return TaskSuccess({"seen": dict(context.branches), "input": dict(context.input),
                            "incoming": [e.id for e in context.incoming_edges]})


def test_parallel_split_runs_branches_together_and_join_waits_for_all(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    registry.register(Branches())
    g = split_join()
    g["nodes"][-1]["type"] = "test.branches"
    result = runner.run(g, timeout=TIMEOUT)
    assert result["visited"] == ["split", "left", "right1", "right2", "join"]  # one wave per level
    assert result["visited"].count("join") == 1
    out = result["output"]
    assert out["seen"] == {"left": {"l": 1, "shared": "left"}, "right2": {"r": 2, "shared": "right"}}
    assert out["input"] == {"l": 1, "shared": "right", "r": 2}  # merged in incoming-edge order: later wins
    assert out["incoming"] == ["left->join", "right2->join"]


def test_without_join_a_merge_node_runs_once_per_arriving_branch(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    g = split_join()
    g["nodes"][-1]["join"] = False
    assert runner.run(g, timeout=TIMEOUT)["visited"].count("join") == 2


def test_an_exclusive_choice_into_a_join_does_not_hang(runner: GraphRunner) -> None:
    g = {
        "nodes": [{"id": "a", "type": "test.echo"}, {"id": "b", "type": "test.echo"}, {"id": "c", "type": "test.echo"},
                  {"id": "j", "type": "test.echo", "join": True}],
        "edges": [{"from": "a", "to": "b", "condition": {"var": "go_b"}}, {"from": "a", "to": "c"},
                  {"from": "b", "to": "j"}, {"from": "c", "to": "j"}],
    }
    assert runner.run(g, {"go_b": True}, timeout=TIMEOUT)["visited"] == ["a", "b", "j"]


class Effects(TaskExecutor):
    schema_type = "test.effects"
    name = "Effects"

    def execute(self, context: ExecutionContext) -> TaskResult:
        return TaskSuccess(
            {"base": 1},
            effects=[SetOutput({"extra": 2}), RecordEvent("audited", {"by": context.node_id}),
                     CancelUserTasks(reason="auto-approved")],
        )


def test_effects_set_output_record_events_and_cancel_user_tasks(engine: Any, runner: GraphRunner, registry: ExecutorRegistry) -> None:
    registry.register(Effects())
    g = {
        "nodes": [
            {"id": "split", "type": "test.echo"},
            {"id": "approve", "type": "graph.user_task", "config": {"signal": "approval"}},
            {"id": "auto", "type": "test.effects"},
            {"id": "after_cancel", "type": "test.echo"},
            {"id": "next", "type": "test.echo"},
        ],
        "edges": [{"from": "split", "to": "approve"}, {"from": "split", "to": "auto"}, {"from": "auto", "to": "next"},
                  {"from": "approve", "to": "after_cancel", "port": "cancelled"}],
    }
    result = runner.run(g, run_id="fx", timeout=TIMEOUT)
    assert result["output"]["extra"] == 2 and result["output"]["base"] == 1
    calls = dict(echo(registry).calls)  # the two run in one wave, on two step threads
    assert calls["next"] == {"base": 1, "extra": 2}
    assert calls["after_cancel"] == {"cancelled": True, "by": "auto", "reason": "auto-approved"}
    assert [e["event_type"] for e in result["events"]] == ["audited", "user_task_cancelled"]
    assert sorted(result["ends"]) == ["after_cancel", "next"]
    # the effects are journaled with the step, so a replay applies the same ones
    steps = {ev.name: ev.data for ev in engine.history("fx") if ev.kind == "step_completed"}
    assert [e["kind"] for e in steps["auto"]["effects"]] == ["set_output", "record_event", "cancel_user_tasks"]
    assert not any(ev.kind == "wait_started" or ev.kind == "signal_received" for ev in engine.history("fx"))


@dataclass(frozen=True)
class Order:
    sku: str
    qty: int


class PriceOrder(TypedTaskExecutor[Order, dict[str, Any]]):
    schema_type = "test.order.price"
    name = "Price order"
    output_ports = ("bulk", "single")

    def from_input(self, input: Mapping[str, Any]) -> Order:
        return Order(str(input["sku"]), int(input["qty"]))

    def execute_typed(self, input: Order, context: ExecutionContext) -> dict[str, Any]:
        if input.sku == "boom":
            raise RuntimeError("pricing service down")
        return {"total": input.qty * 3, "qty": input.qty}

    def to_output(self, output: dict[str, Any]) -> Mapping[str, Any]:
        return {"total": output["total"]}

    def output_port(self, output: dict[str, Any]) -> str | None:
        return "bulk" if output["qty"] >= 10 else "single"


class AsyncTyped(TypedTaskExecutor[int, int]):
    schema_type = "test.async.double"
    name = "Double (async)"

    def from_input(self, input: Mapping[str, Any]) -> int:
        return int(input["total"])

    async def execute_typed(self, input: int, context: ExecutionContext) -> int:
        await asyncio.sleep(0)
        return input * 2

    def to_output(self, output: int) -> Mapping[str, Any]:
        return {"doubled": output}


def typed_graph() -> dict[str, Any]:
    return {
        "nodes": [{"id": "price", "type": "test.order.price"}, {"id": "bulk", "type": "test.async.double"},
                  {"id": "single", "type": "test.echo"}],
        "edges": [{"from": "price", "to": "bulk", "port": "bulk"}, {"from": "price", "to": "single", "port": "single"}],
    }


def test_typed_executors_sync_and_async(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    registry.register(PriceOrder())
    registry.register(AsyncTyped())
    assert runner.run(typed_graph(), {"sku": "x", "qty": 12}, timeout=TIMEOUT)["output"]["doubled"] == 72
    assert runner.run(typed_graph(), {"sku": "x", "qty": 2}, timeout=TIMEOUT)["visited"] == ["price", "single"]


def test_typed_executor_bad_input_is_a_validation_failure_and_errors_are_wrapped(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    registry.register(PriceOrder())
    registry.register(AsyncTyped())
    with pytest.raises(WorkflowFailed) as info:
        runner.run(typed_graph(), {"sku": "x"}, timeout=TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, GraphTaskFailed) and cause.error_type == "validation" and "KeyError" in str(cause)
    with pytest.raises(WorkflowFailed) as info:
        runner.run(typed_graph(), {"sku": "boom", "qty": 1}, timeout=TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, GraphTaskFailed) and cause.error_type == "internal"
    assert "pricing service down" in str(cause) and cause.details and cause.details["exception"] == "RuntimeError"


def flaky_graph(**config: Any) -> dict[str, Any]:
    return {
        "nodes": [{"id": "f", "type": "test.flaky", "config": config,
                   "retry": {"max_attempts": 3, "initial_delay": 0.01, "backoff": "exponential"}},
                  {"id": "ok", "type": "test.echo"}, {"id": "handled", "type": "test.echo"}],
        "edges": [{"from": "f", "to": "ok"}, {"from": "f", "to": "handled", "on_error": ["custom.declined"]}],
    }


def test_retryable_failures_use_the_node_retry_policy(engine: Any, runner: GraphRunner, registry: ExecutorRegistry) -> None:
    flaky = registry.get("test.flaky")
    assert isinstance(flaky, Flaky)
    result = runner.run(flaky_graph(succeed_on=3), run_id="retry", timeout=TIMEOUT)
    assert flaky.attempts == [1, 2, 3] and result["output"]["attempt"] == 3 and result["output"]["was_retry"]
    assert [ev.kind for ev in engine.history("retry")].count("step_attempt_failed") == 2


def test_retries_exhausted_fail_the_run(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    with pytest.raises(WorkflowFailed) as info:
        runner.run(flaky_graph(), timeout=TIMEOUT)
    assert registry.get("test.flaky").attempts == [1, 2, 3]  # type: ignore[attr-defined]
    assert "attempt 3 failed" in str(info.value.__cause__)


def test_permanent_failures_are_not_retried_and_go_to_a_matching_error_edge(runner: GraphRunner, registry: ExecutorRegistry) -> None:
    result = runner.run(flaky_graph(permanent=True, error_type="custom.declined"), timeout=TIMEOUT)
    assert registry.get("test.flaky").attempts == [1]  # type: ignore[attr-defined]
    assert result["visited"] == ["f", "handled"]
    assert result["output"]["error"]["error_type"] == "custom.declined" and result["output"]["error"]["node"] == "f"
    with pytest.raises(WorkflowFailed) as info:
        runner.run(flaky_graph(permanent=True), timeout=TIMEOUT)
    assert registry.get("test.flaky").attempts == [1, 1]  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__, GraphTaskFailed) and info.value.__cause__.node == "f"


def test_max_steps_stops_a_loop(runner: GraphRunner) -> None:
    g = chain("a", "b", "c")
    g["edges"] = [{"from": "a", "to": "b"}, {"from": "b", "to": "a", "condition": {"!": {"var": "stop"}}},
                  {"from": "b", "to": "c"}]
    g["max_steps"] = 7
    g["start"] = "a"
    with pytest.raises(WorkflowFailed, match="max_steps=7"):
        runner.run(g, timeout=TIMEOUT)
