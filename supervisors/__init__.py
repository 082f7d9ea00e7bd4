"""Supervision strategies and supervisor actors: OTP-style restarts for actorflow's Thespian actors."""

from ._core import Decision, SupervisorCore
from ._messages import (
    REPLY_TO,
    ChildExited,
    ChildFailed,
    ChildRestarted,
    Escalated,
    GetChildren,
    Respawn,
    Supervise,
    Supervising,
)
from ._strategy import Backoff, ChildSpec, Intensity, RestartType, Strategy, SupervisorSpec
from ._thespian import SupervisedActor, SupervisorActor

__all__ = [
    "REPLY_TO",
    "Backoff",
    "ChildExited",
    "ChildFailed",
    "ChildRestarted",
    "ChildSpec",
    "Decision",
    "Escalated",
    "GetChildren",
    "Intensity",
    "Respawn",
    "RestartType",
    "Strategy",
    "Supervise",
    "SupervisedActor",
    "SupervisorActor",
    "SupervisorCore",
    "SupervisorSpec",
    "Supervising",
]
