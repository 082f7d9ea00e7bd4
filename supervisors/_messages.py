"""Messages between supervisors, their children and listeners: plain picklable dataclasses, no Thespian import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._strategy import SupervisorSpec

__all__ = [
    "Supervise",
    "Supervising",
    "GetChildren",
    "ChildFailed",
    "ChildExited",
    "ChildRestarted",
    "Escalated",
    "Respawn",
]

# Addresses are Thespian ActorAddress objects; typed as Any so this module stays free of Thespian.


REPLY_TO = "reply-to"  # Supervise.listener: tell the sender of the Supervise request


@dataclass(frozen=True)
class Supervise:
    """Ask a SupervisorActor to start its children; also the `init` of a supervisor nested as a child."""

    spec: SupervisorSpec
    listener: Any = None  # an address, or REPLY_TO: whoever sent this Supervise (e.g. an external client)


@dataclass(frozen=True, eq=True)
class Supervising:
    """Reply to Supervise/GetChildren: the live children's current addresses by name."""

    addresses: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GetChildren:
    """Ask a supervisor for its children's current addresses (they change on every restart)."""


@dataclass(frozen=True)
class ChildFailed:
    """A supervised actor raised; sent to its supervisor because Thespian only tells the sender (PoisonMessage)."""

    name: str
    error: str
    traceback: str = ""


@dataclass(frozen=True)
class ChildExited:
    """A supervised actor finished on purpose; transient and temporary children are then not restarted."""

    name: str
    reason: str = "normal"


@dataclass(frozen=True)
class ChildRestarted:
    """Told to the listener for each child recreated, so it can re-learn the new address."""

    name: str
    address: Any
    restarts: int
    error: str
    failed_child: str = ""
    """The child whose failure caused this restart (differs from `name` for ONE_FOR_ALL/REST_FOR_ONE siblings)."""


@dataclass(frozen=True)
class Escalated:
    """The restart budget is spent: all children were stopped; the failure goes to the listener and the parent."""

    supervisor_name: str
    child: str
    error: str


@dataclass(frozen=True)
class Respawn:
    """Ask a supervisor to create child `name` again now (the listener knows it is lost where Thespian
    cannot tell: its process was on a machine that is gone). Its current incarnation, if any, is told
    to exit; a transient child that had exited normally is supervised again. Not a failure: the
    restart budget is not spent. The listener gets ChildRestarted as for a restart."""

    name: str
    reason: str = "respawn requested"


@dataclass(frozen=True)
class _Init:
    """First message to a (re)created child: who it is under its supervisor, and its init payload."""

    name: str
    init: Any = None


@dataclass(frozen=True)
class _RestartDue:
    """Wakeup payload: some backoff delay may have elapsed."""


@dataclass(frozen=True)
class _SpawnFailed:
    """Self-message when createActor raised, so the failure takes the normal (budgeted) path."""

    name: str
    error: str
