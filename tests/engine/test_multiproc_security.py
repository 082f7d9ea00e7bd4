"""A hostile client on every port a multiprocess engine opened: nothing is executed, the engine keeps
serving, and by default nothing listens beyond loopback (the socket table of its processes)."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Any

import psutil

from actorflow import Engine
from actorflow._net import FrameCodec

TIMEOUT = 30.0


class _Touch:
    """Unpickling this creates `path`: the classic pickle code-execution payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


async def one(ctx: Any, i: int) -> int:
    return int(await ctx.step("s", lambda: i + 1))


def _engine_sockets(engine: Engine) -> list[Any]:
    rt: Any = engine._runtime()
    pids = rt._system.pids() | {os.getpid()}
    return [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in pids]


def test_hostile_clients_on_every_engine_port_execute_nothing(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", system="multiproc", sync=False)
    engine.workflow()(one)
    with engine:
        assert engine.run(one, 0, timeout=TIMEOUT) == 1
        listening = _engine_sockets(engine)
        assert len({c.pid for c in listening}) >= 4  # the facade, the admin, the supervisor, the shards
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}  # nothing beyond loopback
        marker = tmp_path / "pwned"
        evil = pickle.dumps((None, _Touch(marker)))
        attacks = [
            b"%d>" % len(evil) + evil,  # a plain Thespian frame holding the pickle
            b"\x00\x01garbage without any length prefix " * 4,
            FrameCodec(b"not-the-secret-of-this-engine!!!").frame((None, "hello")),  # wrong HMAC
        ]
        for i, conn in enumerate(sorted(listening, key=lambda c: c.laddr.port)):
            for payload in attacks:
                with socket.create_connection(("127.0.0.1", conn.laddr.port), timeout=10) as sock:
                    sock.sendall(payload)
                    assert engine.run(one, i, timeout=TIMEOUT) == i + 1  # still serving meanwhile
                    sock.settimeout(10)
                    try:
                        assert sock.recv(4096) == b""  # closed without an answer
                    except ConnectionResetError:
                        pass
        assert not marker.exists()
        handles = engine.start_many(one, [(i,) for i in range(50)])
        assert [h.result(timeout=TIMEOUT) for h in handles] == [i + 1 for i in range(50)]
