"""Checking where to listen and which secret to use, before any socket or process exists."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "ENV_SECRET",
    "ENV_RUNTIME_DIR",
    "MIN_SECRET_BYTES",
    "AdminRecord",
    "check_bind",
    "check_port",
    "default_start_method",
    "is_loopback",
    "parse_hostport",
    "read_record",
    "record_path",
    "remove_record",
    "resolve_secret",
    "runtime_dir",
    "write_record",
]

ENV_SECRET = "ACTORFLOW_SECRET"
ENV_RUNTIME_DIR = "ACTORFLOW_RUNTIME_DIR"
MIN_SECRET_BYTES = 16


def check_port(port: object, name: str = "admin_port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a TCP port number 1..65535, got {port!r}", **{name: port})
    return port


def check_bind(bind: object) -> str:
    """An IPv4 address to listen on ('localhost' means 127.0.0.1; '0.0.0.0' means every interface)."""
    if bind == "localhost":
        return "127.0.0.1"
    if not isinstance(bind, str):
        raise ConfigError(f"bind must be an IPv4 address string, got {bind!r}", bind=bind)
    try:
        return str(ipaddress.IPv4Address(bind))
    except ValueError:
        raise ConfigError(
            f"bind must be an IPv4 address such as 127.0.0.1 or 0.0.0.0, got {bind!r}", bind=bind
        ) from None


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.IPv4Address(host).is_loopback


def parse_hostport(value: object, name: str) -> tuple[str, int]:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(f"{name} must be 'HOST:PORT', got {value!r}", **{name: value})
    host, _, port = value.partition(":")
    if not port.isdigit():
        raise ConfigError(f"{name} must be 'HOST:PORT' with a numeric port, got {value!r}", **{name: value})
    return check_bind(host) if host else "127.0.0.1", check_port(int(port), name)


def _as_key(secret: object, source: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes | bytearray):
        raise ConfigError(f"secret must be bytes or str, got {type(secret).__name__}", secret_source=source)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"secret from {source} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
            "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')",
            secret_source=source,
        )
    return bytes(secret)


def resolve_secret(secret: object, bind: str, recorded: bytes | None) -> tuple[bytes, str]:
    """(key, where it came from): `secret=`, $ACTORFLOW_SECRET, the runtime record of a local admin, or,
    on loopback only, a fresh random key. Beyond loopback without a secret: ConfigError."""
    if secret is not None:
        return _as_key(secret, "secret="), "secret="
    env = os.environ.get(ENV_SECRET)
    if env:
        return _as_key(env, "$" + ENV_SECRET), "$" + ENV_SECRET
    if recorded is not None:
        return recorded, "runtime record"
    if not is_loopback(bind):
        raise ConfigError(
            f"refusing to listen on {bind} without a secret: every frame is authenticated with a shared "
            f"secret; pass secret= or set ${ENV_SECRET} (or keep bind='127.0.0.1')",
            bind=bind,
        )
    return secrets.token_bytes(32), "generated"


def default_start_method() -> str:
    """fork in a threaded process is deprecated from 3.12: spawn there, fork (faster) before."""
    return "spawn" if sys.version_info >= (3, 12) else "fork"


def runtime_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where records of started admins live (0700): like Jupyter's runtime dir for kernel keys."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(ENV_RUNTIME_DIR):
        return Path(os.environ[ENV_RUNTIME_DIR])
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "actorflow"
    return Path.home() / ".local" / "state" / "actorflow" / "run"


@dataclass(frozen=True)
class AdminRecord:
    """What `admin stop/status` and later attachers need to know about an admin actorflow started."""

    port: int
    bind: str
    admin_pid: int
    session: int
    started_at: float = field(default_factory=time.time)
    key: bytes | None = field(default=None, repr=False)  # only a generated key; yours stays yours

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "bind": self.bind,
            "admin_pid": self.admin_pid,
            "session": self.session,
            "started_at": self.started_at,
            "key": self.key.hex() if self.key is not None else None,
        }


def record_path(port: int, directory: Path) -> Path:
    return directory / f"admin-{port}.json"


def write_record(record: AdminRecord, directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = record_path(record.port, directory)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record.to_json(), f)
    os.replace(tmp, path)
    return path


def read_record(port: int, directory: Path) -> AdminRecord | None:
    try:
        data = json.loads(record_path(port, directory).read_text())
        return AdminRecord(
            port=int(data["port"]),
            bind=str(data["bind"]),
            admin_pid=int(data["admin_pid"]),
            session=int(data["session"]),
            started_at=float(data["started_at"]),
            key=bytes.fromhex(data["key"]) if data.get("key") else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_record(port: int, directory: Path) -> None:
    try:
        record_path(port, directory).unlink()
    except FileNotFoundError:
        pass
