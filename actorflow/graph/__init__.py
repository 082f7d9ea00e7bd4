"""Graph workflows defined as data: nodes run by executors registered by schema type, edges routed by
output port or condition, parallel split and join, user tasks awaiting a signal, effects.

A graph run is a durable run of the `actorflow.graph` workflow (see `GraphRunner`): every node
execution is a journaled step, so a graph run recovers after a crash like any workflow."""

from __future__ import annotations

from ._asl import from_asl, is_asl
from ._context import ExecutionContext, TokenInfo
from ._definition import EdgeDef, GraphDefinition, NodeDef, RetrySpec, parse_definition
from ._errors import GraphRunError, GraphTaskFailed, GraphValidationError, Problem
from ._executor import (
    BUILTIN_TYPES,
    FAIL,
    PASS,
    SUCCEED,
    USER_TASK,
    WAIT,
    ExecutorRegistry,
    TaskExecutor,
    TypedTaskExecutor,
    default_registry,
)
from ._expr import OPERATORS, ExpressionError, check_expression, evaluate
from ._load import load_definition, read_document
from ._results import (
    CancelUserTasks,
    Effect,
    ErrorType,
    RecordEvent,
    SetOutput,
    TaskFailure,
    TaskResult,
    TaskSuccess,
)
from ._runner import WORKFLOW_NAME, GraphRunner

__all__ = [
    "GraphRunner",
    "WORKFLOW_NAME",
    "GraphDefinition",
    "NodeDef",
    "EdgeDef",
    "RetrySpec",
    "load_definition",
    "parse_definition",
    "read_document",
    "from_asl",
    "is_asl",
    "TaskExecutor",
    "TypedTaskExecutor",
    "ExecutorRegistry",
    "default_registry",
    "ExecutionContext",
    "TokenInfo",
    "TaskSuccess",
    "TaskFailure",
    "TaskResult",
    "ErrorType",
    "Effect",
    "SetOutput",
    "RecordEvent",
    "CancelUserTasks",
    "GraphValidationError",
    "GraphRunError",
    "GraphTaskFailed",
    "Problem",
    "check_expression",
    "evaluate",
    "ExpressionError",
    "OPERATORS",
    "BUILTIN_TYPES",
    "PASS",
    "WAIT",
    "USER_TASK",
    "SUCCEED",
    "FAIL",
]
