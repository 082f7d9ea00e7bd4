"""Amazon States Language definitions imported into the graph model and run."""

from __future__ import annotations

from typing import Any

import pytest

from actorflow import WorkflowFailed
from actorflow.graph import (
    ExecutorRegistry,
    GraphRunner,
    GraphTaskFailed,
    GraphValidationError,
    load_definition,
)

from .conftest import TIMEOUT, Flaky

ORDER = {
    "Comment": "order fulfilment",
    "StartAt": "Check",
    "States": {
        "Check": {"Type": "Task", "Resource": "test.echo", "Parameters": {"output": {"checked": True}}, "Next": "Size"},
        "Size": {
            "Type": "Choice",
            "Choices": [
                {"And": [{"Variable": "$.order.total", "NumericGreaterThan": 100},
                         {"Variable": "$.order.country", "StringEquals": "DE"}], "Next": "Both"},
                {"Variable": "$.order.items[0].sku", "StringMatches": "GIFT-*", "Next": "Gift"},
                {"Not": {"Variable": "$.order.express", "IsPresent": True}, "Next": "Nap"},
            ],
            "Default": "Fail",
        },
        "Gift": {"Type": "Pass", "Result": {"gift": True}, "End": True},
        "Nap": {"Type": "Wait", "Seconds": 3600, "Next": "Done"},
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "Pack", "States": {"Pack": {"Type": "Task", "Resource": "test.echo",
                                                        "Parameters": {"output": {"packed": True}}, "End": True}}},
                {"StartAt": "Bill", "States": {
                    "Bill": {"Type": "Task", "Resource": "test.flaky", "Parameters": {"succeed_on": 2},
                             "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                             "TimeoutSeconds": 30, "Next": "Billed"},
                    "Billed": {"Type": "Succeed"}}},
            ],
            "Next": "Ship",
        },
        "Ship": {"Type": "Task", "Resource": "test.flaky", "Parameters": {"permanent": True, "error_type": "carrier.down"},
                 "Catch": [{"ErrorEquals": ["carrier.down"], "Next": "Done"}], "End": True},
        "Done": {"Type": "Succeed"},
        "Fail": {"Type": "Fail", "Error": "order.unroutable", "Cause": "no rule matched"},
    },
}


@pytest.mark.parametrize(
    ("order", "visited"),
    [
        ({"total": 500, "country": "DE", "express": True},
         ["Check", "Size", "Both", "Both[0].Pack", "Both[1].Bill", "Both[1].Billed", "Both.join", "Ship", "Done"]),
        ({"total": 5, "items": [{"sku": "GIFT-1"}], "express": True}, ["Check", "Size", "Gift"]),
        ({"total": 5}, ["Check", "Size", "Nap", "Done"]),
    ],
)
def test_an_asl_state_machine_runs(runner: GraphRunner, registry: ExecutorRegistry, order: dict[str, Any], visited: list[str]) -> None:
    result = runner.run(ORDER, {"order": order}, timeout=TIMEOUT)
    assert result["visited"] == visited
    if "Ship" in visited:
        flaky = registry.get("test.flaky")
        assert isinstance(flaky, Flaky) and flaky.attempts == [1, 2, 1]  # Bill retried once, Ship not at all
        out = result["output"]
        assert out["packed"] and out["attempt"] == 2 and out["error"]["error_type"] == "carrier.down"


def test_asl_fail_state_fails_the_run(runner: GraphRunner) -> None:
    with pytest.raises(WorkflowFailed) as info:
        runner.run(ORDER, {"order": {"total": 5, "express": True}}, timeout=TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, GraphTaskFailed) and cause.node == "Fail" and cause.error_type == "order.unroutable"


def test_asl_import_is_mapped_to_the_graph_model(registry: ExecutorRegistry) -> None:
    graph = load_definition(ORDER, registry)
    bill = graph.node("Both[1].Bill")
    assert bill.retry is not None and bill.retry.max_attempts == 3 and bill.retry.errors == ("*",) and bill.timeout == 30
    assert graph.node("Both.join").join
    assert [e.on_error for e in graph.outgoing("Ship")] == [("carrier.down",)]
    assert graph.node("Nap").config == {"seconds": 3600}


def test_unsupported_asl_is_refused_naming_the_state(registry: ExecutorRegistry) -> None:
    doc = {"StartAt": "M", "States": {
        "M": {"Type": "Map", "Next": "T"},
        "T": {"Type": "Task", "Resource": "test.echo", "Parameters": {"id.$": "$.id"}, "ResultPath": "$.x", "End": True},
    }}
    with pytest.raises(GraphValidationError) as info:
        load_definition(doc, registry)
    text = str(info.value)
    assert "state 'M': Type 'Map' is not supported" in text
    assert "state 'T': Task field(s) ResultPath not supported" in text and "'.$' paths are not supported" in text
