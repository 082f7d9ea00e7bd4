"""Errors of graph workflows: a definition that does not validate, and a graph run that cannot go on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ActorflowError, ConfigError

__all__ = ["Problem", "GraphValidationError", "GraphRunError", "GraphTaskFailed"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a definition: `where` names the node, edge or field; `message` says what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class GraphValidationError(ConfigError):
    """A graph definition was rejected on load; `problems` lists every error found, not just the first."""

    problems: tuple[Problem, ...]
    source: str

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], source: str = "graph definition") -> None:
        problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n{lines}", problems=problems, source=source)


class GraphRunError(ActorflowError):
    """A running graph could not route on (no edge for a port, no condition held, too many steps)."""

    node: str

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"node {node!r}: {message}", node=node)


class GraphTaskFailed(ActorflowError):
    """A node failed and no error edge caught it (or a `graph.fail` node was reached): the run fails."""

    node: str
    error_type: str
    details: dict[str, Any] | None

    def __init__(self, node: str, error_type: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(
            f"node {node!r} failed ({error_type}): {message}",
            node=node,
            error_type=error_type,
            reason=message,
            details=details,
        )
