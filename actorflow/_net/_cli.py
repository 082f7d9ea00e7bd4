"""`actorflow admin start|stop|status` and `actorflow worker --join HOST:PORT`.

Output is one JSON object per command on stdout (machine-readable); errors go to stderr with exit 1.
`admin status` exits 3 when no admin listens on the port (as `systemctl status` does)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from .._malloc import pin_mmap_threshold
from .._multiproc._node_shards import NODE_DATA_ENV, SHARD_NODE_CAPABILITY, node_id
from .._multiproc._node_slots import SLOTS_ENV, make_slots
from .._placed import NODE_ENV, QUEUES_CAPABILITY, WORKER_CAPABILITY
from ..errors import ConfigError
from . import _procs
from ._config import read_record, remove_record, runtime_dir

if TYPE_CHECKING:
    from ._system import SecureActorSystem


def open_actor_system(**kw: Any) -> SecureActorSystem:
    # imported when a command runs: `actorflow demo` must not depend on the transport audit passing
    from ._system import open_actor_system as _open

    return _open(**kw)

__all__ = ["add_subcommands", "WORKER_CAPABILITY"]

DEFAULT_PORT = 1900

NOT_RUNNING = 3


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _common(p: argparse.ArgumentParser, port: int = DEFAULT_PORT) -> None:
    p.add_argument("--port", type=int, default=port, help=f"admin TCP port (default {port})")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else needs $ACTORFLOW_SECRET)")
    p.add_argument("--runtime-dir", default=None,
                   help="where admin records (PIDs, a generated key) live (default $ACTORFLOW_RUNTIME_DIR, "
                        "$XDG_RUNTIME_DIR/actorflow or ~/.local/state/actorflow/run)")


def _admin_start(args: argparse.Namespace) -> int:
    if _procs.listening_pid(args.port) is not None:
        raise ConfigError(f"port {args.port} is already in use (an admin runs there? see `admin status`)",
                          admin_port=args.port)
    directory = runtime_dir(args.runtime_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = args.log_file or str(directory / f"admin-{args.port}.log")
    system = open_actor_system(admin_port=args.port, bind=args.bind, secret=None,
                               start_method=args.start_method, runtime_dir_path=directory, daemon_log=log)
    pids = system.pids()
    system.detach()  # the admin is a daemon: it outlives this command until `admin stop`
    _print({"started": True, "admin": system.admin_address, "admin_pid": system.processes.admin_pid,
            "pids": sorted(pids), "log": log})
    return 0


def _admin_status(args: argparse.Namespace) -> int:
    if _procs.listening_pid(args.port) is None:
        _print({"running": False, "port": args.port})
        return NOT_RUNNING
    system = open_actor_system(admin_port=args.port, bind=args.bind, secret=None,
                               runtime_dir_path=args.runtime_dir)
    try:
        _print({"running": True, **system.status()})
    finally:
        system.detach()
    return 0


def _admin_stop(args: argparse.Namespace) -> int:
    directory = runtime_dir(args.runtime_dir)
    if _procs.listening_pid(args.port) is None:
        _print({"running": False, "port": args.port})
        remove_record(args.port, directory)
        return 0
    try:
        system = open_actor_system(admin_port=args.port, bind=args.bind, secret=None,
                                   runtime_dir_path=args.runtime_dir)
    except ConfigError:
        record = read_record(args.port, directory)
        if record is None:
            raise
        # the key is gone (or wrong), but we started this admin: stop it by its PIDs
        pids = _procs.session_members(record.session)
        ended, killed = _procs.stop_processes(pids, grace=0.0)
        remove_record(args.port, directory)
        _print({"stopped": True, "by": "signal", "ended": sorted(ended), "killed": sorted(killed)})
        return 0
    report = system.shutdown(timeout=args.timeout)
    remove_record(args.port, directory)
    _print({"stopped": True, "by": "request", "ended": sorted(report.ended), "killed": sorted(report.killed)})
    return 0


def _capability(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"capability must be NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _queues(text: str) -> list[str]:
    names = [q.strip() for q in text.split(",") if q.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--queues needs at least one queue name, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--concurrency must be an int >= 1, got {text!r}")
    return n


def _worker(args: argparse.Namespace) -> int:
    pin_mmap_threshold()  # a long-running node; its admin and actors are forked from here and keep it
    caps: dict[str, Any] = {WORKER_CAPABILITY: True, **dict(args.capability or [])}
    # what engine.workers() shows of this node (its admin reports them to whoever asks it)
    caps.update({"actorflow.pid": os.getpid(), "actorflow.host": socket.gethostname(), "actorflow.started_at": time.time()})
    os.environ[NODE_ENV] = f"{socket.gethostname()}:{os.getpid()}"  # its actors name their node to their shards
    if args.queues is not None:
        caps[QUEUES_CAPABILITY] = args.queues
    if args.data_dir is not None:  # this node can own shards: their journals go under this directory
        data_dir = os.path.abspath(args.data_dir)
        caps[SHARD_NODE_CAPABILITY] = node_id(data_dir, args.node_id)
        os.environ[NODE_DATA_ENV] = data_dir  # the node's actors inherit it; no peer names a path here
    elif args.node_id is not None:
        raise ConfigError("--node-id names a node that owns shards: it needs --data-dir")
    slots_dir = None
    if args.concurrency is not None:
        caps["actorflow.concurrency"] = args.concurrency
        # N handlers at once across the node's step actors (one per shard placing work here): they
        # inherit this environment and hold a slot file's lock while a handler runs (_node_slots)
        slots_dir = tempfile.mkdtemp(prefix="actorflow-node-slots-")
        os.environ[SLOTS_ENV] = make_slots(slots_dir, args.concurrency)
    system = open_actor_system(admin_port=args.port, bind=args.bind, secret=None, capabilities=caps,
                               join=args.join, start_method=args.start_method,
                               runtime_dir_path=args.runtime_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _print({"joined": args.join, "admin": system.admin_address, "admin_pid": system.processes.admin_pid,
                "capabilities": caps})
        stop.wait()
    finally:
        report = system.shutdown()
        if slots_dir is not None:
            shutil.rmtree(slots_dir, ignore_errors=True)
        _print({"stopped": True, "ended": sorted(report.ended), "killed": sorted(report.killed)})
    return 0


def add_subcommands(sub: Any) -> None:
    """Register `admin` and `worker` on the main parser's subparsers."""
    admin = sub.add_parser("admin", help="run a secured multiprocess actor-system admin (daemon)")
    asub = admin.add_subparsers(dest="admin_cmd", required=True)
    start = asub.add_parser("start", help="start an admin and return (it keeps running)")
    _common(start)
    start.add_argument("--start-method", choices=("fork", "spawn"), default=None)
    start.add_argument("--log-file", default=None,
                       help="the admin's stdout/stderr and warnings (default: admin-PORT.log in the runtime dir)")
    start.set_defaults(fn=_admin_start)
    status = asub.add_parser("status", help="show an admin's processes, sockets and convention (JSON)")
    _common(status)
    status.set_defaults(fn=_admin_status)
    stop = asub.add_parser("stop", help="stop an admin and every process it started (checked by PID)")
    _common(stop)
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds before stragglers are killed")
    stop.set_defaults(fn=_admin_stop)

    worker = sub.add_parser(
        "worker",
        help="join this machine to an admin's convention and serve actors until SIGINT/SIGTERM",
        description="Starts a local admin that joins the convention led by HOST:PORT, advertising the "
                    f"capability {WORKER_CAPABILITY}=True (plus --capability ones), so actors created with "
                    "that requirement are placed here. Runs until SIGINT/SIGTERM, then stops its "
                    "processes.",
    )
    worker.add_argument("--join", required=True, metavar="HOST:PORT", help="the convention leader's admin")
    _common(worker, port=DEFAULT_PORT + 1)
    worker.add_argument("--capability", action="append", type=_capability, metavar="NAME=VALUE",
                        help="extra capability (value parsed as JSON when it can be)")
    worker.add_argument("--queues", type=_queues, default=None, metavar="Q1,Q2",
                        help="task queues this node consumes (default: every queue)")
    worker.add_argument("--concurrency", type=_positive, default=None, metavar="N",
                        help="steps (task handlers) this node runs at once per shard (default 32)")
    worker.add_argument("--data-dir", default=None, metavar="DIR",
                        help="let this node own shards (Engine(shard_nodes=...)): their journals live here")
    worker.add_argument("--node-id", default=None, metavar="ID",
                        help="this node's id in shard_nodes (default: generated once, kept in --data-dir)")
    worker.add_argument("--start-method", choices=("fork", "spawn"), default=None)
    worker.set_defaults(fn=_worker)


if __name__ == "__main__":  # pragma: no cover - `python -m actorflow._net._cli` for debugging
    parser = argparse.ArgumentParser(prog="actorflow")
    add_subcommands(parser.add_subparsers(dest="cmd", required=True))
    ns = parser.parse_args()
    sys.exit(int(ns.fn(ns)))
