"""A shard process: one supervised Thespian actor hosting the run actors of one shard.

It opens its own resources from a picklable `ShardInit` (the journal on the shared data directory,
a step pool, the workflow code) and runs the same host, timer and signal actors as the embedded
engine, on an in-process pump, for its shard only. Its timers fire on this actor's Thespian
`wakeupAfter` (`_timer_wake`), not on the pump reading a shared next-due time. Thespian carries what crosses the process:
batches of run messages in (from the facade and from other shards), batches of notices out
(outcomes, status changes, replies) and of run messages for other shards.

Threads of this process (step workers, the journal's commit thread, the pump) may not use the
actor's Thespian connection, so what they produce for other processes waits in `outbound`, and a
byte written to a pipe the actor watches (ThespianWatch) wakes the actor to send it from its own
thread at once. A wakeup every second checks that the engine process is still there; timer
wakeups (payload `TimerWake`) only tick the timer wheel.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
import structlog
from thespian.actors import ChildActorExited, WatchMessage

from storage import Codec, LmdbJournal, RunRecord
from supervisors import SupervisedActor

from .._clock import SystemClock
from .._lockfile import DirLock
from .._malloc import pin_mmap_threshold
from .._messages import LoadRun, Outcome, PumpCall, Reply, StatusChanged, TimerTick, WatchStatus
from .._placed import NODE_ENV
from .._runtime import Notifier, Runtime
from .._thespian import ActorRuntime
from .._types import RunStatus
from ..errors import ActorflowError
from ._node_shards import shard_dir
from ._placement import Placement
from ._remote_steps import capabilities_match
from ._routed import JournalCall, serve_call
from ._timer_wake import TimerWake, TimerWakeups
from ._wakeup import WakePipe
from ._wire import (
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

__all__ = ["ShardActor", "ShardNotifier"]

log = structlog.get_logger("actorflow.shard")

_CHECK_EVERY = 1.0  # seconds between checks that the engine process is alive
_LOCK_WAIT = 30.0  # seconds a shard waits for its predecessor (of an engine killed with -9) to stop
_GATEWAY = -1  # outbound target: the facade
# Where code running in this shard process tells the facade something (a picklable notice the
# facade hands to its NOTICE_HANDLERS): set by the shard actor of this process.
TO_FACADE: list[Callable[[Any], None]] = []


class ShardNotifier(Notifier):
    """Where this shard's hosts report outcomes, status changes and replies: out to the facade."""

    def __init__(self, out: Callable[[int, Any], None]) -> None:
        super().__init__()
        self._out = out
        self.watched: set[str] = set()

    def watching(self, run_id: str) -> bool:
        return run_id in self.watched

    def status_changed(self, status: RunStatus) -> None:
        self._out(_GATEWAY, StatusChanged(status))

    def finished(self, run_id: str, record: RunRecord, state: str, value: Any, data: Any) -> None:
        self._out(_GATEWAY, Outcome(run_id, record.as_tuple(), state, value, data))

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None) -> None:
        self._out(_GATEWAY, Reply(request_id, value, error))


class WorkflowNames(dict[Callable[..., Any], str]):
    """The shard's `Runtime.names` (function -> registered name, which ctx.child(fn) looks up).

    A function here is a copy made by cloudpickle: the registered copy, or another one inside some
    workflow's closure (a test's or a script's local functions travel by value, each pickle its own
    copy). So a function not found by identity is found by where it was defined."""

    def __init__(self) -> None:
        super().__init__()
        self._by_origin: dict[tuple[str, str], str] = {}

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        self[fn] = name
        self._by_origin[_origin(fn)] = name

    def get(self, fn: Any, default: Any = None) -> Any:
        name = super().get(fn)
        if name is None:
            name = self._by_origin.get(_origin(fn))
        return default if name is None else name


def _origin(fn: Any) -> tuple[str, str]:
    return (getattr(fn, "__module__", None) or "", getattr(fn, "__qualname__", None) or repr(fn))


class ShardFailed(ActorflowError):
    """The shard's in-process actors gave up: the supervisor restarts the whole shard process's actor."""


