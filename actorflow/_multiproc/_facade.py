"""The engine facade's side of a multiprocess engine: an admin, a supervisor, a shard per process.

`open()` starts a secured Thespian admin (`actorflow._net`: multiprocTCPBase with every frame
HMAC-authenticated before it is unpickled, sockets on loopback, a random per-admin key), a
SupervisorActor, and one `ShardActor` per shard as its children (each an OS process). The facade keeps what the embedded
engine keeps in its own process: the data directory's lock and a journal (starts and signals are
durable when they return, written here), the notifier that `result()`/`monitor()` wait on, and
reads (`status`, `history`, `runs`). One gateway thread owns the Thespian connection: it sends the
posted run messages, one packed batch per shard per round, and receives the shards' notices
(outcomes, status changes, replies) and the supervisor's (a shard restarted, the budget spent).
A post wakes it through a pipe its Thespian transport watches, so it idles in one long select.

A shard killed with -9 is restarted by the supervisor (ChildActorExited) and replays its runs; the
gateway tells it who the gateway and its peers are, re-sends the watches of monitored runs, and
settles waiters whose runs finished while their notice was lost with the process.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import cloudpickle
import structlog
from thespian.actors import ActorExitRequest, WatchMessage
from thespian.system import isInternalActorSystemMessage
from thespian.system.transport import ReceiveEnvelope

from storage import Codec, Journal, RunRecord
from supervisors import (
    REPLY_TO,
    Backoff,
    ChildRestarted,
    ChildSpec,
    Escalated,
    Intensity,
    Respawn,
    Strategy,
    Supervise,
    Supervising,
    SupervisorActor,
    SupervisorSpec,
)

from .._clock import Clock
from .._messages import Outcome, Reply, StatusChanged, WatchStatus
from .._net import open_actor_system
from .._runtime import Notifier, final_event, final_outcome
from .._types import RunStatus
from ..errors import ActorflowError, ConfigError, WorkflowNotRegistered
from ._node_shards import SHARD_NODE_CAPABILITY, wait_for_nodes
from ._node_watch import NodeWatch
from ._options import require_admin
from ._placement import PlacementState, PlacementWait
from ._routed import JournalCall, OwnerCalls, ShardUnavailable
from ._shard import ShardActor
from ._wakeup import WakePipe
from ._wire import (
    NOTICE_HANDLERS,
    Drain,
    Drained,
    GatewayBeat,
    Hello,
    Packed,
    Peers,
    ShardAlive,
    ShardInit,
    ShardReady,
    Workflows,
    pack,
    unpack,
)

__all__ = ["MultiprocRuntime"]

log = structlog.get_logger("actorflow.multiproc")

# multiproc children crash on logDefs=False (they call logDefs.get): a quiet dict config instead
_QUIET_LOGS = {"version": 1, "disable_existing_loggers": False, "root": {"level": "CRITICAL"}}
_MEMBERS_LOCK = threading.Lock()  # convention_members: asked by one thread at a time in this process
_LISTEN = 1.0  # seconds the gateway waits in one select when nothing happens (a post wakes it)
_HOUSEKEEP = 1.0  # seconds between the gateway's housekeeping calls (as the embedded pump's at most)


class FacadeNotifier(Notifier):
    """A Notifier whose monitors are announced to the run's shard (it reports only watched runs)."""

    def __init__(self, post: Callable[[Any], None]) -> None:
        super().__init__()
        self._post = post

    def add_monitor(self, run_id: str, cb: Callable[[RunStatus], None]) -> None:
        first = not self.watching(run_id)
        super().add_monitor(run_id, cb)
        if first:
            self._post(WatchStatus(run_id, True))

    def remove_monitor(self, run_id: str, cb: Callable[[RunStatus], None]) -> None:
        super().remove_monitor(run_id, cb)
        if not self.watching(run_id):
            self._post(WatchStatus(run_id, False))

    def awaited(self) -> tuple[list[str], list[str]]:
        """Runs someone waits on (result) and runs someone monitors."""
        with self._lock:
            return list(self._waiters), list(self._monitors)


