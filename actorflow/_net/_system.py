"""Starting, joining and stopping a secured multiprocTCPBase actor system (the handle the engine holds)."""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thespian.actors import ActorAddress, ActorSystem, InvalidActorAddress
from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

from ..errors import ConfigError
from . import _procs
from ._base import SecuredTCPBase, SystemStub
from ._config import (
    AdminRecord,
    check_bind,
    check_port,
    default_start_method,
    is_loopback,
    parse_hostport,
    read_record,
    remove_record,
    resolve_secret,
    runtime_dir,
    write_record,
)
from ._frames import net_logger
from ._transport import NetParams

__all__ = ["SecureActorSystem", "ShutdownReport", "open_actor_system", "DEFAULT_LOG_CONFIG"]


CONVENTION_CAPABILITY = "Convention Address.IPv4"

# Thespian's logger process applies this in the admin's tree. logDefs=False would crash actor processes
# (they call logDefs.get); warnings (rejected frames among them) go to the admin's stderr.
DEFAULT_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "WARNING"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
}


@dataclass(frozen=True)
class ShutdownReport:
    """PIDs of the system when shutdown began: those that ended on request, and those we had to kill."""

    ended: frozenset[int]
    killed: frozenset[int]


_open: weakref.WeakSet[SecureActorSystem] = weakref.WeakSet()


@atexit.register
def _shutdown_leftovers() -> None:
    # an admin outlives its starter; the ones this process started (and did not detach) end with it
    for system in list(_open):
        try:
            system.shutdown(timeout=5.0)
        except Exception:  # noqa: BLE001 - at exit, keep stopping the others
            net_logger().exception("net_atexit_shutdown_failed", port=system.admin_port)


