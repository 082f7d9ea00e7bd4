"""Executors of the expense approval example (approval.json).

Importing this module is what `--app examples/approval/executors.py` does: it exposes `registry`,
which holds every executor the graph's node types name."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actorflow import current_step
from actorflow.graph import (
    ExecutionContext,
    ExecutorRegistry,
    RecordEvent,
    SetOutput,
    TaskExecutor,
    TaskFailure,
    TaskResult,
    TaskSuccess,
    TypedTaskExecutor,
)

registry = ExecutorRegistry()


@dataclass(frozen=True)
class Expense:
    employee: str
    amount: float
    description: str = ""


@registry.register
class ValidateExpense(TypedTaskExecutor[Expense, dict[str, Any]]):
    """Typed: the node input becomes an `Expense`; a malformed one is a validation failure."""

    schema_type = "task.expense.validate"
    name = "Validate expense"

    def validate_config(self, config: Mapping[str, Any]) -> list[str]:
        limit = config.get("max_amount")
        return [] if isinstance(limit, (int, float)) and limit > 0 else ["max_amount must be a positive number"]

    def from_input(self, input: Mapping[str, Any]) -> Expense:
        return Expense(str(input["employee"]), float(input["amount"]), str(input.get("description", "")))

    def execute_typed(self, input: Expense, context: ExecutionContext) -> dict[str, Any] | TaskResult:
        if not 0 < input.amount <= context.get_config_required("max_amount"):
            return TaskFailure.validation(f"amount {input.amount} out of range", details={"amount": input.amount})
        return {"employee": input.employee, "amount": input.amount, "valid": True}

    def to_output(self, output: dict[str, Any]) -> Mapping[str, Any]:
        return output


@registry.register
class RouteByAmount(TaskExecutor):
    """Multi-output: the port picks the edge ('high' needs a manager, 'low' is approved at once)."""

    schema_type = "task.routing.byAmount"
    name = "Route by amount"
    output_ports = ("high", "low")

    def validate_config(self, config: Mapping[str, Any]) -> list[str]:
        return [] if isinstance(config.get("threshold"), (int, float)) else ["threshold must be a number"]

    def execute(self, context: ExecutionContext) -> TaskResult:
        amount = context.get_required("amount")
        port = "high" if amount > context.get_config_required("threshold") else "low"
        return TaskSuccess({"route": port}, output_port=port)


@registry.register
class ProcessExpense(TaskExecutor):
    """Pays out; the idempotency key lets a real payment API drop a duplicate after a crash."""

    schema_type = "task.expense.process"
    name = "Process expense"

    def execute(self, context: ExecutionContext) -> TaskResult:
        approver = context.get_any("approver", "auto")
        key = current_step().idempotency_key
        return TaskSuccess(
            {"paid": context.get_any("amount"), "approved_by": approver},
            effects=[
                RecordEvent("expense_paid", {"employee": context.get_initial("employee"), "by": approver}),
                SetOutput({"payment_ref": f"pay-{zlib.crc32(key.encode()):08x}"}),
            ],
        )


@registry.register
class Notify(TaskExecutor):
    schema_type = "task.expense.notify"
    name = "Notify employee"

    def execute(self, context: ExecutionContext) -> TaskResult:
        template = context.get_config_required("template")
        return TaskSuccess({"notified": template}, effects=[RecordEvent("notified", {"template": template})])
