"""The node side of step placement: `StepWorkerActor`, which Thespian places on a node of the convention
whose capabilities meet a step's requirements, and the messages it exchanges with a shard.

A shard (`_placement.Placement`) asks for one such actor per distinct set of requirements; it greets it
(`WorkerHello`) and sends steps only once the actor answered (`WorkerReady`, from its real address). Steps
arrive in batches; each runs on a daemon thread of the actor's process (a step stuck in user code must
not keep the process alive after it is asked to exit); results go back in batches. Threads of an actor's
process may not use its Thespian connection, so they queue results and wake the actor through a pipe it
watches (ThespianWatch). What a handler sends its host (`_procsteps.to_host`: lease beats, in-flight
notes, progress) travels the same way, in the same batches; the shard hands it to NODE_HANDLERS (the
tasks layer) with a NodeLink naming the node. The shard's StepCancel marks a run cancelled, or an
attempt's lease lost, for the handlers here (ctx.cancelled; heartbeat raises). The actor exits by itself when it has heard nothing from its shard for
`orphan_after` seconds (the shard pings every few seconds): a shard that died leaves no actor behind on
other machines.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
from thespian.actors import Actor, ActorExitRequest, ThespianWatch, WakeupMessage, WatchMessage

from .. import _procsteps
from .._messages import message
from .._placed import NODE_ENV, QUEUE_REQUIREMENT, QUEUES_CAPABILITY
from .._types import StepInfo, _current_step, step_post
from ..errors import PayloadError
from ._node_slots import node_slot, slots_limit

__all__ = [
    "NODE_HANDLERS",
    "NodeLink",
    "RemoteStep",
    "RemoteStepDone",
    "StepBatch",
    "StepCancel",
    "StepWorkerActor",
    "WorkerHello",
    "WorkerPing",
    "WorkerPong",
    "WorkerReady",
]

# threads a worker actor runs steps on (each waits on its step); on a node started with
# `--concurrency N` no more than N, and the node's slots (`_node_slots`) hold all its actors to N at once
_THREADS = 32


def capabilities_match(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
    """Whether a node with `capabilities` may run a step with `requirements`: equal values, except a
    task's queue, which a node consumes if it lists it in its queues (a node that lists none takes all)."""
    for key, value in requirements.items():
        if key == QUEUE_REQUIREMENT:
            queues = capabilities.get(QUEUES_CAPABILITY)
            if queues is not None and value not in queues:
                return False
        elif capabilities.get(key) != value:
            return False
    return True


@message
class RemoteStep:
    request: int  # unique per shard process: what the result settles, and what a re-send deduplicates on
    blob: bytes  # cloudpickle of the step function
    info: StepInfo


@message
class RemoteStepDone:
    request: int
    ok: bool
    payload: bytes  # cloudpickle of the result or of the exception


@message
class StepBatch:
    items: list[Any]  # RemoteStep (shard -> worker) or RemoteStepDone (worker -> shard)


@message
class WorkerHello:
    """From a shard to the actor it asked for: answered by WorkerReady from the actor's real address."""

    slot: str  # the requirements' key on the shard
    generation: int
    orphan_after: float  # seconds without a word from the shard after which the actor exits


@message
class WorkerReady:
    slot: str
    generation: int
    pid: int
    host: str
    node: str = ""  # "host:pid" of the node's `actorflow worker` process ("": not started by one)


@message
class StepCancel:
    """Shard -> node: these runs were cancelled; these attempts (run id, step position, attempt) lost
    their lease. Their handlers here see ctx.cancelled (a thread cannot be killed: told, as locally)."""

    run_ids: tuple[str, ...] = ()
    lost: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class NodeLink:
    """What the shard tells a NODE_HANDLERS handler about the node a message came from."""

    node: str  # "host:pid" of its `actorflow worker` process ("" if unknown)
    host: str  # the host its step actor runs on
    stop: Callable[[tuple[str, int, int]], None]  # tell the node an attempt lost its lease (any thread)


# in a shard: how to handle a message of a type a node's handler sent with to_host: fn(msg, post, link)
# (else a message is posted to the shard's runtime, like a step worker process's StepProgress)
NODE_HANDLERS: dict[type, Callable[[Any, Callable[[Any], None], NodeLink], None]] = {}


@message
class WorkerPing:
    seq: int


@message
class WorkerPong:
    seq: int
    running: int