class SecureActorSystem:
    """A started or joined secured admin: Thespian's ActorSystem plus the PIDs it runs under.

    ``create_actor``/``ask``/``tell`` are thin snake_case forwards; ``actor_system`` is the Thespian
    object for anything else (every frame it sends or receives is authenticated). ``shutdown()`` stops
    the admin and every process in its session and checks that by PID."""

    def __init__(
        self,
        asys: ActorSystem,
        *,
        admin_port: int,
        net: NetParams,
        started: bool,
        processes: _procs.ProcessSet,
        record_dir: Path | None,
    ) -> None:
        self._asys: ActorSystem | None = asys
        self.admin_port = admin_port
        self.bind = net.bind
        self.started = started
        self.processes = processes
        self._record_dir = record_dir
        self._lock = threading.Lock()
        self.report: ShutdownReport | None = None
        if started:
            _open.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._asys is None else "open"
        return f"SecureActorSystem({self.bind}:{self.admin_port}, admin_pid={self.processes.admin_pid}, {state})"

    def __enter__(self) -> SecureActorSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def actor_system(self) -> ActorSystem:
        if self._asys is None:
            raise ConfigError("this actor system was shut down or detached", admin_port=self.admin_port)
        return self._asys

    @property
    def admin_address(self) -> str:
        return f"{self.bind}:{self.admin_port}"

    def create_actor(
        self, cls: Any, *, requirements: dict[str, Any] | None = None, global_name: str | None = None
    ) -> ActorAddress:
        return self.actor_system.createActor(cls, targetActorRequirements=requirements, globalName=global_name)

    def ask(self, address: ActorAddress, message: Any, timeout: float | None = None) -> Any:
        return self.actor_system.ask(address, message, timeout)

    def tell(self, address: ActorAddress, message: Any) -> None:
        self.actor_system.tell(address, message)

    def private(self) -> Any:
        """A context manager yielding a per-thread endpoint (Thespian's `private()`: its own secured socket);
        the ActorSystem itself must not be used from several threads at once."""
        return self.actor_system.private()

    def pids(self) -> set[int]:
        """Live processes of this system: the admin, its logger and every actor process."""
        return _procs.session_members(self.processes.session) | (
            {self.processes.admin_pid} if _procs.alive(self.processes.admin_pid) else set()
        )

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """The admin's own view (Thespian_SystemStatus) plus the PIDs and listening sockets we see."""
        asys = self.actor_system
        reply = asys.ask(asys._systemBase.adminAddr, Thespian_StatusReq(), timeout)
        pids = self.pids()
        out: dict[str, Any] = {
            "admin": self.admin_address,
            "admin_pid": self.processes.admin_pid,
            "pids": sorted(pids),
            "listening": {str(pid): [f"{h}:{p}" for h, p in addrs]
                          for pid, addrs in _procs.listening_addresses(pids).items()},
        }
        if isinstance(reply, Thespian_SystemStatus):
            out["convention_leader"] = str(reply.conventionLeader) if reply.conventionLeader else None
            out["convention_members"] = [str(member) for member, _ in reply.conventionAttendees]
            out["actors"] = len(reply.childActors)
            out["capabilities"] = {k: v for k, v in reply.capabilities.items()
                                   if isinstance(v, str | int | float | bool | None)}
        return out

    def members(self, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
        """The convention's member admins this admin knows (as leader), each with the capabilities it
        reports itself (Thespian_StatusReq to the member): (address, capabilities). A member that does
        not answer within `timeout` is listed with no capabilities."""
        asys = self.actor_system
        reply = asys.ask(asys._systemBase.adminAddr, Thespian_StatusReq(), timeout)
        if not isinstance(reply, Thespian_SystemStatus):
            return []
        out = []
        for member, _ in reply.conventionAttendees:
            own = asys.ask(member, Thespian_StatusReq(), timeout)
            caps = dict(own.capabilities) if isinstance(own, Thespian_SystemStatus) else {}
            out.append((str(member), {k: v for k, v in caps.items() if isinstance(v, str | int | float | bool | list | None)}))
        return out

    def close(self, timeout: float = 10.0) -> None:
        """What an engine's close() wants: stop the system if this handle started it, else just detach
        (an admin started by `actorflow admin start` or another process keeps running)."""
        if self.started:
            self.shutdown(timeout)
        else:
            self.detach()

    def detach(self) -> None:
        """Close this process's endpoint and leave the admin running (what `actorflow admin start` does)."""
        with self._lock:
            asys, self._asys = self._asys, None
            _open.discard(self)
        if asys is not None:
            asys._systemBase.transport.close()

    def shutdown(self, timeout: float = 10.0) -> ShutdownReport:
        """Stop the admin and all its actor processes; returns which ended and which had to be killed.

        Thespian is asked first (actors get ActorExitRequest); every PID of the session is then waited
        for, and any left after `timeout` is sent SIGTERM, then SIGKILL. Idempotent."""
        with self._lock:
            if self.report is not None:
                return self.report
            asys, self._asys = self._asys, None
            _open.discard(self)
            before = self.pids()
            if asys is not None:
                try:
                    asys.shutdown()
                except Exception:  # noqa: BLE001 - processes are stopped by PID below regardless
                    net_logger().warning("net_shutdown_request_failed", port=self.admin_port, exc_info=True)
            admin = {self.processes.admin_pid} & before
            ended, killed = _procs.stop_processes(admin, grace=timeout)
            # With the admin gone nobody will ask the rest to exit (orphans of a killed actor were never
            # asked): a short grace for those still exiting, then signals.
            for _ in range(2):  # the second round catches any started while we were stopping
                rest = (before | _procs.session_members(self.processes.session)) - ended - killed
                if not rest:
                    break
                more_ended, more_killed = _procs.stop_processes(rest, grace=min(1.0, timeout))
                ended, killed = ended | more_ended, killed | more_killed
            _procs.reap(self.processes.session)
            if self._record_dir is not None:
                remove_record(self.admin_port, self._record_dir)
            if killed:
                net_logger().warning("net_shutdown_killed", port=self.admin_port, pids=sorted(killed))
            self.report = ShutdownReport(frozenset(ended), frozenset(killed))
            return self.report


def _find_admin(port: int, timeout: float = 5.0) -> _procs.ProcessSet:
    deadline = time.monotonic() + timeout
    while True:
        pid = _procs.listening_pid(port)
        session = _procs.session_of(pid) if pid is not None else None
        if pid is not None and session is not None:
            return _procs.ProcessSet(pid, session)
        if time.monotonic() >= deadline:
            raise ConfigError(f"no process of ours listens on admin port {port}", admin_port=port)
        time.sleep(0.02)


def open_actor_system(
    *,
    admin_port: int,
    bind: str = "127.0.0.1",
    secret: bytes | str | None = None,
    capabilities: dict[str, Any] | None = None,
    join: str | None = None,
    start_method: str | None = None,
    log_config: dict[str, Any] | None = None,
    runtime_dir_path: str | os.PathLike[str] | None = None,
    daemon_log: str | os.PathLike[str] | None = None,
) -> SecureActorSystem:
    """Start a secured multiprocTCPBase admin on `admin_port`, or attach to the one already there.

    Every socket of the system listens on `bind` (loopback by default) and every frame carries an
    HMAC-SHA256 under the shared secret (`secret=`, else $ACTORFLOW_SECRET, else - attaching to a
    local admin actorflow started - its runtime record, else, on loopback only, a fresh random key).
    `join="HOST:PORT"` makes this admin a member of the convention led by that admin (same secret).
    `daemon_log`: a file for the admin's stdout/stderr (it then holds none of the caller's; what
    `actorflow admin start` uses). Raises ConfigError, naming the argument, before anything starts."""
    port = check_port(admin_port)
    host = check_bind(bind)
    caps = dict(capabilities or {})
    leader_host, leader_port = "", 0
    if join is not None:
        leader_host, leader_port = parse_hostport(join, "join")
        if is_loopback(host) and not is_loopback(leader_host):
            raise ConfigError(
                f"join={join!r} is another machine, but this admin would listen on {host} only: the "
                "leader could not reach it; pass bind= an address it can reach (and a secret)",
                join=join,
                bind=host,
            )
        caps[CONVENTION_CAPABILITY] = f"{leader_host}:{leader_port}"
    method = start_method or default_start_method()
    if method not in ("fork", "spawn"):
        raise ConfigError(f"start_method must be 'fork' or 'spawn', got {method!r}", start_method=method)
    caps["Admin Port"] = port
    caps["Process Startup Method"] = method
    records = runtime_dir(runtime_dir_path)
    running = _procs.listening_pid(port) is not None
    recorded = read_record(port, records) if running else None
    if recorded is None and join is not None and is_loopback(leader_host):
        recorded = read_record(leader_port, records)  # a local convention's member shares its leader's key
    key, source = resolve_secret(secret, host, recorded.key if recorded is not None else None)
    net = NetParams(key=key, bind=host, daemon_log=os.fspath(daemon_log) if daemon_log is not None else None)
    stub = SystemStub(caps)
    try:
        base = SecuredTCPBase(stub, log_config or DEFAULT_LOG_CONFIG, net=net)
    except InvalidActorAddress as exc:
        raise ConfigError(
            f"the admin on port {port} did not answer with frames authenticated by this secret "
            f"(from {source}): wrong secret, or not an actorflow admin",
            admin_port=port,
            secret_source=source,
        ) from exc
    asys = ActorSystem(base, stub.capabilities, log_config or DEFAULT_LOG_CONFIG, transientUnique=True)
    processes = _find_admin(port)
    _procs.reap(processes.session)  # the admin's short-lived parent, when it was our child
    record_dir: Path | None = None
    if not running:
        record_dir = records
        write_record(
            AdminRecord(port, host, processes.admin_pid, processes.session,
                        key=key if source == "generated" else None),
            records,
        )
    net_logger().info("net_actor_system_open", port=port, bind=host, started=not running, secret_source=source,
              admin_pid=processes.admin_pid)
    return SecureActorSystem(asys, admin_port=port, net=net, started=not running, processes=processes,
                             record_dir=record_dir)
