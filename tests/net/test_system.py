"""A real secured admin: messages between processes, loopback-only sockets, secrets, and clean shutdown."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from net_actors import Echo
from net_util import free_port

from actorflow._net import SecureActorSystem, open_actor_system
from actorflow.errors import ConfigError

SECRET = b"0123456789abcdef-test-secret-0001"


def _listeners(system: SecureActorSystem) -> list[tuple[int, str, int]]:
    pids = system.pids() | {os.getpid()}
    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def test_actors_exchange_messages_across_processes(open_system: Callable[..., SecureActorSystem]) -> None:
    system = open_system()
    parent = system.create_actor(Echo)
    assert system.ask(parent, "hi", 10) == ("echo", "hi")
    parent_pid = system.ask(parent, "pid", 10)
    tag, payload, child_pid = system.ask(parent, ("relay", "via a child"), 10)  # actor -> actor -> us
    assert (tag, payload) == ("relayed", "via a child")
    assert len({os.getpid(), parent_pid, child_pid}) == 3
    assert {parent_pid, child_pid} <= system.pids()
    batch = system.ask(parent, ("batch", 1000), 10)
    assert batch == [(i, "x") for i in range(1000)]


def test_by_default_nothing_listens_beyond_loopback(open_system: Callable[..., SecureActorSystem]) -> None:
    system = open_system()
    for _ in range(2):
        system.create_actor(Echo)
    found = _listeners(system)
    assert len({pid for pid, _, _ in found}) >= 4  # caller, admin, logger, two actors
    assert {ip for _, ip, _ in found} == {"127.0.0.1"}, found
    assert (system.processes.admin_pid, "127.0.0.1", system.admin_port) in found


def test_bind_beyond_loopback_needs_a_secret_and_is_honoured(
    open_system: Callable[..., SecureActorSystem],
) -> None:
    with pytest.raises(ConfigError) as err:
        open_system(bind="0.0.0.0")
    assert err.value.bind == "0.0.0.0" and "secret" in str(err.value)
    system = open_system(bind="0.0.0.0", secret=SECRET)
    echo = system.create_actor(Echo)
    assert system.ask(echo, "all interfaces", 10) == ("echo", "all interfaces")
    assert (system.processes.admin_pid, "0.0.0.0", system.admin_port) in _listeners(system)


@pytest.mark.slow  # Thespian retries the unanswered handshake for ~15 s before it gives up
def test_attach_needs_the_same_secret(open_system: Callable[..., SecureActorSystem]) -> None:
    system = open_system(secret=SECRET)
    echo = system.create_actor(Echo)
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        open_actor_system(admin_port=system.admin_port, secret=b"another-secret-of-16+bytes")
    assert err.value.admin_port == system.admin_port
    assert time.monotonic() - started < 60
    other = open_actor_system(admin_port=system.admin_port, secret=SECRET)
    try:
        assert not other.started and other.processes == system.processes
        assert other.ask(echo, "shared", 10) == ("echo", "shared")
    finally:
        other.detach()
    assert system.ask(echo, "still mine", 10) == ("echo", "still mine")


def test_secret_from_environment_and_close_of_an_attached_handle(
    open_system: Callable[..., SecureActorSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORFLOW_SECRET", SECRET.decode())
    system = open_system()
    echo = system.create_actor(Echo)
    other = open_actor_system(admin_port=system.admin_port, secret=SECRET)  # same key, other source
    assert other.ask(echo, "via env key", 10) == ("echo", "via env key")
    pids = system.pids()
    other.close()  # attached, not started: detaches and leaves the system running
    assert system.pids() == pids
    assert system.ask(echo, "still up", 10) == ("echo", "still up")
    system.close()  # started: stops everything
    assert system.report is not None and not system.pids()


def test_spawn_actors_create_actors_and_the_secret_is_not_in_their_arguments(open_system: Callable[..., SecureActorSystem]) -> None:
    system = open_system(secret=SECRET, start_method="spawn")
    parent = system.create_actor(Echo)
    tag, _, child_pid = system.ask(parent, ("relay", "spawned by a spawned actor"), 20)
    assert tag == "relayed" and child_pid in system.pids()
    for pid in system.pids():
        proc = psutil.Process(pid)
        text = " ".join(proc.cmdline()) + repr(proc.environ())
        assert SECRET.decode() not in text and SECRET.hex() not in text


def test_generated_secret_is_recorded_private(open_system: Callable[..., SecureActorSystem], runtime: Path) -> None:
    system = open_system()
    record = runtime / f"admin-{system.admin_port}.json"
    assert record.stat().st_mode & 0o777 == 0o600
    assert runtime.stat().st_mode & 0o777 == 0o700
    joined = open_actor_system(admin_port=system.admin_port)  # a local attacher finds the key there
    joined.detach()
    system.shutdown()
    assert not record.exists()


def test_shutdown_ends_every_process_orphans_included(open_system: Callable[..., SecureActorSystem]) -> None:
    system = open_system()
    parent = system.create_actor(Echo)
    parent_pid = system.ask(parent, "pid", 10)
    _, _, child_pid = system.ask(parent, ("relay", "x"), 10)
    os.kill(parent_pid, signal.SIGKILL)  # the child is orphaned (reparented), still in the session
    deadline = time.monotonic() + 10
    while psutil.pid_exists(parent_pid) and psutil.Process(parent_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    before = system.pids()
    assert child_pid in before and parent_pid not in before
    report = system.shutdown()
    assert before <= report.ended | report.killed
    assert not [p for p in before if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert system.shutdown() is report  # idempotent


def test_config_errors_name_the_argument(runtime: Path) -> None:
    cases = [
        (dict(admin_port=0), "admin_port"),
        (dict(admin_port=free_port(), bind="example.com"), "bind"),
        (dict(admin_port=free_port(), secret=b"short"), "secret_source"),
        (dict(admin_port=free_port(), join="10.1.2.3:1900"), "join"),
        (dict(admin_port=free_port(), join="nonsense"), "join"),
        (dict(admin_port=free_port(), start_method="threads"), "start_method"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ConfigError) as err:
            open_actor_system(**kwargs)  # type: ignore[arg-type]
        assert name in err.value.evidence, (kwargs, err.value.evidence)


def test_private_endpoints_from_threads_are_secured_too(open_system: Callable[..., SecureActorSystem]) -> None:
    import threading

    from actorflow._net import SecureTCPTransport

    system = open_system()
    echo = system.create_actor(Echo)
    results: dict[int, list[object]] = {}

    def worker(n: int) -> None:
        with system.private() as ctx:
            assert isinstance(ctx._systemBase.transport, SecureTCPTransport)  # the per-thread clone is ours
            results[n] = [ctx.ask(echo, f"t{n}-{i}", 10) for i in range(20)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {n: [("echo", f"t{n}-{i}") for i in range(20)] for n in range(3)}
