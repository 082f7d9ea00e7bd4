"""Which processes belong to an actor system, from /proc (Linux): found by the admin's listening socket.

Thespian's admin daemonizes (``setsid`` then fork), so it is not our child and its PID is not the one
multiprocessing reports. Its listening socket finds it; its session finds every process it started, also
actors orphaned by a killed parent (they keep the session). Stopping an actor system is verified against
these PIDs, not against Thespian's word.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ProcessSet",
    "alive",
    "disable_inherited_listeners",
    "listeners",
    "listening_pid",
    "reap",
    "redirect_stdio",
    "session_of",
    "session_members",
    "stop_processes",
]

_LISTEN = "0A"


@dataclass(frozen=True)
class ProcessSet:
    """The processes of one actor system: the admin's PID and the session all of them share."""

    admin_pid: int
    session: int


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return [str(pid), raw[raw.index("(") + 1 : raw.rindex(")")]] + raw[raw.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[2] not in ("Z", "X")


def session_of(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[5]) if st is not None else None


def _pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def session_members(session: int) -> set[int]:
    """Live processes of the session (an actor system's admin and every process under it)."""
    found = set()
    for pid in _pids():
        st = _stat(pid)
        if st is not None and int(st[5]) == session and st[2] not in ("Z", "X"):
            found.add(pid)
    return found


def _decode(hexaddr: str) -> tuple[str, int]:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16)))
    else:
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *struct.unpack(">4I", bytes.fromhex(host))))
    return ip, int(port, 16)


def listeners() -> dict[int, tuple[str, int]]:
    """Listening TCP sockets of this network namespace: inode -> (address, port)."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == _LISTEN:
                found[int(cols[9])] = _decode(cols[1])
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_pid(port: int) -> int | None:
    """The process of our uid listening on TCP `port` (any address).

    A forked child may hold an inherited copy of the socket (Thespian's logger does): of the holders,
    the one whose parent is not a holder is the owner."""
    wanted = {inode for inode, (_, p) in listeners().items() if p == port}
    if not wanted:
        return None
    uid = os.getuid()
    holders: dict[int, int] = {}
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        if _socket_inodes(pid) & wanted:
            st = _stat(pid)
            if st is not None:
                holders[pid] = int(st[3])
    roots = [pid for pid, ppid in holders.items() if ppid not in holders]
    return min(roots) if roots else None


def listening_addresses(pids: Iterable[int]) -> dict[int, list[tuple[str, int]]]:
    """pid -> the TCP addresses it listens on."""
    table = listeners()
    return {pid: sorted(table[i] for i in _socket_inodes(pid) if i in table) for pid in pids}


def disable_inherited_listeners(keep: int) -> int:
    """Neutralize listening sockets this process inherited by fork (its starter's, its parent's).

    Thespian forks its admin, logger and actors without closing the parent's listeners; nobody accepts
    on those copies, so they would be ports that take connections and never answer. Each is replaced by
    /dev/null at the same fd number (a stale socket object closing it later cannot hit a reused fd).
    Returns how many were replaced."""
    table = listeners()
    replaced = 0
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for name in fds:
        fd = int(name)
        if fd == keep:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in table:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
            replaced += 1
    return replaced


def redirect_stdio(path: str) -> None:
    """Detach a daemon from its starter's terminal or pipes: stdin from /dev/null, stdout/err to `path`.

    A daemon holding its starter's stdout pipe would keep `$(actorflow admin start)` waiting forever."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
    finally:
        os.close(null)
        os.close(out)


def reap(pid: int) -> None:
    """Collect `pid` if it is our exited child (Thespian leaves its admin's intermediate parent unreaped)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _wait_gone(pids: set[int], deadline: float) -> set[int]:
    while True:
        left = {p for p in pids if alive(p)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def stop_processes(pids: set[int], grace: float) -> tuple[set[int], set[int]]:
    """Wait up to `grace` for `pids` to end, then SIGTERM, then SIGKILL. Returns (ended, killed)."""
    left = _wait_gone(pids, time.monotonic() + grace)
    killed: set[int] = set()
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        killed |= left
        left = _wait_gone(left, time.monotonic() + wait)
    if left:
        raise OSError(f"processes {sorted(left)} survived SIGKILL")
    return pids - killed, killed
