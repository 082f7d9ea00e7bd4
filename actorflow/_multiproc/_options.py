"""Checks of the Engine's multi-machine options, before anything starts (README "Multiple machines")."""

from __future__ import annotations

import socket
from typing import Any

from .._net._config import parse_hostport
from .._net._procs import listening_pid
from .._placed import check_requires
from ..errors import ConfigError

__all__ = ["check_join", "check_node_options", "require_admin"]


def check_join(system: str) -> tuple[str, int] | None:
    """`system="HOST:PORT"` -> (host, port) of the admin to join; None for "embedded"/"multiproc".

    The admin must run on this machine: the engine's shard processes are its actors and open the data
    directory here. Other machines take part as member nodes (`actorflow worker --join`)."""
    if system in ("embedded", "multiproc"):
        return None
    if ":" not in system:
        raise ConfigError(
            f"system={system!r}: use 'embedded' (one process), 'multiproc' (run hosts in their own processes "
            "under an admin this engine starts) or 'HOST:PORT' (an admin started by `actorflow admin start`)",
            option="system",
        )
    host, port = parse_hostport(system, "system")
    with socket.socket() as s:
        try:
            s.bind((host, 0))  # succeeds only for an address of this machine
        except OSError as exc:
            raise ConfigError(
                f"system={system!r}: {host} is not an address of this machine; the engine joins an admin on "
                "its own machine (its processes open the data directory), and other machines join that "
                "admin's convention with `actorflow worker --join`",
                option="system",
                host=host,
            ) from exc
    return host, port


def check_node_options(
    system: str,
    admin_port: int | None,
    secret: str | bytes | None,
    step_requirements: Any,
    node_timeout: Any,
    join: tuple[str, int] | None,
) -> dict[str, Any] | None:
    """ConfigError for an option that does not fit `system`; the checked step requirements."""
    if system == "embedded" and (admin_port is not None or secret is not None or step_requirements):
        raise ConfigError(
            "admin_port, secret and step_requirements are options of system='multiproc' or 'HOST:PORT'",
            option="system",
        )
    if join is not None and admin_port is not None:
        raise ConfigError(f"system={system!r} names the admin's port: admin_port= is for system='multiproc'",
                          option="admin_port")
    if isinstance(node_timeout, bool) or not isinstance(node_timeout, int | float) or not node_timeout > 0:
        raise ConfigError(f"node_timeout must be a positive number of seconds, got {node_timeout!r}",
                          option="node_timeout")
    if step_requirements is None:
        return None
    return check_requires(step_requirements, "step_requirements")


def require_admin(join: tuple[str, int]) -> None:
    """ConfigError unless an admin listens on the port `system="HOST:PORT"` names (checked at open)."""
    host, port = join
    if listening_pid(port) is None:
        raise ConfigError(
            f"system='{host}:{port}': no admin listens there; start one with "
            f"`actorflow admin start --port {port}` (or use system='multiproc' to start one with the engine)",
            admin_port=port,
        )
