"""Starting and stopping a multiprocess engine's actor system, and its shards' restarts.

What the gateway thread of `MultiprocRuntime` does at the edges of the engine's life, apart from its
message loop (`_facade.py`): start or join the admin, have the supervisor create one `ShardActor`
per shard and wait until each is ready (a workflow a shard cannot load fails `open()` naming it);
greet a restarted shard and settle the waiters whose outcome died with the old process; drain the
shards on close, then stop every process this engine started and check it is gone, by PID.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
from thespian.actors import ActorExitRequest

from supervisors import (
    REPLY_TO,
    Backoff,
    ChildRestarted,
    ChildSpec,
    Escalated,
    Intensity,
    Strategy,
    Supervise,
    Supervising,
    SupervisorActor,
    SupervisorSpec,
)

from .._messages import WatchStatus
from .._net import open_actor_system
from .._runtime import final_outcome
from ..errors import ActorflowError, ConfigError, WorkflowNotRegistered
from ._node_shards import SHARD_NODE_CAPABILITY, wait_for_nodes
from ._options import require_admin
from ._routed import ShardUnavailable
from ._shard import ShardActor
from ._wire import Drain, Drained, Hello, Peers, ShardInit, ShardReady, Workflows

if TYPE_CHECKING:
    from ._facade import MultiprocRuntime

__all__ = ["QUIET_LOGS", "drain", "free_port", "join_admin", "members", "restarted", "resume", "settle",
           "setup", "shutdown"]

log = structlog.get_logger("actorflow.multiproc")

# multiproc children crash on logDefs=False (they call logDefs.get): a quiet dict config instead
QUIET_LOGS = {"version": 1, "disable_existing_loggers": False, "root": {"level": "CRITICAL"}}
_MEMBERS_LOCK = threading.Lock()  # members(): asked by one thread at a time in this process


def members(rt: MultiprocRuntime, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
    """The convention's member nodes with their own capabilities, asked of the admin from a
    handle of this thread's own (the facade thread's is not to be shared)."""
    system = rt._system
    if system is None:
        return []
    with _MEMBERS_LOCK:  # one at a time: two threads' handles at once lost each other's answers
        handle = open_actor_system(admin_port=system.admin_port, secret=rt._secret, log_config=QUIET_LOGS)
        try:
            return handle.members(timeout)
        finally:
            handle.detach()


def setup(rt: MultiprocRuntime) -> Any:
    """Start (or join) the admin, create the supervisor and the shards; returns the actor system
    once every shard is ready (after shutting it down again on any failure)."""
    if rt._join is not None:
        rt._system = join_admin(*rt._join, secret=rt._secret)
    else:
        port = rt._admin_port or free_port()
        rt._system = open_actor_system(
            admin_port=port, secret=rt._secret, start_method="fork", log_config=QUIET_LOGS
        )
        if not rt._system.started:  # something else already listened there: not ours to run engines in
            rt._system.detach()
            raise ConfigError(f"admin port {port} is taken by another actor system", admin_port=port)
    asys = rt._system.actor_system
    rt.admin_pid = rt._system.processes.admin_pid
    try:
        init = rt._init
        nodes = rt.shard_nodes
        if nodes:
            wait_for_nodes(rt._system.members, set(nodes.values()))
        here = tuple(i for i in range(rt.shards) if i not in nodes)
        children = [
            ChildSpec(
                f"shard-{i}",
                ShardActor,
                ShardInit(shard=i, workflows=rt._blobs, facade_pid=os.getpid(), **init,  # type: ignore[arg-type]
                          node=nodes.get(i, ""), cluster=rt.cluster if i in nodes else "",
                          env_shards=None if not nodes else (i,) if i in nodes else here),
                restart="transient",  # restarted after a crash; not after it stopped because the engine is gone
                # a node-owned shard is created on that node (Thespian requirements, as step workers are)
                requirements={SHARD_NODE_CAPABILITY: nodes[i]} if i in nodes else None,
            )
            for i in range(rt.shards)
        ]
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE,
            intensity=Intensity(max_restarts=5, within=10.0),
            backoff=Backoff(initial=0.0, multiplier=2.0, max=1.0),
            children=children,
            name="engine",
        )
        supervisor = rt._supervisor = asys.createActor(SupervisorActor)
        reply = asys.ask(supervisor, Supervise(spec, REPLY_TO), 60)
        if not isinstance(reply, Supervising):
            raise ActorflowError(f"the engine's supervisor did not start: {reply!r}")
        rt._addresses = {i: reply.addresses[f"shard-{i}"] for i in range(rt.shards)}
        asys._systemBase.transport.set_watch([rt._pipe.fd])  # post() wakes _listen
        for addr in rt._addresses.values():
            asys.tell(addr, Hello(rt._addresses))
        errors: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(rt.shard_pids) < rt.shards:
            if time.monotonic() > deadline:
                raise ActorflowError("the engine's shard processes did not start within 60 s")
            msg = asys.listen(0.5)
            if isinstance(msg, ShardReady):
                rt.shard_pids[msg.shard] = msg.pid
                rt._watch.alive(msg.shard, msg.worker)
                errors.update(msg.errors)
            elif isinstance(msg, ChildRestarted) and msg.name.startswith("shard-"):
                # killed during open: its successor waits for the Hello this sends, then is ready
                rt.shard_pids.pop(int(msg.name.split("-", 1)[1]), None)
                rt._restarted(asys, msg)
            elif isinstance(msg, Escalated):
                raise ActorflowError(f"shard {msg.child!r} kept failing while the engine opened: {msg.error}")
        if errors:
            name, why = next(iter(errors.items()))
            raise WorkflowNotRegistered(name, []) if not why else ConfigError(
                f"workflow {name!r} cannot be loaded in the engine's processes: {why}; workflows "
                "are sent by cloudpickle (functions of the main script by value, of importable "
                "modules by reference: the module must be importable where the admin runs)",
                workflow=name,
            )
    except BaseException:
        rt._shutdown(asys)
        raise
    return asys


def restarted(rt: MultiprocRuntime, asys: Any, msg: ChildRestarted) -> None:
    """The supervisor replaced a shard's process (during open() or after): greet the successor
    (it answers ShardReady) and give every other shard its new address."""
    shard = int(msg.name.split("-", 1)[1])
    rt.restarts += 1
    rt._addresses[shard] = msg.address
    rt._placement.pop(shard, None)  # the new shard reports its own
    rt._calls.replaced(shard)  # calls the dead process received are answered by nobody
    rt._watch.restarted(shard)
    log.warning("shard restarted", shard=shard, restarts=msg.restarts, error=msg.error)
    if rt._late_blobs:  # its init has only the workflows of open()
        asys.tell(msg.address, Workflows(dict(rt._late_blobs), recover=True))
    asys.tell(msg.address, Hello(rt._addresses))
    for other, addr in rt._addresses.items():
        if other != shard and other not in rt._watch.down:
            asys.tell(addr, Peers(rt._addresses))


def resume(rt: MultiprocRuntime, shard: int) -> None:
    """A shard (re)started: watch again what is monitored, settle waiters of runs that finished
    while their notice was lost with the old process."""
    waited, monitored = rt.watchers.awaited()
    for run_id in monitored:
        if rt.shard_of(run_id) == shard:
            rt._out.append(WatchStatus(run_id, True))
    waited = [r for r in waited if rt.shard_of(r) == shard]
    if shard in rt.shard_nodes:  # its journal answers by message: not on this (the gateway) thread
        threading.Thread(target=settle, args=(rt, waited), name="actorflow-settle", daemon=True).start()
    else:
        settle(rt, waited)


def settle(rt: MultiprocRuntime, waited: list[str]) -> None:
    """Waiters of runs that finished while their outcome notice was lost with a shard's process."""
    for run_id in waited:
        try:
            rec = rt.journal.get_run(run_id)
        except ShardUnavailable:
            log.warning("a run's shard did not answer; its waiter keeps waiting", run_id=run_id)
            continue
        if rec is not None and rec.finished:
            kind, data = final_outcome(rt.journal, run_id, rec)
            value = data if kind == "child_completed" else None
            rt.notifier.finished(run_id, rec, rec.state, value, None if value is not None else data)


