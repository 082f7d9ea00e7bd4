"""What an executor returns: `TaskSuccess` (output, port, effects) or `TaskFailure`, and the effects.

Both are frozen values, turned into plain JSON dicts (`to_dict`) for the journal: a graph run replays
the journaled dict, never the executor, so recovery does not depend on the executor's code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._paths import to_json

__all__ = [
    "ErrorType",
    "TaskSuccess",
    "TaskFailure",
    "TaskResult",
    "Effect",
    "SetOutput",
    "RecordEvent",
    "CancelUserTasks",
    "effect_from_dict",
]


class ErrorType:
    """The error types the constructors use; executors may use their own strings too (`payment.declined`)."""

    PERMANENT = "permanent"
    VALIDATION = "validation"
    INTERNAL = "internal"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class SetOutput:
    """Merge `values` into the node's output (and so into the workflow variables)."""

    values: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "set_output", "values": to_json(self.values, "SetOutput.values")}


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """Add an audit event to the run (in its result's `events` and `GraphRunner.events(run_id)`)."""

    event_type: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "record_event", "event_type": str(self.event_type), "data": to_json(self.data, "RecordEvent.data")}


@dataclass(frozen=True, slots=True)
class CancelUserTasks:
    """Cancel the run's pending user tasks (all, or those at `nodes`); each follows its `cancelled` edge
    if it has one, else its branch ends."""

    nodes: Sequence[str] | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        nodes = None if self.nodes is None else [str(n) for n in self.nodes]
        return {"kind": "cancel_user_tasks", "nodes": nodes, "reason": str(self.reason)}


Effect = SetOutput | RecordEvent | CancelUserTasks


def effect_from_dict(data: Mapping[str, Any]) -> Effect:
    """The effect a journaled dict describes."""
    kind = data.get("kind")
    if kind == "set_output":
        return SetOutput(data["values"])
    if kind == "record_event":
        return RecordEvent(data["event_type"], data.get("data") or {})
    if kind == "cancel_user_tasks":
        return CancelUserTasks(data.get("nodes"), data.get("reason", ""))
    raise ValueError(f"unknown effect kind {kind!r}")


@dataclass(frozen=True, slots=True)
class TaskSuccess:
    """The node succeeded: `output` is merged into the workflow variables and is the next node's input;
    `output_port` picks the outgoing edges; `effects` are applied by the engine after the step is journaled."""

    output: Mapping[str, Any] = field(default_factory=dict)
    output_port: str | None = None
    effects: Sequence[Effect] = ()

    def to_dict(self) -> dict[str, Any]:
        if not isinstance(self.output, Mapping):
            raise TypeError(f"TaskSuccess.output must be a dict, got {type(self.output).__name__}")
        for eff in self.effects:
            if not isinstance(eff, (SetOutput, RecordEvent, CancelUserTasks)):
                raise TypeError(f"effects must be SetOutput, RecordEvent or CancelUserTasks, got {eff!r}")
        port = None if self.output_port is None else str(self.output_port)
        return {
            "ok": True,
            "output": to_json(self.output, "output"),
            "port": port,
            "effects": [eff.to_dict() for eff in self.effects],
        }


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """The node failed. Retryable failures are retried under the node's retry policy; the others (and the
    last retryable one) go to the node's matching `on_error` edge, or fail the run."""

    error_type: str
    message: str
    retryable: bool = True
    details: Mapping[str, Any] | None = None

    @classmethod
    def permanent(cls, message: str, *, error_type: str = ErrorType.PERMANENT, details: Mapping[str, Any] | None = None) -> TaskFailure:
        return cls(error_type, message, False, details)

    @classmethod
    def validation(cls, message: str, *, details: Mapping[str, Any] | None = None) -> TaskFailure:
        """Bad input: retrying cannot help."""
        return cls(ErrorType.VALIDATION, message, False, details)

    @classmethod
    def internal(cls, message: str, *, details: Mapping[str, Any] | None = None, retryable: bool = True) -> TaskFailure:
        return cls(ErrorType.INTERNAL, message, retryable, details)

    @classmethod
    def timeout(cls, message: str, *, details: Mapping[str, Any] | None = None) -> TaskFailure:
        return cls(ErrorType.TIMEOUT, message, True, details)

    def to_dict(self) -> dict[str, Any]:
        details = None if self.details is None else to_json(self.details, "details")
        return {
            "error_type": str(self.error_type),
            "message": str(self.message),
            "retryable": bool(self.retryable),
            "details": details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskFailure:
        return cls(data["error_type"], data["message"], bool(data.get("retryable")), data.get("details"))


TaskResult = TaskSuccess | TaskFailure
