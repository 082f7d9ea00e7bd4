"""Steps placed on member nodes of a convention: `Engine(system="multiproc", step_requirements={...})`.

Each shard creates one `StepWorkerActor` with those requirements; Thespian places it on an admin
whose capabilities match (e.g. a machine that ran `actorflow worker --join ENGINE_HOST:PORT`, which
advertises `actorflow.worker=True`, plus any `--capability`). The shard's step threads hand it sync
steps (function cloudpickled) and wait; the worker runs them on its own threads and sends results
back in batches. Both sides wake their actor through a watched pipe (ThespianWatch), as threads of
an actor's process may not send. When the worker's process dies, the shard hears ChildActorExited,
creates a new one and sends it the steps that were in flight (the same attempts: their process died,
not the steps). Frames between the machines are authenticated like every other (`actorflow._net`).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle
import structlog
from thespian.actors import Actor, ActorExitRequest, ThespianWatch, WatchMessage

from .._messages import message
from .._types import StepInfo, _current_step
from ..errors import PayloadError

__all__ = ["StepWorkerActor", "RemoteSteps", "RemoteStep", "RemoteStepDone", "WorkerHello", "WorkerReady"]

log = structlog.get_logger("actorflow.steps")


@message
class RemoteStep:
    request: int
    blob: bytes  # cloudpickle of the step function
    info: StepInfo


@message
class RemoteStepDone:
    request: int
    ok: bool
    payload: bytes  # cloudpickle of the result or the exception


@message
class StepBatch:
    items: list[Any]


@message
class WorkerHello:
    """From the shard to a worker it asked for; answered with WorkerReady (the same generation)."""

    generation: int


@message
class WorkerReady:
    generation: int
    pid: int


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
        self._signalled = False  # before draining: what is queued after this writes a byte again
        try:
            while os.read(self.rfd, 4096):
                pass
        except OSError:
            pass
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


def _run(step: RemoteStep) -> RemoteStepDone:
    token = _current_step.set(step.info)
    try:
        result = cloudpickle.loads(step.blob)()
        ok = True
    except BaseException as exc:  # noqa: BLE001 - sent back as the attempt's error
        result, ok = exc, False
    finally:
        _current_step.reset(token)
    try:
        return RemoteStepDone(step.request, ok, cloudpickle.dumps(result))
    except Exception as exc:  # noqa: BLE001 - the attempt fails, naming the type
        err = PayloadError(f"result of step {step.info.name!r} ({type(result).__name__}) cannot be sent back: {exc}")
        return RemoteStepDone(step.request, False, cloudpickle.dumps(err))


class StepWorkerActor(Actor):  # type: ignore[misc]
    """Runs step functions for one shard, on the node Thespian placed it on (by requirements)."""

    def _run_and_wake(self, step: RemoteStep) -> None:
        self._waker.put(_run(step))

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:  # noqa: N802
        return all(capabilities.get(k) == v for k, v in (requirements or {}).items())

    def receiveMessage(self, msg: Any, sender: Any) -> Any:  # noqa: N802 - Thespian's API
        if not hasattr(self, "_waker"):
            self._waker = _Waker()
            self._pool = ThreadPoolExecutor(32, thread_name_prefix="actorflow-remote-step")
            self._shard: Any = None
        if isinstance(msg, ActorExitRequest):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._waker.close()
            return None
        if isinstance(msg, WorkerHello):
            self._shard = sender
            self.send(sender, WorkerReady(msg.generation, os.getpid()))
        elif isinstance(msg, StepBatch):
            self._shard = sender
            for step in msg.items:
                self._pool.submit(self._run_and_wake, step)
        elif isinstance(msg, WatchMessage):
            done = self._waker.take()
            if done and self._shard is not None:
                self.send(self._shard, StepBatch(done))
        elif msg == "pid":
            self.send(sender, os.getpid())
        return ThespianWatch([self._waker.rfd])


class RemoteSteps:
    """The shard's side: step threads call `run` and wait; the shard actor sends and receives."""

    def __init__(self, wake_actor: Callable[[], None]) -> None:
        self._wake_actor = wake_actor
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.inflight: dict[int, tuple[RemoteStep, Future[RemoteStepDone]]] = {}
        self.outgoing: deque[RemoteStep] = deque()
        self.closed = False
        self.replaced = 0

    def run(self, fn: Callable[[], Any], info: StepInfo) -> Any:
        """On a step thread: send the step to the worker node and wait for its result."""
        try:
            blob = cloudpickle.dumps(fn)
        except Exception as exc:
            raise PayloadError(
                f"step {info.name!r} cannot be sent to a worker node ({type(exc).__name__}: {exc})",
                type_name=type(fn).__name__,
            ) from exc
        step = RemoteStep(next(self._ids), blob, info)
        fut: Future[RemoteStepDone] = Future()
        with self._lock:
            if self.closed:
                raise PayloadError("the engine is closing: the step runs again after the next open")
            self.inflight[step.request] = (step, fut)
            self.outgoing.append(step)
        self._wake_actor()
        done = fut.result()
        value = cloudpickle.loads(done.payload)
        if done.ok:
            return value
        raise value

    def take_outgoing(self) -> list[RemoteStep]:
        with self._lock:
            out = list(self.outgoing)
            self.outgoing.clear()
            return out

    def settle(self, done: RemoteStepDone) -> None:
        with self._lock:
            entry = self.inflight.pop(done.request, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(done)

    def resend_all(self) -> list[RemoteStep]:
        """A new worker answered: every step in flight (sent to a dead one, or still queued) goes to it."""
        with self._lock:
            self.replaced += 1
            self.outgoing.clear()
            return [step for step, _ in self.inflight.values()]

    def close(self) -> None:
        err = cloudpickle.dumps(PayloadError("the engine closed: the step runs again after the next open"))
        with self._lock:
            self.closed = True
            entries = list(self.inflight.values())
            self.inflight.clear()
        for step, fut in entries:
            if not fut.done():
                fut.set_result(RemoteStepDone(step.request, False, err))
