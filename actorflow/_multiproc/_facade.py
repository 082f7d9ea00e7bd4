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

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import cloudpickle
import structlog
from thespian.actors import WatchMessage
from thespian.system import isInternalActorSystemMessage
from thespian.system.transport import ReceiveEnvelope

from storage import Codec, Journal, RunRecord
from supervisors import (
    ChildRestarted,
    Escalated,
    Respawn,
)

from .._clock import Clock
from .._messages import Outcome, Reply, StatusChanged, WatchStatus
from .._runtime import Notifier, final_event
from .._types import RunStatus
from ..errors import ConfigError
from . import _facade_life as _life
from ._node_watch import NodeWatch
from ._placement import PlacementState, PlacementWait
from ._routed import JournalCall, OwnerCalls
from ._wakeup import WakePipe
from ._wire import (
    NOTICE_HANDLERS,
    GatewayBeat,
    Packed,
    ShardAlive,
    ShardReady,
    Workflows,
    pack,
    unpack,
)

__all__ = ["MultiprocRuntime"]

log = structlog.get_logger("actorflow.multiproc")

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
        self._system: Any = None  # the SecureActorSystem handle: set by _facade_life.setup

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
        """The convention's member nodes with their own capabilities (see `_facade_life.members`)."""
        return _life.members(self, timeout)

    def waiting_for_placement(self) -> list[PlacementWait]:
        waits = [w for per in list(self._placement.values()) for w in per]
        return sorted(waits, key=lambda w: w.since)

    def _setup(self) -> Any:
        return _life.setup(self)

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
        _life.restarted(self, asys, msg)

    def _respawn(self, shard: int) -> None:
        """On the gateway thread: the lost node of `shard` rejoined; the supervisor creates it there."""
        asys = self._system.actor_system
        asys.tell(self._supervisor, Respawn(f"shard-{shard}", f"node {self.shard_nodes[shard]!r} rejoined"))

    def _resume(self, shard: int) -> None:
        _life.resume(self, shard)

    def _drain(self, asys: Any, grace: float) -> None:
        _life.drain(self, asys, grace)

    def _shutdown(self, asys: Any) -> None:
        _life.shutdown(self, asys)




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
