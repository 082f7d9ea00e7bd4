"""The Thespian adapter: the engine's actors and the pump thread that drives the actor system."""

from __future__ import annotations

import math
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
    Supervising,
    SupervisorActor,
    SupervisorSpec,
)

from ._host import RunHost
from ._messages import (
    HOUSEKEEP,
    REARM,
    RECOVER,
    Committed,
    HostBatch,
    PumpCall,
    SignalArrived,
    SignalBatch,
    TimerBatch,
    TimerFired,
    TimerTick,
)
from ._runtime import Runtime
from ._timers import TimerService

__all__ = ["ActorRuntime"]

log = structlog.get_logger("actorflow.actors")

_WAKE = PumpCall()  # a clock jump or a wake-up: the pump thread must look
_RUN_SENDS = PumpCall()  # told to the listener (which ignores it) to deliver what actors sent


def _send_outbox(actor: Any, rt: Runtime, out: list[tuple[Any, Any]]) -> None:
    """Group (target, item) pairs into one message per target actor; items for a shard hosted in
    another process go to `rt.remote` (the multiprocess shard's way out)."""
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
        actor.send(rt.addresses["timer"], TimerBatch(timer))
    for shard, items in per_host.items():
        addr = rt.addresses.get(f"host-{shard}")
        if addr is None and rt.remote is not None:
            rt.remote(shard, items)
        else:
            actor.send(addr, HostBatch(items))


class HostActor(SupervisedActor):
    """Hosts the run actors of one shard."""

    def on_start(self, init: Any) -> None:
        rt, shard = init
        self.rt: Runtime = rt
        rt.journal.commit(rt.journal.batch())  # barrier: a predecessor's writes are all durable
        self.logic = RunHost(rt, shard)
        rt.local_hosts[shard] = self  # the latest (re)start of the shard's host takes direct deliveries

    def handle(self, message: Any, sender: Any) -> None:
        if type(message) is HostBatch:
            _send_outbox(self, self.rt, self.logic.handle(message.items))


class TimerActor(SupervisedActor):
    """Owns the timer wheel; fires due timers to the hosts of their runs."""

    def on_start(self, init: Any) -> None:
        self.rt: Runtime = init
        self.svc = TimerService(init, init.timer_horizon, owns=init.owns)
        self.svc.start(init.clock.now())
        self._publish()

    def handle(self, message: Any, sender: Any) -> None:
        if type(message) is TimerBatch:
            for msg in message.items:
                self.svc.handle(msg)
        elif type(message) is TimerTick:
            fired = self.svc.tick(self.rt.clock.now())
            if fired:
                _send_outbox(self, self.rt, [(self.rt.shard_of(r), TimerFired(r, p, t)) for r, p, t in fired])
        self._publish()

    def _publish(self) -> None:
        rt = self.rt
        if rt.on_timer_due is not None:  # a multiprocess shard: its actor's wakeupAfter posts the ticks
            rt.timer_next_due = math.inf  # the pump never ticks the wheel there
            rt.on_timer_due(self.svc.next_due())
            return
        rt.timer_next_due = self.svc.next_due()
        rt.timer_heap_due = self.svc.earliest() if rt.clock.jumps else None


class SignalActor(SupervisedActor):
    """Routes durable signals (already in the inbox index) to the hosts of their runs."""

    def on_start(self, init: Any) -> None:
        self.rt: Runtime = init

    def handle(self, message: Any, sender: Any) -> None:
        if type(message) is SignalBatch:
            _send_outbox(self, self.rt, [(self.rt.shard_of(item.run_id), item) for item in message.items])


