"""A shard process: one supervised Thespian actor hosting the run actors of one shard.

It opens its own resources from a picklable `ShardInit` (the journal on the shared data directory,
a step pool, the workflow code) and runs the same host, timer and signal actors as the embedded
engine, on an in-process pump, for its shard only. Thespian carries what crosses the process:
batches of run messages in (from the facade and from other shards), batches of notices out
(outcomes, status changes, replies) and of run messages for other shards.

Threads of this process (step workers, the journal's commit thread, the pump) may not use the
actor's Thespian connection, so what they produce for other processes waits in `outbound` and the
actor sends it from its own thread on a wakeup: every millisecond while there is traffic, backing
off to 20 ms when idle (any incoming message brings it back to 1 ms).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import cloudpickle
import structlog

from storage import Codec, LmdbJournal, RunRecord
from supervisors import SupervisedActor

from .._clock import SystemClock
from .._messages import Outcome, Reply, StatusChanged, WatchStatus
from .._runtime import Notifier, Runtime
from .._thespian import ActorRuntime
from .._types import RunStatus
from ..errors import ActorflowError
from ._wire import Drain, Drained, Hello, Packed, Peers, ShardInit, ShardReady, pack, unpack

__all__ = ["ShardActor", "ShardNotifier"]

log = structlog.get_logger("actorflow.shard")

_FAST, _SLOW = 0.001, 0.02
_GATEWAY = -1  # outbound target: the facade


class ShardNotifier(Notifier):
    """Where this shard's hosts report outcomes, status changes and replies: out to the facade."""

    def __init__(self, out: deque[tuple[int, Any]]) -> None:
        super().__init__()
        self._out = out
        self.watched: set[str] = set()

    def watching(self, run_id: str) -> bool:
        return run_id in self.watched

    def status_changed(self, status: RunStatus) -> None:
        self._out.append((_GATEWAY, StatusChanged(status)))

    def finished(self, run_id: str, record: RunRecord, state: str, value: Any, data: Any) -> None:
        self._out.append((_GATEWAY, Outcome(run_id, record.as_tuple(), state, value, data)))

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None) -> None:
        self._out.append((_GATEWAY, Reply(request_id, value, error)))


class ShardFailed(ActorflowError):
    """The shard's in-process actors gave up: the supervisor restarts the whole shard process's actor."""


class ShardActor(SupervisedActor):
    """Hosts one shard's runs in this process (see the module docstring)."""

    def on_start(self, init: ShardInit) -> None:
        self.init = init
        self.gateway: Any = None
        self.peers: dict[int, Any] = {}
        self.outbound: deque[tuple[int, Any]] = deque()
        self._wake_due = False
        self._interval = _FAST
        self._checks = 0
        workflows: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        for name, blob in init.workflows.items():
            try:
                workflows[name] = cloudpickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - reported to the facade, naming the workflow
                self.errors[name] = f"{type(exc).__name__}: {exc}"
        self.journal = LmdbJournal(init.data_dir, sync=init.sync, codec=Codec(init.codec, init.max_payload))
        rt = Runtime(
            self.journal,
            SystemClock(),
            workflows,
            shards=init.shards,
            passivate_after=init.passivate_after,
            step_threads=init.step_threads,
            timer_horizon=init.timer_horizon,
        )
        rt.local_shards = (init.shard,)
        rt.remote = lambda shard, items: self.outbound.append((shard, items))
        rt.notifier = self.notifier = ShardNotifier(self.outbound)
        self.rt = rt
        self.actors = ActorRuntime(rt)
        self.actors.start()  # queues the recovery of this shard's runs
        self._poll()

    def handle(self, message: Any, sender: Any) -> None:
        try:
            self._handle(message, sender)
        except Exception:
            self._drain_and_close(0.0)  # the supervisor starts a new shard: this one must not run on
            raise

    def _handle(self, message: Any, sender: Any) -> None:
        t = type(message)
        if t is Packed:
            items = unpack(message)
            rest = []
            for item in items:
                if type(item) is WatchStatus:
                    (self.notifier.watched.add if item.on else self.notifier.watched.discard)(item.run_id)
                else:
                    rest.append(item)
            if rest:
                self.rt.queue.extend(rest)
                self.rt.wake()
        elif t is Hello:
            self.gateway = sender
            self.peers = dict(message.addresses)
            self.send(sender, ShardReady(self.init.shard, os.getpid(), self.errors))
        elif t is Peers:
            self.peers = dict(message.addresses)
        elif t is Drain:
            self._drain_and_close(message.grace)
            self.send(sender, Drained(self.init.shard))
            return
        self._interval = _FAST
        self._poll()

    def on_wakeup(self, payload: Any) -> None:
        self._wake_due = False
        if self.rt.fatal is not None:
            self._drain_and_close(0.0)
            raise ShardFailed(f"shard {self.init.shard}: {self.rt.fatal}")
        sent = self._send_outbound()
        self._checks += 1
        if self._checks % 50 == 0 and not _alive(self.init.facade_pid):
            log.warning("engine process is gone: shard stops", shard=self.init.shard, pid=self.init.facade_pid)
            self._drain_and_close(0.0)
            os._exit(0)
        busy = sent or self.rt.busy()
        self._interval = _FAST if busy else min(_SLOW, self._interval * 2)
        self._poll()

    def on_stop(self) -> None:
        self._drain_and_close(0.0)

    def _poll(self) -> None:
        if not self._wake_due and not getattr(self, "_closed", False):
            self._wake_due = True
            self.wakeup_after(self._interval)

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
            self.journal.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