class _Waker:
    """A pipe an actor watches: any thread queues an item and wakes the actor to send it."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.queue: deque[Any] = deque()
        self._signalled = False

    def put(self, item: Any) -> None:
        self.queue.append(item)
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self.wfd, b"x")
            except OSError:
                pass  # full (a wake is due anyway) or closed

    def take(self) -> list[Any]:
        # drain the pipe, then clear the flag, then empty the queue: an item queued before the flag was
        # cleared is taken below; one queued after writes a byte again. (Clearing before draining could
        # swallow the byte of an item queued after the queue was emptied: it would wait forever.)
        try:
            while os.read(self.rfd, 4096):
                pass
        except OSError:
            pass
        self._signalled = False
        out = []
        while self.queue:
            out.append(self.queue.popleft())
        return out

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def run_step(step: RemoteStep) -> RemoteStepDone:
    """Run one step function here; its result or exception, pickled for the way back."""
    token = _current_step.set(step.info)
    # on a node: progress reaches the run through the actor's queue to its shard (None elsewhere)
    post = step_post.set(_procsteps._post_to_host if _procsteps._to_host is not None else None)
    try:
        result = cloudpickle.loads(step.blob)()
        if inspect.isawaitable(result):  # an async step function: its own loop on this thread
            result = asyncio.run(_awaited(result))
        ok = True
    except BaseException as exc:  # noqa: BLE001 - sent back as the attempt's error
        result, ok = exc, False
    finally:
        step_post.reset(post)
        _current_step.reset(token)
    try:
        return RemoteStepDone(step.request, ok, cloudpickle.dumps(result))
    except Exception as exc:  # noqa: BLE001 - the attempt fails, naming the type
        err = PayloadError(
            f"result of step {step.info.name!r} ({type(result).__name__}) cannot be sent back from its node: {exc}",
            type_name=type(result).__name__,
        )
        return RemoteStepDone(step.request, False, cloudpickle.dumps(err))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class StepWorkerActor(Actor):  # type: ignore[misc]
    """Runs step functions for one shard, on the node Thespian placed it on (by requirements)."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:  # noqa: N802
        return capabilities_match(capabilities, requirements or {})

    def _setup(self) -> None:
        self._waker = _Waker()
        self._tasks: queue.SimpleQueue[RemoteStep | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, str] = {}  # requests here now -> run id: a re-send is not run twice
        _procsteps.serve_node(self._waker.put)  # this process is this actor's: handlers reach the shard through it
        self._shard: Any = None
        self._heard = time.monotonic()
        self._orphan_after = 60.0
        self._exiting = False
        self._stopping = threading.Event()
        self._max_threads = min(_THREADS, slots_limit() or _THREADS)

    def _thread(self) -> None:
        while True:
            step = self._tasks.get()
            if step is None:
                return
            with node_slot(self._stopping):
                if self._stopping.is_set():
                    return
                self._waker.put(run_step(step))

    def receiveMessage(self, msg: Any, sender: Any) -> Any:  # noqa: N802 - Thespian's API
        if not hasattr(self, "_waker"):
            self._setup()
        if self._exiting:
            return None
        if isinstance(msg, ActorExitRequest):
            self._exiting = True
            self._stopping.set()
            for _ in self._threads:
                self._tasks.put(None)
            self._waker.close()
            return None
        if isinstance(msg, WatchMessage):
            done = self._waker.take()
            for item in done:
                if type(item) is RemoteStepDone:
                    self._ended(item.request)
            if done and self._shard is not None:
                self.send(self._shard, StepBatch(done))
        elif isinstance(msg, WakeupMessage):
            if time.monotonic() - self._heard > self._orphan_after:
                self.send(self.myAddress, ActorExitRequest())  # the shard is gone: leave nothing behind
            else:
                self.wakeupAfter(self._orphan_after / 4)
        else:
            self._heard = time.monotonic()
            if isinstance(msg, WorkerHello):
                first = self._shard is None
                self._shard = sender
                self._orphan_after = msg.orphan_after
                self.send(sender, WorkerReady(msg.slot, msg.generation, os.getpid(), socket.gethostname(),
                                              os.environ.get(NODE_ENV, "")))
                if first:
                    self.wakeupAfter(self._orphan_after / 4)
            elif isinstance(msg, StepBatch):
                self._shard = sender
                for step in msg.items:
                    if step.request in self._running:
                        continue
                    self._running[step.request] = step.info.run_id
                    if len(self._threads) < min(self._max_threads, len(self._running)):
                        t = threading.Thread(target=self._thread, name="actorflow-node-step", daemon=True)
                        t.start()
                        self._threads.append(t)
                    self._tasks.put(step)
            elif isinstance(msg, StepCancel):
                _procsteps.NODE_CANCELLED.update(r for r in msg.run_ids if r in self._running.values())
                _procsteps.NODE_LOST.update(msg.lost)
            elif isinstance(msg, WorkerPing):
                self.send(sender, WorkerPong(msg.seq, len(self._running)))
            elif msg == "pid":
                self.send(sender, os.getpid())
        return ThespianWatch([self._waker.rfd])

    def _ended(self, request: int) -> None:
        """A step's result goes back: its run's cancel mark goes with its last step here."""
        run_id = self._running.pop(request, None)
        if run_id is not None and run_id not in self._running.values():
            _procsteps.NODE_CANCELLED.discard(run_id)
            for key in [k for k in _procsteps.NODE_LOST if k[0] == run_id]:
                _procsteps.NODE_LOST.discard(key)
