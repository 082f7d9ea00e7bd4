"""A hostile client on every port an actorflow system listens on: nothing runs, the system keeps serving.

Ports are found from the socket table of the processes the system runs (its session) plus the caller's
own endpoint. Attacks: a pickle whose loading would create a file, garbage, and a well-formed frame
under the wrong key."""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from net_actors import Echo

from actorflow._net import FrameCodec, SecureActorSystem


class _Touch:
    """Unpickling this creates `path` (no shell involved): the classic pickle code-execution payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


def _listening_ports(system: SecureActorSystem) -> set[int]:
    pids = system.pids() | {os.getpid()}
    ports = {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    ours = system.actor_system._systemBase.transport.socket.getsockname()[1]  # the caller's endpoint
    assert ours in ports
    return ports


def _attack(system: SecureActorSystem, echo: Any, port: int, payload: bytes) -> bytes:
    """Send `payload`, let the system work (an ask), then read what came back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        assert system.ask(echo, f"after {port}", 10) == ("echo", f"after {port}")
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


def _wait_for(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _run_attacks(system: SecureActorSystem, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    echo = system.create_actor(Echo)
    assert system.ask(echo, "hello", 10) == ("echo", "hello")
    marker = tmp_path / "pwned"
    evil = pickle.dumps((None, _Touch(marker)))
    wrong_key = FrameCodec(b"not-the-secret-of-this-system!!!").frame((None, "hello"))
    attacks = {
        "pickle": b"%d>" % len(evil) + evil,
        "garbage": b"\x00\x01garbage without any length prefix " * 4,
        "garbage-prefix": b"12ab>" + os.urandom(64),
        "wrong-hmac": wrong_key,
    }
    ports = _listening_ports(system)
    assert len(ports) >= 3  # admin, its logger, the actor, the caller
    for port in sorted(ports):
        for name, payload in attacks.items():
            assert _attack(system, echo, port, payload) == b"", f"{name} on {port} got an answer"
    assert not marker.exists()
    # the payload is live: plain unpickling does run it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Touch(probe)))
    assert probe.exists()

    log = tmp_path / "net.log"
    caller = system.actor_system._systemBase.transport.socket.getsockname()[1]

    def logged(port: int, reason: str) -> bool:
        needle = f":{port})' peer="
        lines = (log.read_text() if log.exists() else "").splitlines() + [r.getMessage() for r in caplog.records]
        return any(needle in line and f"reason='{reason}'" in line for line in lines)

    def logged_after_poke(port: int, reason: str) -> bool:
        # a process queues its log record to Thespian's logger while it handles the bad frame; the admin
        # sends it on its next piece of work, so give it some (a status query)
        system.status()
        return logged(port, reason)

    for port in ports:
        for reason in ("not an actorflow frame", "no length prefix", "bad length prefix", "bad HMAC"):
            _wait_for(lambda p=port, r=reason: logged_after_poke(p, r), f"{reason!r} logged for port {port}")
    assert caller in ports
    assert system.ask(echo, "still serving", 10) == ("echo", "still serving")


def test_hostile_clients_on_every_port_fork(
    open_system: Callable[..., SecureActorSystem], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="actorflow.net")
    _run_attacks(open_system(start_method="fork"), tmp_path, caplog)


def test_hostile_clients_on_every_port_spawn(
    open_system: Callable[..., SecureActorSystem], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="actorflow.net")
    _run_attacks(open_system(start_method="spawn"), tmp_path, caplog)
