"""The Thespian adapter: the engine's actors and the pump thread that drives the actor system."""

from __future__ import annotations

import queue
import threading
from typing import Any

import structlog
from thespian.actors import Actor, ActorSystem

from supervisors import (
    Backoff,
    ChildRestarted,
    ChildSpec,
    Escalated,
    Intensity,
    Strategy,
    Supervise,
    SupervisedActor,
    SupervisorActor,
    SupervisorSpec,
    Supervising,
)

from ._host import RunHost
from ._runtime import Runtime
from ._timers import TimerService

__all__ = ["ActorRuntime"]

log = structlog.get_logger("actorflow.actors")

_STOP = ("__stop__",)
_WAKE = ("__wake__",)


def _send_outbox(actor: Any, rt: Runtime, out: list[tuple[Any, Any]]) -> None:
    """Group (target, item) pairs into one message per target actor."""
    if not out:
        return
    per_host: dict[int, list[Any]] = {}
    timer: list[Any] = []
    for target, item in out:
        if target == "timer":
            timer.append(item)
        else:
            per_host.setdefault(target, []).append(item)
    if timer:
        actor.send(rt.addresses["timer"], ("timers", timer))
    for shard, items in per_host.items():
        actor.send(rt.addresses[f"host-{shard}"], ("batch", items))


