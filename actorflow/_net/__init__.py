"""Secured multiprocess actor systems: authenticated frames, loopback by default, stopped by PID.

The only package that speaks Thespian's multiproc API. See README "Security". Names load lazily, so the
CLI (and `actorflow demo`) do not import the transport shim, whose import-time audit refuses an
unchecked Thespian, until a command needs it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "ENV_RUNTIME_DIR": "._config",
    "ENV_SECRET": "._config",
    "FrameCodec": "._frames",
    "FrameRejected": "._frames",
    "DEFAULT_LOG_CONFIG": "._system",
    "SecureActorSystem": "._system",
    "ShutdownReport": "._system",
    "open_actor_system": "._system",
    "NetParams": "._transport",
    "SecureTCPTransport": "._transport",
    "TransportAuditError": "._transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