class MultiprocRuntime:
    """What the Engine facade uses, for an engine whose run hosts live in other processes."""

    def __init__(
        self,
        clock: Clock,
        workflows: dict[str, Callable[..., Any]],
        names: dict[Callable[..., Any], str],
        *,
        data_dir: str,
        shards: int,
        codec: str,
        max_payload: int,
        sync: bool,
        passivate_after: float | None,
        step_threads: int,
        step_processes: int = 0,
        timer_horizon: float,
        admin_port: int | None = None,
        secret: str | bytes | None = None,
        step_requirements: dict[str, Any] | None = None,
        node_timeout: float = 15.0,
        join: tuple[str, int] | None = None,
        gc_threshold: tuple[int, int, int] | None = None,
        max_resident: int | None = None,
        shard_nodes: dict[int, str] | None = None,
    ) -> None:
        self.clock = clock
        self.workflows = workflows
        self.names = names
        self.shards = shards
        self.journal: Journal = None  # type: ignore[assignment]  # opened after the processes are forked
        self.watchers = FacadeNotifier(self.post)
        self.notifier: Notifier = self.watchers
        self.fatal: str | None = None
        self.closing = False
        self.shard_pids: dict[int, int] = {}
        # called on the gateway thread about every _HOUSEKEEP s (the control inbox's poll): cheap, must not block
        self.housekeepers: list[Callable[[], None]] = []
        self.restarts = 0
        self._given_up: set[int] = set()  # shards stopped by a supervisor that gave up (Escalated)
        self._init = dict(
            data_dir=data_dir,
            shards=shards,
            codec=codec,
            max_payload=max_payload,
            sync=sync,
            passivate_after=passivate_after,
            step_threads=step_threads,
            step_processes=step_processes,
            step_requirements=step_requirements,
            node_timeout=node_timeout,
            timer_horizon=timer_horizon,
            gc_threshold=gc_threshold,
            max_resident=max_resident,
        )
        self.shard_nodes = dict(shard_nodes or {})  # shard -> member node owning it (_node_shards)
        self.cluster = ""  # the engine's data set on those nodes: set by the Engine from the shard map
        # the journal calls of RoutedJournal to node-owned shards (_routed)
        self._calls = OwnerCalls(self.notifier.request, self.notifier.reply, self.post)
        self.journal_call = self._calls.call
        # a lost member node's shard: its calls fail at once; created again when the node rejoins
        self._watch = NodeWatch(self.shard_nodes, node_timeout, self._calls, self.convention_members, self._respawn)
        self._join = join  # an admin started by `actorflow admin start`: ours are only the supervisor and shards
        self._supervisor: Any = None
        self._placement: dict[int, tuple[PlacementWait, ...]] = {}
        self._admin_port = admin_port
        self._secret = secret
        self._out: deque[Any] = deque()
        self._late: deque[tuple[str, Callable[..., Any]]] = deque()  # registered after open, not sent yet
        self._late_blobs: dict[str, bytes] = {}  # every one registered after open (for restarted shards)
        self._pipe = WakePipe()
        self._addresses: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stop: float | None = None  # the grace period once close() was called
        self._stopped = threading.Event()
        self.admin_pid: int | None = None

    # --- what the Engine calls -----------------------------------------------------------------
    @property
    def codec(self) -> Codec:
        return self.journal.codec

    def post(self, item: Any) -> None:
        self._out.append(item)
        self._pipe.wake()

    post_and_help = post

    def add_workflow(self, name: str, fn: Callable[..., Any]) -> None:
        """A workflow registered (or replaced) after open: the gateway sends it to every shard before
        the next run message, so a start that follows the registration finds it there.

        It is pickled again when sent, not only now: a closure may refer to a workflow registered
        after it (a parent defined before its child), whose cell is filled only by then."""
        _dumps(name, fn)  # ConfigError here, at registration, naming it
        self._late.append((name, fn))

    def quiet(self) -> bool:
        return False  # no step runs in this process: a caller has nothing to help with

    def shard_of(self, run_id: str) -> int:
        return zlib.crc32(run_id.encode()) % self.shards if self.shards > 1 else 0

    def on_gateway(self) -> bool:
        return threading.current_thread() is self._thread

    def final_event(self, run_id: str) -> Any:
        return final_event(self.journal, run_id)

    def start(self) -> None:
        """Start the admin, supervisor and shard processes; returns once every shard runs."""
        self._blobs = {name: _dumps(name, fn) for name, fn in self.workflows.items()}
        self._thread = threading.Thread(target=self._run, name="actorflow-gateway", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def close(self, grace: float) -> None:
        """Let every shard finish running steps for `grace` seconds and journal them, then stop the
        actor system; returns once its processes are gone."""
        self.closing = True
        self._stop = grace
        self._pipe.wake()
        self._stopped.wait()
        if self._thread is not None:
            self._thread.join()

    # --- the gateway thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asys = self._setup()
        except BaseException as exc:  # noqa: BLE001 - raised to the caller of start()
            self._start_error = exc
            self._pipe.close()
            self._started.set()
            self._stopped.set()
            return
        self._started.set()
        try:
            self._loop(asys)
        except BaseException as exc:  # noqa: BLE001 - the gateway must not die silently
            log.exception("gateway failed")
            self.fatal = f"gateway failed: {exc!r}"
            self.notifier.fail_all("failed", {"error": f"engine stopped: {self.fatal}"})
        finally:
            self._shutdown(asys)
            self._pipe.close()
            self._stopped.set()

    def convention_members(self, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
        """The convention's member nodes with their own capabilities, asked of the admin from a
        handle of this thread's own (the facade thread's is not to be shared)."""
        system = getattr(self, "_system", None)
        if system is None:
            return []
        with _MEMBERS_LOCK:  # one at a time: two threads' handles at once lost each other's answers
            handle = open_actor_system(admin_port=system.admin_port, secret=self._secret, log_config=_QUIET_LOGS)
            try:
                return handle.members(timeout)
            finally:
                handle.detach()

    def waiting_for_placement(self) -> list[PlacementWait]:
        waits = [w for per in list(self._placement.values()) for w in per]
        return sorted(waits, key=lambda w: w.since)

    def _setup(self) -> Any:
        if self._join is not None:
            self._system = join_admin(*self._join, secret=self._secret)
        else:
            port = self._admin_port or _free_port()
            self._system = open_actor_system(
                admin_port=port, secret=self._secret, start_method="fork", log_config=_QUIET_LOGS
            )
            if not self._system.started:  # something else already listened there: not ours to run engines in
                self._system.detach()
                raise ConfigError(f"admin port {port} is taken by another actor system", admin_port=port)
        asys = self._system.actor_system
        self.admin_pid = self._system.processes.admin_pid
        try:
            init = self._init
            nodes = self.shard_nodes
            if nodes:
                wait_for_nodes(self._system.members, set(nodes.values()))
            here = tuple(i for i in range(self.shards) if i not in nodes)
            children = [
                ChildSpec(
                    f"shard-{i}",
                    ShardActor,
                    ShardInit(shard=i, workflows=self._blobs, facade_pid=os.getpid(), **init,  # type: ignore[arg-type]
                              node=nodes.get(i, ""), cluster=self.cluster if i in nodes else "",
                              env_shards=None if not nodes else (i,) if i in nodes else here),
                    restart="transient",  # restarted after a crash; not after it stopped because the engine is gone
                    # a node-owned shard is created on that node (Thespian requirements, as step workers are)
                    requirements={SHARD_NODE_CAPABILITY: nodes[i]} if i in nodes else None,
                )
                for i in range(self.shards)
            ]
            spec = SupervisorSpec(
                strategy=Strategy.ONE_FOR_ONE,
                intensity=Intensity(max_restarts=5, within=10.0),
                backoff=Backoff(initial=0.0, multiplier=2.0, max=1.0),
                children=children,
                name="engine",
            )
            supervisor = self._supervisor = asys.createActor(SupervisorActor)
            reply = asys.ask(supervisor, Supervise(spec, REPLY_TO), 60)
            if not isinstance(reply, Supervising):
                raise ActorflowError(f"the engine's supervisor did not start: {reply!r}")
            self._addresses = {i: reply.addresses[f"shard-{i}"] for i in range(self.shards)}
            asys._systemBase.transport.set_watch([self._pipe.fd])  # post() wakes _listen
            for addr in self._addresses.values():
                asys.tell(addr, Hello(self._addresses))
            errors: dict[str, str] = {}
            deadline = time.monotonic() + 60
            while len(self.shard_pids) < self.shards:
                if time.monotonic() > deadline:
                    raise ActorflowError("the engine's shard processes did not start within 60 s")
                msg = asys.listen(0.5)
                if isinstance(msg, ShardReady):
                    self.shard_pids[msg.shard] = msg.pid
                    self._watch.alive(msg.shard, msg.worker)
                    errors.update(msg.errors)
                elif isinstance(msg, ChildRestarted) and msg.name.startswith("shard-"):
                    # killed during open: its successor waits for the Hello this sends, then is ready
                    self.shard_pids.pop(int(msg.name.split("-", 1)[1]), None)
                    self._restarted(asys, msg)
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
            self._shutdown(asys)
            raise
        return asys

    def _loop(self, asys: Any) -> None:
        out = self._out
        late = self._late
        next_housekeep = time.monotonic() + _HOUSEKEEP
        self._watch.restarted_all()  # the open's wait for every shard is no node's silence
        while True:
            if (self.housekeepers or self.shard_nodes) and time.monotonic() >= next_housekeep:
                next_housekeep = time.monotonic() + _HOUSEKEEP
                for shard in self.shard_nodes:  # a node-owned shard stops when these stop (_shard)
                    if shard not in self._watch.down:  # a lost node's address may take long to refuse
                        asys.tell(self._addresses[shard], GatewayBeat())
                if self.shard_nodes:
                    self._calls.expire()  # calls a lost node never answers
                    self._watch.tick()  # shards not answering the beats: lost; back when their node is
                for hk in self.housekeepers:
                    try:
                        hk()
                    except Exception:  # noqa: BLE001 - the gateway must go on
                        log.exception("housekeeping failed")
            if out:
                # workflows registered before these posts go first (a late one is pickled only now,
                # with the run message that may need it: its closure's cells are filled by then)
                n = len(out)
                if late:
                    self._send_workflows(asys)
                self._send(asys, n)
            if self._stop is not None and not out:
                self._drain(asys, self._stop)
                return
            msg = _listen(asys, _LISTEN)
            if type(msg) is WatchMessage:
                self._pipe.consume()  # then the loop's top sends what the posts queued
            elif msg is not None:
                self._on_message(asys, msg)

    def _send_workflows(self, asys: Any) -> None:
        fns = {}
        while self._late:
            name, fn = self._late.popleft()
            fns[name] = fn
        blobs = {}
        for name, fn in fns.items():
            try:
                blobs[name] = self._late_blobs[name] = _dumps(name, fn)
            except ConfigError:  # it pickled when registered; its runs stay pending, as unregistered ones
                log.exception("workflow registered after open cannot be sent", workflow=name)
        for addr in self._addresses.values():
            asys.tell(addr, Workflows(blobs))

    def _send(self, asys: Any, n: int) -> None:
        """Send the first `n` posted items, one packed batch per shard."""
        out, per = self._out, {}  # type: ignore[var-annotated]
        shard_of = self.shard_of
        for _ in range(n):
            item = out.popleft()
            shard = item.shard if type(item) is JournalCall else shard_of(item.run_id)
            per.setdefault(shard, []).append(item)
        down = self._watch.down
        for shard, items in per.items():
            if shard in down:  # its node is lost: nobody would get them (watches are sent again on ShardReady)
                log.debug("items for a lost shard dropped", shard=shard, n=len(items))
                continue
            asys.tell(self._addresses[shard], pack(items))

    def _on_message(self, asys: Any, msg: Any) -> None:
        t = type(msg)
        if t is Packed:
            notifier = self.notifier
            for item in unpack(msg):
                it = type(item)
                if it is Outcome:
                    notifier.finished(item.run_id, RunRecord.from_tuple(item.record), item.state, item.value, item.data)
                elif it is StatusChanged:
                    notifier.status_changed(item.status)
                elif it is Reply:
                    notifier.reply(item.request_id, item.value, item.error)
                elif it is PlacementState:
                    self._placement[item.shard] = item.waits
                else:
                    handler = NOTICE_HANDLERS.get(it)
                    if handler is not None:
                        handler(item)
        elif t is ShardAlive:
            self._watch.alive(msg.shard, msg.worker)
        elif t is ShardReady:
            self.shard_pids[msg.shard] = msg.pid
            self._watch.alive(msg.shard, msg.worker)
            self._resume(msg.shard)
        elif t is ChildRestarted and msg.name.startswith("shard-"):
            self._restarted(asys, msg)
        elif t is Escalated:
            self._given_up.update(self._addresses)  # the supervisor stopped every shard: none will drain
            self.fatal = f"shard {msg.child!r} kept failing beyond its restart budget: {msg.error}"
            log.error("supervisor gave up", child=msg.child, error=msg.error)
            self.notifier.fail_all("failed", {"error": f"engine stopped: {self.fatal}"})

    def _restarted(self, asys: Any, msg: ChildRestarted) -> None:
        """The supervisor replaced a shard's process (during open() or after): greet the successor
        (it answers ShardReady) and give every other shard its new address."""
        shard = int(msg.name.split("-", 1)[1])
        self.restarts += 1
        self._addresses[shard] = msg.address
        self._placement.pop(shard, None)  # the new shard reports its own
        self._calls.replaced(shard)  # calls the dead process received are answered by nobody
        self._watch.restarted(shard)
        log.warning("shard restarted", shard=shard, restarts=msg.restarts, error=msg.error)
        if self._late_blobs:  # its init has only the workflows of open()
            asys.tell(msg.address, Workflows(dict(self._late_blobs), recover=True))
        asys.tell(msg.address, Hello(self._addresses))
        for other, addr in self._addresses.items():
            if other != shard and other not in self._watch.down:
                asys.tell(addr, Peers(self._addresses))

    def _respawn(self, shard: int) -> None:
        """On the gateway thread: the lost node of `shard` rejoined; the supervisor creates it there."""
        asys = self._system.actor_system
        asys.tell(self._supervisor, Respawn(f"shard-{shard}", f"node {self.shard_nodes[shard]!r} rejoined"))

    def _resume(self, shard: int) -> None:
        """A shard (re)started: watch again what is monitored, settle waiters of runs that finished
        while their notice was lost with the old process."""
        waited, monitored = self.watchers.awaited()
        for run_id in monitored:
            if self.shard_of(run_id) == shard:
                self._out.append(WatchStatus(run_id, True))
        waited = [r for r in waited if self.shard_of(r) == shard]
        if shard in self.shard_nodes:  # its journal answers by message: not on this (the gateway) thread
            threading.Thread(target=self._settle, args=(waited,), name="actorflow-settle", daemon=True).start()
        else:
            self._settle(waited)

    def _settle(self, waited: list[str]) -> None:
        for run_id in waited:
            try:
                rec = self.journal.get_run(run_id)
            except ShardUnavailable:
                log.warning("a run's shard did not answer; its waiter keeps waiting", run_id=run_id)
                continue
            if rec is not None and rec.finished:
                kind, data = final_outcome(self.journal, run_id, rec)
                value = data if kind == "child_completed" else None
                self.notifier.finished(run_id, rec, rec.state, value, None if value is not None else data)

    def _drain(self, asys: Any, grace: float) -> None:
        drained: set[int] = set(self._given_up)  # a stopped shard cannot answer: not waited for
        for shard, addr in self._addresses.items():
            if shard not in drained:
                asys.tell(addr, Drain(grace))
        deadline = time.monotonic() + grace + 15
        while len(drained) < self.shards and time.monotonic() < deadline:
            msg = asys.listen(0.2)
            if isinstance(msg, Drained):
                drained.add(msg.shard)
            elif msg is not None:
                self._on_message(asys, msg)

    def _shutdown(self, asys: Any) -> None:
        if self._join is not None:  # not our admin: stop what we started in it, leave it running
            try:
                if self._supervisor is not None:
                    asys.tell(self._supervisor, ActorExitRequest())  # its shards exit with it
            except Exception:  # noqa: BLE001 - the processes are checked below
                log.exception("supervisor stop request failed")
            finally:
                self._system.detach()
            pids = list(self.shard_pids.values())
        else:
            try:
                self._system.shutdown(timeout=10.0)  # every process of the admin's session, checked by PID
            except Exception:  # noqa: BLE001 - the processes are checked below
                log.exception("actor system shutdown failed")
            pids = [p for p in (*self.shard_pids.values(), self.admin_pid) if p is not None]
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


def _dumps(name: str, fn: Callable[..., Any]) -> bytes:
    try:
        return cloudpickle.dumps(fn)  # type: ignore[no-any-return]
    except Exception as exc:
        raise ConfigError(
            f"workflow {name!r} cannot be sent to the engine's processes ({type(exc).__name__}: {exc}); "
            "define it at module level, without references to live objects such as the engine",
            workflow=name,
        ) from exc


def _listen(asys: Any, timeout: float) -> Any:
    """`asys.listen`, except that a WatchMessage (the post pipe is readable) is returned too: the
    public listen drops it and waits on, which would leave a post unsent until a notice came."""
    resp = asys._systemBase._run_transport(timedelta(seconds=timeout))
    if not isinstance(resp, ReceiveEnvelope):
        return None
    msg = resp.message
    if isinstance(msg, WatchMessage) or not isInternalActorSystemMessage(msg):
        return msg
    return None


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
