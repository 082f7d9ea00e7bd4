"""Secured multiprocess actor systems: authenticated frames, loopback by default, stopped by PID.

The only package that speaks Thespian's camelCase multiproc API. See README "Security"."""

from __future__ import annotations

from ._config import ENV_RUNTIME_DIR, ENV_SECRET
from ._frames import FrameCodec, FrameRejected
from ._system import DEFAULT_LOG_CONFIG, SecureActorSystem, ShutdownReport, open_actor_system
from ._transport import NetParams, SecureTCPTransport, TransportAuditError

__all__ = [
    "DEFAULT_LOG_CONFIG",
    "ENV_RUNTIME_DIR",
    "ENV_SECRET",
    "FrameCodec",
    "FrameRejected",
    "NetParams",
    "SecureActorSystem",
    "SecureTCPTransport",
    "ShutdownReport",
    "TransportAuditError",
    "open_actor_system",
]
