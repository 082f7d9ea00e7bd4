"""The shard side of step placement: steps whose requirements the shard's own process does not meet go
to a `StepWorkerActor` that Thespian placed on a node of the convention with matching capabilities.

One slot per distinct set of requirements (`ctx.step(..., requires=)`, else the engine's
`step_requirements`). A slot asks Thespian for a worker actor with those requirements and greets it;
steps go only to a worker that answered from its real address, so a creation that is still pending, or
failed (no node matches: Thespian answers ChildActorExited for the pending address), never swallows a
step. Until a worker answers, the slot's steps wait for placement (reported to the engine process,
`Engine.waiting_for_placement()`), and the slot asks again every second: a matching node that joins
the convention gets them.

A worker is lost when Thespian reports its process exited (kill -9 of the node's actor: its admin sees
the child die) or when it has not answered a ping for `node_timeout` seconds (the whole node is gone:
nobody is left to report). Its steps - the same attempts: their process died, not the steps - go to a
new worker, on any matching node (at-least-once, like a step worker process that died on this machine,
`actorflow/_procsteps.py`). What a node's handlers send their host (lease beats, in-flight notes,
progress) arrives in the workers' batches and goes to NODE_HANDLERS, or is posted to the runtime; a
cancelled run and an attempt whose lease ran out (`stop`) are told to the worker running them. Everything here runs on the shard actor's thread except `run`, which a step
thread calls and waits in.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import cloudpickle
import structlog
from thespian.actors import ActorExitRequest

from .. import _procsteps
from .._messages import message
from .._placed import Placed, requires_key
from .._types import StepInfo, step_post
from ..errors import PayloadError
from ._remote_steps import (
    NODE_HANDLERS,
    NodeLink,
    RemoteStep,
    RemoteStepDone,
    StepBatch,
    StepCancel,
    StepWorkerActor,
    WorkerHello,
    WorkerPing,
    WorkerPong,
    WorkerReady,
)

__all__ = ["Placement", "PlacementState", "PlacementWait"]

log = structlog.get_logger("actorflow.placement")

_RETRY = 1.0  # seconds between requests for a worker while none answered
_NO_NODE = "no node of the convention has these capabilities"


@message
class PlacementWait:
    """Steps of one shard that wait for a node meeting `requires` (none answered yet, or it was lost)."""

    shard: int
    requires: dict[str, Any]
    steps: tuple[tuple[str, str, int], ...]  # (run_id, step name, attempt)
    since: float  # wall-clock time the oldest of them started waiting
    reason: str


@message
class PlacementState:
    """Shard -> engine process: what waits for placement now (replaces the shard's previous report)."""

    shard: int
    waits: tuple[PlacementWait, ...]


class _Actor(Protocol):
    def createActor(self, cls: Any, targetActorRequirements: Any = ..., globalName: Any = ...) -> Any: ...  # noqa: N802,N803
    def send(self, targetAddr: Any, msg: Any) -> None: ...  # noqa: N803


@dataclass
class _Slot:
    key: str
    requires: dict[str, Any]
    steps: dict[int, RemoteStep] = field(default_factory=dict)  # not yet settled
    unsent: list[int] = field(default_factory=list)  # requests not yet sent to the current worker
    worker: Any = None  # the address that answered WorkerReady
    pid: int | None = None
    host: str = ""
    node: str = ""  # "host:pid" of the worker's `actorflow worker` process
    heard: float = 0.0  # monotonic time of the worker's last message
    pending: Any = None  # the address of a creation not answered yet
    pending_since: float = 0.0
    generation: int = 0
    retry_at: float = 0.0
    waiting_since: float | None = None  # wall clock
    reason: str = "no worker asked for yet"
    lost: int = 0
    lost_why: str = ""  # why the last worker was lost, until a new one answers


class Placement:
    """Steps placed on member nodes by capability, for one shard (see the module docstring)."""

    def __init__(
        self,
        actor: _Actor,
        *,
        shard: int,
        default: dict[str, Any] | None,
        node_timeout: float,
        local: Callable[[Callable[[], Any], StepInfo], Any] | None,
        wake: Callable[[], None],
        report: Callable[[PlacementState], None],
    ) -> None:
        self._actor = actor
        self.shard = shard
        self.default = dict(default or {})
        self.node_timeout = node_timeout
        self._local = local
        self._wake = wake
        self._report = report
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._incoming: list[tuple[str, dict[str, Any], RemoteStep]] = []
        self._futures: dict[int, Future[RemoteStepDone]] = {}
        self.slots: dict[str, _Slot] = {}
        self._pings = itertools.count(1)
        self._reported: Any = ()
        self.closed = False
        self._post: Callable[[Any], None] | None = None  # the shard runtime's (seen on the step threads)
        self._cancels: list[tuple[str, ...]] = []  # (run_id,) cancelled, or (run_id, seq, attempt) lost
        _procsteps.CANCEL_HOOKS.append(self.cancel)

    # --- on a step thread ------------------------------------------------------------------------
    def run(self, fn: Callable[[], Any], info: StepInfo) -> Any:
        """The shard's step-pool runner: a step with requirements goes to a node and is waited for."""
        if type(fn) is Placed:
            requires, fn = fn.requires, fn.fn
        else:
            requires = self.default
        if not requires:
            return fn() if self._local is None else self._local(fn, info)
        try:
            blob = cloudpickle.dumps(fn)
        except Exception as exc:
            raise PayloadError(
                f"step {info.name!r} cannot be sent to a node ({type(exc).__name__}: {exc}); its function "
                "must pickle (cloudpickle: by value for the main script, by reference for importable modules)",
                type_name=type(fn).__name__,
            ) from exc
        step = RemoteStep(next(self._ids), blob, info)
        fut: Future[RemoteStepDone] = Future()
        if self._post is None:
            self._post = step_post.get(None)
        with self._lock:
            if self.closed:
                raise PayloadError("the engine is closing: the step runs again after the next open")
            self._futures[step.request] = fut
            self._incoming.append((requires_key(requires), requires, step))
        self._wake()
        done = fut.result()
        value = cloudpickle.loads(done.payload)
        if done.ok:
            return value
        raise value

    def cancel(self, run_id: str) -> None:
        """`run_id` was cancelled (any thread): its handlers on nodes are told (CANCEL_HOOKS)."""
        self._tell((run_id,))

    def stop(self, key: tuple[str, int, int]) -> None:
        """This attempt lost its lease (any thread): its node is told, its step thread released."""
        self._tell(key)

    def _tell(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            if self.closed:
                return
            self._cancels.append(item)
        self._wake()

    # --- on the shard actor's thread -------------------------------------------------------------
    def pump(self) -> None:
        """Route the steps that step threads queued to their slots and send what can go."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            cancels, self._cancels = self._cancels, []
        for item in cancels:
            self._cancel(item)
        touched: dict[str, _Slot] = {}
        for key, requires, step in incoming:
            slot = self.slots.get(key)
            if slot is None:
                slot = self.slots[key] = _Slot(key, requires)
            slot.steps[step.request] = step
            slot.unsent.append(step.request)
            touched[key] = slot
        for slot in touched.values():
            self._dispatch(slot, time.monotonic())
        if touched:
            self._report_waits()

    def handle(self, msg: Any, sender: Any) -> bool:
        """A message for placement (True), else False (the shard's own)."""
        t = type(msg)
        if t is StepBatch:
            slot = self._slot_of(sender)
            if slot is not None:
                slot.heard = time.monotonic()
            for item in msg.items:
                if type(item) is RemoteStepDone:
                    self._settle(item, slot)
                else:
                    self._from_node(item, slot)
            self._report_waits()
        elif t is WorkerReady:
            self._ready(msg, sender)
            self._report_waits()
        elif t is WorkerPong:
            slot = self._slot_of(sender)
            if slot is not None:
                slot.heard = time.monotonic()
        else:
            return False
        return True

    def child_exited(self, address: Any) -> bool:
        """Thespian's ChildActorExited: a worker's process died, or a creation failed (True if ours)."""
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.worker is not None and slot.worker == address:
                self._lose(slot, "its process exited", now)
                self._report_waits()
                return True
            if slot.pending is not None and slot.pending == address:
                slot.pending = None
                slot.retry_at = now + _RETRY
                if slot.reason != _NO_NODE:  # once per wait: it is asked again every second
                    log.info("placement_no_node", shard=self.shard, requires=slot.requires, waiting=len(slot.steps))
                slot.reason = _NO_NODE
                self._report_waits()
                return True
        return False

    def tick(self) -> None:
        """Every second: ping workers, notice lost ones, ask again for slots without a worker."""
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.worker is not None:
                if slot.steps and now - slot.heard > self.node_timeout:
                    self._lose(slot, f"no answer for {self.node_timeout:g} s", now)
                else:
                    self._actor.send(slot.worker, WorkerPing(next(self._pings)))
                    continue
            if slot.pending is not None and now - slot.pending_since > max(self.node_timeout, 5.0):
                slot.pending = None  # asked long ago and never answered: ask again (a late answer is still taken)
                slot.reason = "the node asked to host a worker did not answer"
            if slot.steps and slot.pending is None and now >= slot.retry_at:
                self._create(slot, now)
        self._report_waits()

    def close(self) -> None:
        """The shard is closing: workers are told to exit; waiting step threads are released with an
        error (the engine is stopping: the steps run again after the next open)."""
        err = cloudpickle.dumps(PayloadError("the engine closed: the step runs again after the next open"))
        with self._lock:
            self.closed = True
            futures, self._futures = self._futures, {}
            self._incoming.clear()
        if self.cancel in _procsteps.CANCEL_HOOKS:
            _procsteps.CANCEL_HOOKS.remove(self.cancel)
        for request, fut in futures.items():
            if not fut.done():
                fut.set_result(RemoteStepDone(request, False, err))
        for slot in self.slots.values():
            for address in (slot.worker, slot.pending):
                if address is not None:
                    self._actor.send(address, ActorExitRequest())

    def workers(self) -> dict[str, tuple[int | None, str]]:
        """Requirements key -> (pid, host) of the worker now serving it (for tests and operators)."""
        return {k: (s.pid, s.host) for k, s in self.slots.items() if s.worker is not None}

    # --- internals -------------------------------------------------------------------------------
    def _from_node(self, item: Any, slot: _Slot | None) -> None:
        """A message a node's handler sent its host: to its NODE_HANDLERS handler, else the runtime."""
        post = self._post or (lambda m: None)
        handler = NODE_HANDLERS.get(type(item))
        try:
            if handler is None:
                post(item)
            else:
                handler(item, post, NodeLink(slot.node if slot else "", slot.host if slot else "", self.stop))
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the shard
            log.warning("message from a node failed", type=type(item).__name__, error=f"{type(exc).__name__}: {exc}")

    def _cancel(self, item: tuple[Any, ...]) -> None:
        """Tell the worker running a step of this run (cancelled) or this attempt (lost) about it; a
        lost attempt's step thread is released now (its late result would be discarded anyway)."""
        lost = len(item) == 3
        for slot in self.slots.values():
            for request, step in list(slot.steps.items()):
                info = step.info
                if info.run_id != item[0] or (lost and (info.seq, info.attempt) != item[1:]):
                    continue
                if slot.worker is not None and request not in slot.unsent:
                    self._actor.send(slot.worker, StepCancel((), (item,)) if lost else StepCancel((info.run_id,)))
                if lost:  # not a step end (no STEP_END_HOOKS): its new attempt may be running already
                    slot.steps.pop(request, None)
                    with self._lock:
                        fut = self._futures.pop(request, None)
                    why = f"LeaseLost: attempt {info.attempt} of {info.run_id!r} lost its lease on node {slot.node or slot.host}"
                    if fut is not None and not fut.done():
                        fut.set_result(RemoteStepDone(request, False, cloudpickle.dumps(PayloadError(why))))

    def _slot_of(self, sender: Any) -> _Slot | None:
        for slot in self.slots.values():
            if slot.worker is not None and slot.worker == sender:
                return slot
        return None

    def _dispatch(self, slot: _Slot, now: float) -> None:
        if slot.worker is not None:
            if slot.unsent:
                items = [slot.steps[r] for r in slot.unsent if r in slot.steps]
                slot.unsent = []
                if items:
                    self._actor.send(slot.worker, StepBatch(items))
        elif slot.pending is None and now >= slot.retry_at:
            self._create(slot, now)

    def _create(self, slot: _Slot, now: float) -> None:
        slot.generation += 1
        address = self._actor.createActor(StepWorkerActor, targetActorRequirements=slot.requires)
        slot.pending, slot.pending_since = address, now
        slot.retry_at = now + _RETRY
        if slot.reason == "no worker asked for yet":
            slot.reason = "a worker is starting on a matching node"
        # queued by Thespian until the actor exists; dropped (ChildActorExited) if it cannot be created
        self._actor.send(address, WorkerHello(slot.key, slot.generation, orphan_after=max(4 * self.node_timeout, 20.0)))

    def _ready(self, msg: WorkerReady, sender: Any) -> None:
        slot = self.slots.get(msg.slot)
        if slot is None or (slot.worker is not None and slot.worker != sender) or self.closed:
            self._actor.send(sender, ActorExitRequest())  # not needed (a late answer to an earlier request)
            return
        if slot.worker is None:
            log.info("placement_worker_ready", shard=self.shard, requires=slot.requires, pid=msg.pid, host=msg.host,
                     steps=len(slot.steps))
        slot.worker, slot.pid, slot.host, slot.node = sender, msg.pid, msg.host, msg.node
        slot.heard = time.monotonic()
        slot.pending = None
        slot.waiting_since = None
        slot.lost_why = ""
        slot.unsent = list(slot.steps)  # every step not settled: those queued, and the lost worker's
        self._dispatch(slot, slot.heard)

    def _lose(self, slot: _Slot, why: str, now: float) -> None:
        slot.lost += 1
        (log.warning if slot.steps else log.info)(
            "placement_worker_lost", shard=self.shard, requires=slot.requires, pid=slot.pid, host=slot.host, why=why,
            steps=len(slot.steps))
        self._actor.send(slot.worker, ActorExitRequest())  # alive but silent: it must not keep running them
        slot.worker, slot.pid, slot.host = None, None, ""
        slot.lost_why = why
        slot.reason = "a worker is starting on a matching node"
        slot.unsent = []
        if slot.steps and slot.pending is None:
            self._create(slot, now)

    def _settle(self, done: RemoteStepDone, slot: _Slot | None) -> None:
        for s in (slot, *self.slots.values()):
            step = None if s is None else s.steps.pop(done.request, None)
            if step is not None:
                for hook in _procsteps.STEP_END_HOOKS:  # its lease and in-flight note end here too
                    hook(step.info)
                break
        with self._lock:
            fut = self._futures.pop(done.request, None)
        if fut is not None and not fut.done():
            fut.set_result(done)

    def _report_waits(self) -> None:
        """Tell the engine process what waits for placement, when that changed."""
        waits = []
        for slot in self.slots.values():
            if slot.worker is not None or not slot.steps:
                slot.waiting_since = None
                continue
            if slot.waiting_since is None:
                slot.waiting_since = time.time()
            steps = tuple(sorted((s.info.run_id, s.info.name, s.info.attempt) for s in slot.steps.values()))
            reason = slot.reason + (f"; the node running them was lost ({slot.lost_why})" if slot.lost_why else "")
            waits.append(PlacementWait(self.shard, dict(slot.requires), steps, slot.waiting_since, reason))
        signature = tuple((w.requires.items().__repr__(), w.steps, w.reason) for w in waits)
        if signature != self._reported:
            self._reported = signature
            self._report(PlacementState(self.shard, tuple(waits)))