class ShardActor(SupervisedActor):
    """Hosts one shard's runs in this process (see the module docstring)."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:  # noqa: N802
        # a shard owned by a member node is created with {SHARD_NODE_CAPABILITY: its id}
        return capabilities_match(capabilities, requirements or {})

    def on_start(self, init: ShardInit) -> None:
        pin_mmap_threshold()  # a long-running process, as the engine's (a forked one inherits it already)
        self.init = init
        # the engine is alive: its PID for a shard on its machine; its beats for one on a member node
        self._facade_here = not init.node
        self._heard = time.monotonic()
        if init.gc_threshold is not None:  # this process is the shard's alone: no host's tuning to respect
            gc.set_threshold(*init.gc_threshold)
        self.gateway: Any = None
        self.peers: dict[int, Any] = {}
        self.outbound: deque[tuple[int, Any]] = deque()
        self._pipe = WakePipe()
        self._closed = False
        workflows: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        for name, blob in init.workflows.items():
            try:
                workflows[name] = cloudpickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - reported to the facade, naming the workflow
                self.errors[name] = f"{type(exc).__name__}: {exc}"
        # the shard of an engine killed with -9 runs on until it sees that (within _CHECK_EVERY): this
        # one must not recover the same runs beside it
        # a node-owned shard's journal is its own, in a directory the node chose (_node_shards)
        data_dir = shard_dir(init.cluster, init.shard, init.node) if init.node else init.data_dir
        self.lock = DirLock(data_dir, f"shard-{init.shard}.lock")
        self.lock.acquire(wait=_LOCK_WAIT)
        self.journal = LmdbJournal(data_dir, sync=init.sync, codec=Codec(init.codec, init.max_payload))
        rt = Runtime(
            self.journal,
            SystemClock(),
            workflows,
            shards=init.shards,
            passivate_after=init.passivate_after,
            step_threads=init.step_threads,
            timer_horizon=init.timer_horizon,
            step_processes=init.step_processes,
            max_resident=init.max_resident,
        )
        rt.names = self.names = WorkflowNames()
        for name, fn in workflows.items():
            self.names.add(name, fn)
        rt.local_shards = (init.shard,)
        if init.env_shards is not None:
            rt.env_shards = frozenset(init.env_shards)
        rt.remote = self._out
        rt.notifier = self.notifier = ShardNotifier(self._out)
        self.rt = rt
        self.timers = TimerWakeups()
        rt.on_timer_due = self._timer_due  # the timer actor's next due time: a wakeup of this actor
        # steps with requirements go to member nodes (actorflow/_multiproc/_placement.py); others run here
        self.placement = Placement(self, shard=init.shard, default=init.step_requirements,
                                   node_timeout=init.node_timeout, local=rt.steps.run_sync_with(None),
                                   wake=self._signal, report=functools.partial(self._out, _GATEWAY))
        rt.steps.run_sync_with(self.placement.run)
        rt.steps.async_here = not init.step_requirements  # async steps too go to the nodes
        TO_FACADE[:] = [functools.partial(self._out, _GATEWAY)]
        self.actors = ActorRuntime(rt)
        self.actors.start()  # queues the recovery of this shard's runs
        self.wakeup_after(_CHECK_EVERY)
        self._arm_timers()  # the durable timers the timer actor loaded from the journal

    def watch_fds(self) -> list[int]:
        return [] if getattr(self, "_closed", True) else [self._pipe.fd]

    def _out(self, target: int, item: Any) -> None:
        """From any thread: queue `item` for another process and wake the actor to send it."""
        self.outbound.append((target, item))
        self._signal()

    def _signal(self) -> None:
        self._pipe.wake()

    def _timer_due(self, due: float) -> None:
        """From the thread running the in-process actors: the timer wheel's next due time. Only this
        actor's thread may call wakeupAfter: wake it if the wakeup it has pending is too late."""
        if self.timers.due(due):
            self._signal()

    def _arm_timers(self) -> None:
        """On the actor's thread: request a wakeup for the wheel's next due time unless one is pending."""
        wake = self.timers.arm(self.rt.clock.now())
        if wake is not None:
            self.wakeup_after(*wake)

    def _tick_timers(self) -> None:
        """On the thread holding the pump lock: fire what is due now (the wheel publishes its next due
        time, which arms the next wakeup - also when nothing was due yet)."""
        self.actors.asys.tell(self.rt.addresses["timer"], TimerTick(self.rt.clock.now()))

    def handle(self, message: Any, sender: Any) -> None:
        try:
            self._handle(message, sender)
            if not getattr(self, "_closed", True):
                self._arm_timers()  # the round this message ran may have armed an earlier timer
        except Exception:
            self._drain_and_close(0.0)  # the supervisor starts a new shard: this one must not run on
            raise

    def _handle(self, message: Any, sender: Any) -> None:
        t = type(message)
        if t is GatewayBeat:
            self._heard = time.monotonic()
            self.send(sender, ShardAlive(self.init.shard, os.environ.get(NODE_ENV, "")))  # _node_watch
        elif t is WatchMessage:
            self._pipe.consume()
            self.placement.pump()
            self._send_outbound()
        elif t is Packed:
            items = []
            for item in unpack(message):
                it = type(item)
                if it is JournalCall:  # the facade's write or read of this shard's journal (_routed)
                    serve_call(self.journal, item, self.notifier.reply)
                else:
                    items.append(PumpCall(functools.partial(self._watch, item)) if it is WatchStatus else item)
            self.rt.queue.extend(items)
            # run the actors on this thread for a round if the pump thread is not (Runtime.help): the
            # batch's first steps are dispatched without a hand-off to the pump thread first
            self.rt.help()
            self._send_outbound()  # what that round had for other processes, without another wakeup
        elif t is Hello:
            self._heard = time.monotonic()
            self.gateway = sender
            self.peers = dict(message.addresses)
            self.send(sender, ShardReady(self.init.shard, os.getpid(), self.errors, os.environ.get(NODE_ENV, "")))

        elif t is Workflows:
            self._add_workflows(message)
        elif t is Peers:
            self.peers = dict(message.addresses)
        elif t is Drain:
            self._drain_and_close(message.grace)
            self.send(sender, Drained(self.init.shard))
            if self.init.node:  # on a member node: not one of the engine's admin's processes, exit now
                self.exit_normally("engine closed")
        elif t is ChildActorExited:
            if not self._closed:
                self.placement.child_exited(message.childAddress)  # a node's step actor, or its creation failed
        else:
            self.placement.handle(message, sender)  # step results, worker answers (_placement)

    def _add_workflows(self, msg: Workflows) -> None:
        """Workflows registered after open (before any run message that needs them: same sender)."""
        added = []
        for name, blob in msg.blobs.items():
            try:
                fn = cloudpickle.loads(blob)
                self.names.add(name, fn)
                self.rt.workflows[name] = fn
                added.append(name)
            except Exception:  # noqa: BLE001 - its runs stay unloaded here, as runs of an unregistered workflow
                log.exception("workflow registered after open cannot be loaded", workflow=name, shard=self.init.shard)
        if msg.recover and added:
            self.rt.queue.append(PumpCall(functools.partial(self._recover, frozenset(added))))
            self.rt.wake()

    def _recover(self, names: frozenset[str]) -> None:
        """On the pump thread: load this shard's unfinished runs of `names` (skipped by the recovery
        of a restart that happened before they reached this process)."""
        journal, rt = self.journal, self.rt
        for run_id in journal.active_run_ids():
            if rt.shard_of(run_id) != self.init.shard:
                continue
            rec = journal.get_run(run_id)
            if rec is not None and rec.workflow in names:
                rt.queue.append(LoadRun(run_id))

    def _watch(self, msg: WatchStatus) -> None:
        """On the pump thread (where hosts decide whom to notify): start or stop reporting a run's
        status changes; on start, report its status now (it may have changed before the watch)."""
        notifier = self.notifier
        if not msg.on:
            notifier.watched.discard(msg.run_id)
            return
        notifier.watched.add(msg.run_id)
        host = self.rt.local_hosts.get(self.init.shard)
        run = host.logic.runs.get(msg.run_id) if host is not None else None
        record = run.record if run is not None else self.journal.get_run(msg.run_id)
        if record is not None:
            notifier.status_changed(RunStatus.from_record(record))

    def on_wakeup(self, payload: Any) -> None:
        if getattr(self, "_closed", False):
            return
        if type(payload) is TimerWake:
            if self.timers.fired(payload):  # else superseded by an earlier wakeup (which re-armed)
                self.rt.queue.append(PumpCall(self._tick_timers))
                self.rt.help()  # tick on this thread unless the pump lock is held (its holder ticks)
                self._send_outbound()  # what the fired timers' runs had for other processes
            self._arm_timers()
            return
        if self.rt.fatal is not None:
            self._drain_and_close(0.0)
            raise ShardFailed(f"shard {self.init.shard}: {self.rt.fatal}")
        if self._engine_gone():
            log.warning("engine process is gone: shard stops", shard=self.init.shard, pid=self.init.facade_pid)
            self._drain_and_close(0.0)
            # a normal exit: the supervisor does not start it again (shards are transient children);
            # a restarted one would recover this shard's runs and re-run their steps with no engine
            self.exit_normally("engine process is gone")
            return
        self.placement.tick()
        self.placement.pump()
        self._send_outbound()  # also what waited for a peer's address
        self.wakeup_after(_CHECK_EVERY)

    def _engine_gone(self) -> bool:
        if self._facade_here:
            return not _alive(self.init.facade_pid)
        return time.monotonic() - self._heard > 2 * self.init.node_timeout

    def on_stop(self) -> None:
        self._drain_and_close(0.0)

    def _send_outbound(self) -> bool:
        """Send what other threads left for other processes: one message per target."""
        out = self.outbound
        if not out or self.gateway is None:
            return False
        per: dict[int, list[Any]] = {}
        while out:
            target, item = out.popleft()
            if target == _GATEWAY:
                per.setdefault(_GATEWAY, []).append(item)
            else:
                per.setdefault(target, []).extend(item)
        for target, items in per.items():
            addr = self.gateway if target == _GATEWAY else self.peers.get(target)
            if addr is None:  # a peer not known yet: keep its items for the next round
                out.extend((target, [i]) for i in items)
                continue
            self.send(addr, pack(items))
        return True

    def _drain_and_close(self, grace: float) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.actors.close(grace)
            self._send_outbound()
        finally:
            # after the pump stopped: steps still on other nodes are abandoned, not journaled as failed
            # (they run again after the next open); their node actors are told to exit
            self.placement.close()
            self.journal.close()
            self.lock.release()
            self._pipe.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