class ListenerActor(Actor):  # type: ignore[misc]
    """Learns restarted children's addresses from the supervisor and sets them up again."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, Runtime):  # in-process only: this listener is the embedded pump's own
            self.rt: Runtime = message
        elif isinstance(message, ChildRestarted):
            rt = self.rt
            rt.addresses[message.name] = message.address
            log.warning("actor restarted", actor=message.name, restarts=message.restarts, error=message.error)
            if message.name.startswith("host-"):
                self.send(message.address, HostBatch([RECOVER]))
            elif message.name == "timer":
                for i in rt.local_shards:
                    self.send(rt.addresses[f"host-{i}"], HostBatch([REARM]))
        elif isinstance(message, Escalated):
            log.error("supervisor gave up", child=message.child, error=message.error)
            self.rt.fatal = f"actor {message.child!r} kept failing beyond its restart budget: {message.error}"
            self.rt.notifier.fail_all("failed", {"error": f"engine stopped: {self.rt.fatal}"})


class ActorRuntime:
    """Runs an engine's actor system (simpleSystemBase only runs inside tell, on the calling thread).

    Whoever holds `rt.pump_lock` runs the actors. The pump thread takes it for items posted by
    threads that only hand work over (the commit thread, async steps), and for timer ticks and
    housekeeping. Threads that would otherwise just wait for what their item causes - a step
    worker with a result, a caller of start() - run the actors themselves if the lock is free
    (`help`). For a sequential workflow that saves two thread hand-offs per step: the worker that
    ran step N journals its result, commits, and runs step N+1 itself.
    """

    def __init__(self, rt: Runtime, intensity: Intensity | None = None) -> None:
        self.rt = rt
        self.intensity = intensity or Intensity(max_restarts=5, within=10.0)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        pa = rt.passivate_after
        self.housekeep_every = 1.0 if not pa else min(1.0, max(0.05, pa / 2))
        self.asys: Any = None
        self.listener: Any = None
        self._stopping = False
        self._closed = False  # the pump thread has left: nobody may enter the actor system any more
        self._next_housekeep = 0.0
        self._deadline: float | None = None  # when the pump thread next looks, unless woken (clock time)
        self._pump_needed = False  # a helper saw a clock jump or a flush request: the pump must look

    def start(self) -> None:
        self.rt.clock.subscribe(lambda: self.rt.post(_WAKE))
        self._thread = threading.Thread(target=self._run, name="actorflow-pump", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self, grace: float) -> None:
        """Stop cleanly: running steps get `grace` seconds, what they reported is journaled, then
        the pump stops (steps still running are abandoned: they run again after the next open)."""
        rt = self.rt
        rt.closing = True
        rt.steps.wait_idle(grace)
        rt.post(PumpCall(flush=True))  # status records still waiting for a step's commit are written now
        for i in range(50):  # let the pump journal what finished steps reported
            done = threading.Event()
            rt.post(PumpCall(done.set))
            done.wait()
            if i and not rt.commits_pending and not rt.queue:
                break
            rt.journal.commit(rt.journal.batch())
        self.stop()
        rt.steps.close()

    def stop(self) -> None:
        if self._thread is not None:
            self.rt.helper = None
            self._stopping = True
            self.rt.wakeups.put(None)
            self._thread.join()
            self._thread = None

    def _setup(self) -> None:
        rt = self.rt
        self.asys = ActorSystem("simpleSystemBase", logDefs=False, transientUnique=True)
        children = [ChildSpec("timer", TimerActor, rt), ChildSpec("signals", SignalActor, rt)]
        children += [ChildSpec(f"host-{i}", HostActor, (rt, i)) for i in rt.local_shards]
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE,
            intensity=self.intensity,
            backoff=Backoff(initial=0.0, multiplier=2.0, max=1.0),
            children=children,
            name="engine",
        )
        self.listener = listener = self.asys.createActor(ListenerActor)
        self.asys.tell(listener, rt)
        self.supervisor = self.asys.createActor(SupervisorActor)
        reply = self.asys.ask(self.supervisor, Supervise(spec, listener), 30)
        if not isinstance(reply, Supervising):
            raise RuntimeError(f"actor supervisor did not start: {reply!r}")
        rt.addresses.update(reply.addresses)
        # recovery replays every unfinished run: queued as the first item, so open() returns before it
        # and whoever runs the actors next (the pump, or a caller helping) replays them in order
        hosts = [rt.addresses[f"host-{i}"] for i in rt.local_shards]
        rt.queue.appendleft(PumpCall(lambda: [self.asys.tell(h, HostBatch([RECOVER])) for h in hosts]))

    def _run(self) -> None:
        try:
            with self.rt.pump_lock:
                self._setup()
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that called start()
            self._error = exc
            self._closed = True
            self._ready.set()
            if self.asys is not None:
                self.asys.shutdown()
            return
        self.rt.helper = self.help
        self._ready.set()
        try:
            self._loop()
        finally:
            self.rt.helper = None
            with self.rt.pump_lock:
                self._closed = True
                self.asys.shutdown()

    def help(self) -> None:
        """Run the actors on this thread for one round of queued items, unless another thread is."""
        rt = self.rt
        lock = rt.pump_lock
        if not lock.acquire(False):
            return  # its holder looks at the queue again after letting go
        wake = True
        try:
            if self._closed:
                return
            self._round()
            due = min(rt.timer_next_due, self._next_housekeep)
            deadline = self._deadline
            wake = (
                self._pump_needed
                or rt.clock.jumps  # the pump thread decides when a mock clock may jump
                or (deadline is not None and due < deadline)
                or rt.clock.now() >= due
            )
            self._pump_needed = False
        except Exception:  # noqa: BLE001 - a helper is a step worker or a caller: keep it alive
            log.exception("running the actors on a helper thread failed")
        finally:
            lock.release()
        if wake or rt.queue:
            rt.wakeups.put(None)

    def _loop(self) -> None:
        rt, asys, clock = self.rt, self.asys, self.rt.clock
        lock, wakeups = rt.pump_lock, rt.wakeups
        self._next_housekeep = clock.now() + self.housekeep_every
        while True:
            with lock:
                self._round()
                self._pump_needed = False
                now = clock.now()
                if now >= rt.timer_next_due:
                    asys.tell(rt.addresses["timer"], TimerTick(now))
                if now >= self._next_housekeep:
                    self._next_housekeep = now + self.housekeep_every
                    for i in rt.local_shards:
                        asys.tell(rt.addresses[f"host-{i}"], HostBatch([HOUSEKEEP]))
                    for hk in rt.housekeepers:
                        hk()
                if self._stopping and not rt.queue:
                    return
                self._deadline = deadline = min(rt.timer_next_due, self._next_housekeep)
                timeout = 0.0 if rt.queue else clock.real_timeout(deadline)
                if timeout != 0 and not rt.busy() and clock.idle(rt.timer_heap_due):
                    timeout = 0  # a mock clock jumped to the next timer
            if rt.queue:  # posted while the lock was held: its poster left it to us
                continue
            try:
                if timeout != 0:
                    wakeups.get(timeout=timeout)
                while True:
                    wakeups.get_nowait()
            except queue.Empty:
                pass

    def _round(self) -> None:
        """Take up to 20,000 queued items, in order, and tell each actor its share (lock held)."""
        rt, asys = self.rt, self.asys
        queue = rt.queue
        n = len(queue)  # items posted meanwhile wait for the next round (whoever ends this one looks)
        if not n:
            return
        pop = queue.popleft
        items = [pop() for _ in range(min(n, 20000))]
        per_host: dict[int, list[Any]] = {}
        signals: list[Any] = []
        for item in items:
            t = type(item)
            if t is Committed:
                per_host.setdefault(item.shard, []).append(item)
            elif t is SignalArrived:
                signals.append(item)
            elif t is PumpCall:
                if item.fn is not None:
                    item.fn()
                elif item.flush:
                    self._next_housekeep = self.rt.clock.now()  # housekeep (and force-flush every host) now
                self._pump_needed = True
            else:
                per_host.setdefault(rt.shard_of(item.run_id), []).append(item)
        if signals:
            asys.tell(rt.addresses["signals"], SignalBatch(signals))
        local = rt.local_hosts
        for shard, batch in per_host.items():
            # Direct delivery to a live host actor of this process: the holder of the pump lock alone
            # drives the system, and at this point nothing is pending in it (every tell runs until
            # its sends are delivered), so arrival order holds. It saves the simple system's
            # dispatch (~20 us per message). What the host sent meanwhile runs with one tell.
            host = local.get(shard)
            if host is not None and host.accepting:
                if host.deliver(HostBatch(batch)):
                    asys.tell(self.listener, _RUN_SENDS)
            else:
                asys.tell(rt.addresses[f"host-{shard}"], HostBatch(batch))