def drain(rt: MultiprocRuntime, asys: Any, grace: float) -> None:
    drained: set[int] = set(rt._given_up)  # a stopped shard cannot answer: not waited for
    for shard, addr in rt._addresses.items():
        if shard not in drained:
            asys.tell(addr, Drain(grace))
    deadline = time.monotonic() + grace + 15
    while len(drained) < rt.shards and time.monotonic() < deadline:
        msg = asys.listen(0.2)
        if isinstance(msg, Drained):
            drained.add(msg.shard)
        elif msg is not None:
            rt._on_message(asys, msg)


def shutdown(rt: MultiprocRuntime, asys: Any) -> None:
    if rt._join is not None:  # not our admin: stop what we started in it, leave it running
        try:
            if rt._supervisor is not None:
                asys.tell(rt._supervisor, ActorExitRequest())  # its shards exit with it
        except Exception:  # noqa: BLE001 - the processes are checked below
            log.exception("supervisor stop request failed")
        finally:
            rt._system.detach()
        pids = list(rt.shard_pids.values())
    else:
        try:
            rt._system.shutdown(timeout=10.0)  # every process of the admin's session, checked by PID
        except Exception:  # noqa: BLE001 - the processes are checked below
            log.exception("actor system shutdown failed")
        pids = [p for p in (*rt.shard_pids.values(), rt.admin_pid) if p is not None]
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.05)
    for pid in pids:  # ours, still there after a clean shutdown was asked for: end them
        log.warning("engine process did not exit; killing it", pid=pid)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def join_admin(host: str, port: int, secret: str | bytes | None) -> Any:
    """Attach to the admin on HOST:PORT of this machine (`actorflow admin start`), never start one."""
    require_admin((host, port))
    system = open_actor_system(admin_port=port, bind=host, secret=secret)
    if system.started:  # it went away in between and this call started one: not what was asked
        system.shutdown(timeout=5.0)
        raise ConfigError(f"system='{host}:{port}': the admin there stopped while the engine joined it",
                          admin_port=port)
    return system


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
