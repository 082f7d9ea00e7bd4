"""A step function with placement requirements: `ctx.step(name, fn, requires={"gpu": True})`.

The requirements travel with the function (this wrapper) to the step pool of the process hosting the
run; there a multiprocess shard's placement (`actorflow._multiproc._placement`) sends the step to a node
whose capabilities match. Anywhere else calling it is an error: a step that says it needs a GPU node is
never silently run where it happens to be.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Placed", "check_requires", "requires_key", "WORKER_CAPABILITY", "QUEUES_CAPABILITY", "QUEUE_REQUIREMENT", "NODE_ENV"]

WORKER_CAPABILITY = "actorflow.worker"  # every `actorflow worker` node advertises it
QUEUES_CAPABILITY = "actorflow.queues"  # the task queues a worker node consumes (absent: every queue)
QUEUE_REQUIREMENT = "actorflow.queue"  # a task handler step's queue, matched against QUEUES_CAPABILITY
NODE_ENV = "ACTORFLOW_NODE"  # "host:pid" of the `actorflow worker` process a node's actors were forked from

_SCALARS = (bool, int, float, str)


def check_requires(requires: Any, what: str) -> dict[str, Any]:
    """A copy of `requires` if it is a dict of capability names to JSON scalars, else ConfigError."""
    if not isinstance(requires, dict):
        raise ConfigError(f"{what}: requires must be a dict of capability names to values, got {requires!r}",
                          requires=repr(requires))
    for name, value in requires.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{what}: capability names must be non-empty strings, got {name!r}",
                              requires=repr(requires))
        if value is not None and not isinstance(value, _SCALARS):
            raise ConfigError(
                f"{what}: capability {name!r} must be matched by a bool, number, string or None, "
                f"got {type(value).__name__}", requires=repr(requires))
    return dict(requires)


def requires_key(requires: dict[str, Any]) -> str:
    """One canonical text per set of requirements (steps with equal requirements share a node actor)."""
    return json.dumps(requires, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Placed:
    fn: Callable[[], Any]
    requires: dict[str, Any]

    def __call__(self) -> Any:
        raise ConfigError(
            f"this step requires a node with {self.requires}: steps are placed on nodes only by a "
            "multiprocess engine (Engine(system='multiproc') or system='HOST:PORT')",
            requires=requires_key(self.requires),
        )