class HostActor(SupervisedActor):
    """Hosts the run actors of one shard."""

    def on_start(self, init: Any) -> None:
        rt, shard = init
        self.rt: Runtime = rt
        rt.journal.commit(rt.journal.batch())  # barrier: a predecessor's writes are all durable
        self.logic = RunHost(rt, shard)

    def handle(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "batch":
            _send_outbox(self, self.rt, self.logic.handle(message[1]))


class TimerActor(SupervisedActor):
    """Owns the timer wheel; fires due timers to the hosts of their runs."""

    def on_start(self, init: Any) -> None:
        self.rt: Runtime = init
        self.svc = TimerService(init, init.timer_horizon)
        self.svc.start(init.clock.now())
        self._publish()

    def handle(self, message: Any, sender: Any) -> None:
        kind = message[0]
        if kind == "timers":
            for msg in message[1]:
                self.svc.handle(msg)
        elif kind == "tick":
            fired = self.svc.tick(self.rt.clock.now())
            if fired:
                _send_outbox(self, self.rt, [(self.rt.shard_of(r), ("timer", r, p, t)) for r, p, t in fired])
        self._publish()

    def _publish(self) -> None:
        self.rt.timer_next_due = self.svc.next_due()
        self.rt.timer_heap_due = self.svc.earliest() if self.rt.clock.jumps else None


class SignalActor(SupervisedActor):
    """Routes durable signals (already in the inbox index) to the hosts of their runs."""

    def on_start(self, init: Any) -> None:
        self.rt: Runtime = init

    def handle(self, message: Any, sender: Any) -> None:
        if message[0] == "signals":
            _send_outbox(self, self.rt, [(self.rt.shard_of(item[1]), item) for item in message[1]])


class ListenerActor(Actor):  # type: ignore[misc]
    """Learns restarted children's addresses from the supervisor and sets them up again."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "init":
            self.rt: Runtime = message[1]
        elif isinstance(message, ChildRestarted):
            rt = self.rt
            rt.addresses[message.name] = message.address
            log.warning("actor restarted", actor=message.name, restarts=message.restarts, error=message.error)
            if message.name.startswith("host-"):
                self.send(message.address, ("batch", [("recover",)]))
            elif message.name == "timer":
                for i in range(rt.shards):
                    self.send(rt.addresses[f"host-{i}"], ("batch", [("rearm",)]))
        elif isinstance(message, Escalated):
            log.error("supervisor gave up", child=message.child, error=message.error)
            self.rt.fatal = f"actor {message.child!r} kept failing beyond its restart budget: {message.error}"
            self.rt.notifier.fail_all("failed", {"error": f"engine stopped: {self.rt.fatal}"})


class ActorRuntime:
    """Runs an engine's actor system on one pump thread (simpleSystemBase only runs inside tell)."""

    def __init__(self, rt: Runtime, intensity: Intensity | None = None) -> None:
        self.rt = rt
        self.intensity = intensity or Intensity(max_restarts=5, within=10.0)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        pa = rt.passivate_after
        self.housekeep_every = 1.0 if not pa else min(1.0, max(0.05, pa / 2))
        self.asys: Any = None

    def start(self) -> None:
        self.rt.clock.subscribe(lambda: self.rt.post(_WAKE))
        self._thread = threading.Thread(target=self._run, name="actorflow-pump", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._thread is not None:
            self.rt.post(_STOP)
            self._thread.join()
            self._thread = None

    def _setup(self) -> None:
        rt = self.rt
        self.asys = ActorSystem("simpleSystemBase", logDefs=False, transientUnique=True)
        children = [ChildSpec("timer", TimerActor, rt), ChildSpec("signals", SignalActor, rt)]
        children += [ChildSpec(f"host-{i}", HostActor, (rt, i)) for i in range(rt.shards)]
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE,
            intensity=self.intensity,
            backoff=Backoff(initial=0.0, multiplier=2.0, max=1.0),
            children=children,
            name="engine",
        )
        listener = self.asys.createActor(ListenerActor)
        self.asys.tell(listener, ("init", rt))
        self.supervisor = self.asys.createActor(SupervisorActor)
        reply = self.asys.ask(self.supervisor, Supervise(spec, listener), 30)
        if not isinstance(reply, Supervising):
            raise RuntimeError(f"actor supervisor did not start: {reply!r}")
        rt.addresses.update(reply.addresses)
        for i in range(rt.shards):
            self.asys.tell(rt.addresses[f"host-{i}"], ("batch", [("recover",)]))

    def _run(self) -> None:
        try:
            self._setup()
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that called start()
            self._error = exc
            self._ready.set()
            if self.asys is not None:
                self.asys.shutdown()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self.asys.shutdown()

    def _loop(self) -> None:
        rt, asys, clock = self.rt, self.asys, self.rt.clock
        q = rt.queue
        next_housekeep = clock.now() + self.housekeep_every
        while True:
            deadline = min(rt.timer_next_due, next_housekeep)
            timeout = clock.real_timeout(deadline)
            if timeout != 0 and not rt.busy() and clock.idle(rt.timer_heap_due):
                timeout = 0  # a mock clock jumped to the next timer
            items: list[tuple[Any, ...]] = []
            try:
                items.append(q.get(timeout=timeout) if timeout != 0 else q.get_nowait())
                while len(items) < 20000:
                    items.append(q.get_nowait())
            except queue.Empty:
                pass
            per_host: dict[int, list[Any]] = {}
            signals: list[Any] = []
            stop = False
            for item in items:
                kind = item[0]
                if kind == "commit":
                    per_host.setdefault(item[1], []).append(item)
                elif kind == "signal":
                    signals.append(item)
                elif kind == "__stop__":
                    stop = True
                elif kind == "__wake__":
                    continue
                elif kind == "__call__":
                    item[1]()
                elif kind == "__flush__":
                    next_housekeep = clock.now()  # housekeep (and force-flush every host) this round
                else:
                    per_host.setdefault(rt.shard_of(item[1]), []).append(item)
            if signals:
                asys.tell(rt.addresses["signals"], ("signals", signals))
            for shard, batch in per_host.items():
                asys.tell(rt.addresses[f"host-{shard}"], ("batch", batch))
            now = clock.now()
            if now >= rt.timer_next_due:
                asys.tell(rt.addresses["timer"], ("tick", now))
            if now >= next_housekeep:
                next_housekeep = now + self.housekeep_every
                for i in range(rt.shards):
                    asys.tell(rt.addresses[f"host-{i}"], ("batch", [("housekeep",)]))
            if stop:
                return
            del items, per_host, signals  # do not pin the last batch's runs while blocked
