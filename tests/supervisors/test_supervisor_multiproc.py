"""Supervision across real OS processes (multiprocTCPBase): a raising child and a kill -9'd child both restart."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from thespian.actors import ActorSystem

from supervisors import (
    ChildSpec,
    GetChildren,
    Strategy,
    Supervise,
    SupervisedActor,
    SupervisorActor,
    SupervisorSpec,
)

pytestmark = pytest.mark.slow

# logDefs=False crashes multiproc children (they call logDefs.get); a quiet dict config works.
_QUIET_LOGS = {"version": 1, "disable_existing_loggers": False, "root": {"level": "CRITICAL"}}


class PidWorker(SupervisedActor):
    """Tells its name and process id; raises on demand."""

    def handle(self, message: Any, sender: Any) -> None:
        if message == "pid":
            self.send(sender, (self.name, os.getpid()))
        elif message == "boom":
            raise ValueError("boom in a process")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def mp_asys() -> Iterator[ActorSystem]:
    """A private multiproc system on a free port, always shut down (its admin would outlive us otherwise)."""
    system = ActorSystem(
        "multiprocTCPBase", {"Admin Port": _free_port()}, logDefs=_QUIET_LOGS, transientUnique=True
    )
    try:
        yield system
    finally:
        system.shutdown()


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll across processes (no synchronous driver here), failing loudly on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_raise_and_kill_restart_across_processes(mp_asys: ActorSystem) -> None:
    spec = SupervisorSpec(
        strategy=Strategy.REST_FOR_ONE, children=[ChildSpec("a", PidWorker), ChildSpec("b", PidWorker)]
    )
    sup = mp_asys.createActor(SupervisorActor)
    first = mp_asys.ask(sup, Supervise(spec), 10).addresses
    pids = {name: mp_asys.ask(addr, "pid", 10) for name, addr in first.items()}
    assert {name: got[0] for name, got in pids.items()} == {"a": "a", "b": "b"}

    def children() -> dict[str, Any]:
        addresses: dict[str, Any] = mp_asys.ask(sup, GetChildren(), 10).addresses
        return addresses

    mp_asys.tell(first["b"], "boom")
    _until(lambda: set(children()) == {"a", "b"} and children()["b"] != first["b"])
    second = children()
    assert second["a"] == first["a"]

    os.kill(pids["a"][1], signal.SIGKILL)  # a dead process: only ChildActorExited tells the supervisor
    _until(lambda: set(children()) == {"a", "b"} and children()["a"] != first["a"])
    _until(lambda: children()["b"] != second["b"])  # REST_FOR_ONE: b restarted after a
    third = children()
    new_pids = {name: mp_asys.ask(addr, "pid", 10) for name, addr in third.items()}
    assert new_pids["a"][0] == "a" and new_pids["a"][1] != pids["a"][1]
    assert new_pids["b"][0] == "b"
