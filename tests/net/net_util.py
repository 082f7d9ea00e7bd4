"""Plain helpers of the net tests, importable by module name (`conftest` is ambiguous when pytest
collects this directory beside another one with its own conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
