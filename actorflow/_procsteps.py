"""Step functions run in worker processes (`Engine(step_processes=N)`), not in the host's threads.

Why: a step that crashes its process (a segfaulting extension, `os._exit`, the OOM killer) or holds
the GIL for long then takes only a worker with it, not the run host. A step thread of the host hands
the step to the pool and waits; the function and its result travel by cloudpickle. When a worker
dies mid-step, the pool is replaced and the same attempt runs again on a new worker (the step did
not fail: its process did; at-least-once, as after any crash); a step that keeps killing its worker
fails that attempt with `StepWorkerDied` after `MAX_DEATHS` tries, and its retry policy applies. A step whose callable carries
`actorflow_step={"journal_deaths": True, ...}` (a task handler) is not re-run silently: its attempt
fails with StepWorkerDied at once (journaled; the task's lease logic retries it).

A worker reaches its host through `to_host(msg)` (progress, lease heartbeats): the host's drain
thread hands each message to the handler registered for its type in HOST_HANDLERS, else posts it
to the runtime (StepProgress). STEP_END_HOOKS run in the host when a worker step ends, however.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cloudpickle
import structlog

from ._types import StepInfo, _current_step, step_post
from .errors import ActorflowError, PayloadError

__all__ = ["ProcessSteps", "StepWorkerDied", "to_host", "HOST_HANDLERS", "STEP_END_HOOKS", "CANCEL_HOOKS",
           "cancel_in_workers", "cancelled_in_worker", "serve_node", "lost_in_worker", "NODE_CANCELLED", "NODE_LOST"]

log = structlog.get_logger("actorflow.steps")

MAX_DEATHS = 3
_MAX_BYSTANDER = 20  # re-runs of one step whose worker another step's death took down, before it gives up

# in the host: how to handle a message of a type sent by a worker: fn(msg, post)
HOST_HANDLERS: dict[type, Callable[[Any, Callable[[Any], None]], None]] = {}
# in the host: called with the StepInfo of every worker step once it ended (result, error or death)
STEP_END_HOOKS: list[Callable[[StepInfo], None]] = []
# in a host: called with a run id that was cancelled (a shard's placement tells the nodes running it)
CANCEL_HOOKS: list[Callable[[str], None]] = []
_to_host: Any = None  # in a worker process: the queue to its host
_cancel_view: Any = None  # in a worker process: the host's shared list of cancelled run ids
_CANCEL_BYTES = 64 * 1024
_POOLS: weakref.WeakSet[ProcessSteps] = weakref.WeakSet()


def _init_worker(channel: Any, cancelled: Any = None) -> None:
    global _to_host, _cancel_view
    _to_host = channel
    _cancel_view = cancelled


class _NodeChannel:
    """In a node's step actor process: the way to the host is the actor's own queue to its shard."""

    def __init__(self, put: Callable[[Any], None]) -> None:
        self.put = put


def serve_node(put: Callable[[Any], None]) -> None:
    """In a node's step actor process (`actorflow worker`): what handlers send the host with `to_host`
    (lease beats, in-flight notes, progress) goes to `put`, which the actor sends to its shard."""
    global _to_host
    _to_host = _NodeChannel(put)


# in a node's step actor process: run ids the shard marked cancelled, and attempts (run id, step
# position, attempt) whose lease the shard found expired; a mark goes when its step ends there
NODE_CANCELLED: set[str] = set()
NODE_LOST: set[tuple[str, int, int]] = set()


def lost_in_worker(key: tuple[str, int, int]) -> bool:
    """In a node's step actor process: whether the host found this attempt's lease expired."""
    return key in NODE_LOST


def cancelled_in_worker(run_id: str) -> bool:
    """In a step worker process: whether the host marked `run_id` cancelled (cancel_in_workers)."""
    if run_id in NODE_CANCELLED:
        return True
    view = _cancel_view
    if view is None:
        return False
    with view.get_lock():
        data = bytes(view.value)
    return run_id.encode() in data.split(b"\n")


def cancel_in_workers(run_id: str) -> None:
    """In a host: tell the step worker processes that run `run_id` was cancelled (a handler there
    sees it cooperatively; the mark goes when its step ends), and the nodes (CANCEL_HOOKS)."""
    for pool in list(_POOLS):
        pool.mark_cancelled(run_id)
    for hook in list(CANCEL_HOOKS):
        hook(run_id)


def to_host(msg: Any) -> bool:
    """In a step worker process: send `msg` to the host (True); elsewhere False (nothing sent)."""
    if _to_host is None:
        return False
    _to_host.put(msg)
    return True


def _post_to_host(msg: Any) -> None:
    to_host(msg)


class _Started(tuple):  # type: ignore[type-arg]
    """From a worker: it began step (run_id, seq, attempt) - a death after this took the attempt."""

    __slots__ = ()


class StepWorkerDied(ActorflowError):
    """The process running a step attempt died every time it was tried."""


def _call(blob: bytes, info: StepInfo) -> tuple[bool, bytes]:
    """In the worker: run the step; (ok, cloudpickled result or exception)."""
    token = _current_step.set(info)
    post = step_post.set(_post_to_host if _to_host is not None else None)
    if _to_host is not None:
        _to_host.put(_Started((info.run_id, info.seq, info.attempt, os.getpid())))
    try:
        fn = cloudpickle.loads(blob)
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - sent back as the attempt's error
        try:
            return False, cloudpickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            return False, cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        _current_step.reset(token)
        step_post.reset(post)
    try:
        return True, cloudpickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - the attempt fails, naming the type
        err = PayloadError(
            f"result of step {info.name!r} of type {type(result).__name__} cannot be sent back from its "
            f"worker process: {exc}",
            type_name=type(result).__name__,
        )
        return False, cloudpickle.dumps(err)


class ProcessSteps:
    """A process pool that runs step functions for the step threads of one host."""

    def __init__(self, processes: int, post: Callable[[Any], None] | None = None) -> None:
        self.processes = processes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self.replaced = 0  # pools replaced after a worker died
        self._post = post
        self._channel: Any = None  # workers -> this host (created with the first pool)
        self._drain: threading.Thread | None = None
        # steps a worker began -> its pid (journal_deaths steps check it; a timed-out one's worker is stopped)
        self._started: dict[tuple[Any, ...], int] = {}
        self._abandoned: set[tuple[Any, ...]] = set()  # timed out while still running here
        self._cancelled: dict[str, None] = {}  # run ids marked cancelled for the workers, oldest first
        self._cancel_buf: Any = None
        _POOLS.add(self)

    def mark_cancelled(self, run_id: str, on: bool = True) -> None:
        with self._lock:
            if on == (run_id in self._cancelled) or self._cancel_buf is None:
                return
            if on:
                self._cancelled[run_id] = None
            else:
                del self._cancelled[run_id]
            data = b"\n".join(r.encode() for r in self._cancelled)
            while len(data) >= _CANCEL_BYTES - 1:  # full: the oldest marks go (their steps are long gone)
                self._cancelled.pop(next(iter(self._cancelled)))
                data = b"\n".join(r.encode() for r in self._cancelled)
            buf = self._cancel_buf
        with buf.get_lock():
            buf.value = data

    def _drain_loop(self, channel: Any) -> None:
        while True:
            try:
                msg = channel.get()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            if type(msg) is _Started:
                with self._lock:
                    self._started[tuple(msg[:3])] = msg[3]
                    abandoned = tuple(msg[:3]) in self._abandoned
                if abandoned:  # it timed out before its start reached us
                    self._kill(msg[3])
                continue
            try:
                handler = HOST_HANDLERS.get(type(msg))
                if handler is not None:
                    handler(msg, self._post or (lambda m: None))
                elif self._post is not None:
                    self._post(msg)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the channel
                log.warning("message from a step worker failed", error=f"{type(exc).__name__}: {exc}")

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise StepWorkerDied("the engine is closing: the step runs again after the next open")
            if self._pool is None:
                ctx = multiprocessing.get_context("fork")
                if self._channel is None:
                    self._channel = ctx.SimpleQueue()
                    self._cancel_buf = ctx.Array("c", _CANCEL_BYTES)
                    self._drain = threading.Thread(target=self._drain_loop, args=(self._channel,),
                                                   name="actorflow-step-channel", daemon=True)
                    self._drain.start()
                self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(self._channel, self._cancel_buf))
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
                self.replaced += 1
        broken.shutdown(wait=False, cancel_futures=False)

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and operators)."""
        pool = self._pool
        procs = getattr(pool, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.pid is not None]

    def run(self, fn: Callable[[], Any], info: StepInfo) -> Any:
        """Run `fn` in a worker and return its result (or raise its exception), on the calling thread."""
        try:
            blob = cloudpickle.dumps(fn)
        except Exception as exc:
            raise PayloadError(
                f"step {info.name!r} cannot be sent to a worker process ({type(exc).__name__}: {exc}); "
                "its function must pickle (cloudpickle), or run the engine with step_processes=0",
                type_name=type(fn).__name__,
            ) from exc
        key = (info.run_id, info.seq, info.attempt)
        try:
            return self._run(blob, info, bool((getattr(fn, "actorflow_step", None) or {}).get("journal_deaths")))
        finally:
            with self._lock:
                self._started.pop(key, None)
                self._abandoned.discard(key)
            self.mark_cancelled(info.run_id, False)
            for hook in STEP_END_HOOKS:
                hook(info)

    def abandon(self, key: tuple[Any, ...]) -> None:
        """The run's timeout for this attempt fired: stop the worker process inside it (its pool is
        replaced; other steps in that pool run again, as after any worker death)."""
        with self._lock:
            pid = self._started.get(key)
            self._abandoned.add(key)
            if len(self._abandoned) > 10_000:  # keys of attempts that had ended before their timeout
                self._abandoned = {key}
            if pid is None:
                return  # not started yet, or its start message is on its way (the drain stops it then)
        log.warning("stopping the step worker of a timed-out attempt", run_id=key[0], pos=key[1], attempt=key[2], pid=pid)
        self._kill(pid)

    def _kill(self, pid: int) -> None:
        if pid in self.pids():  # only a worker of this pool, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _began(self, key: tuple[Any, ...]) -> bool:
        """Whether a worker began this step; its start message may trail the death by a moment."""
        deadline = time.monotonic() + 0.5
        while True:
            with self._lock:
                if key in self._started:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _bystander(self, pool: ProcessPoolExecutor, key: tuple[Any, ...]) -> bool:
        """Whether this step's worker was only terminated by the pool because another worker died: a
        broken pool SIGTERMs every worker left, so the step that killed its own worker is the one whose
        process ended otherwise. Deaths count against the step that caused them, not its neighbours."""
        procs = dict(getattr(pool, "_processes", None) or {})
        if not self._began(key):
            return False
        with self._lock:
            pid = self._started.get(key)
        if pid is None or pid not in procs:
            return False  # cannot tell (or it never began): counted, as before
        for p in procs.values():
            p.join(timeout=2.0)
        terminated = -signal.SIGTERM
        mine = procs[pid].exitcode
        return mine == terminated and any(p.exitcode not in (None, 0, terminated) for p in procs.values())

    def _run(self, blob: bytes, info: StepInfo, journal_deaths: bool) -> Any:
        death = bystanders = 0
        while death < MAX_DEATHS:
            pool = self._current()
            try:
                ok, payload = _outcome(pool, blob, info)
            except _Replaced:  # shut down between our get and submit: it never ran, so no death of its own
                self._replace(pool)
                continue
            except BrokenProcessPool:
                bystander = self._bystander(pool, (info.run_id, info.seq, info.attempt))
                death += 0 if bystander else 1
                bystanders = bystanders + 1 if bystander else bystanders
                if bystanders > _MAX_BYSTANDER:  # another step keeps killing workers under this one
                    death = MAX_DEATHS
                self._replace(pool)
                with self._lock:
                    abandoned = (info.run_id, info.seq, info.attempt) in self._abandoned
                if abandoned:  # stopped because it timed out: the run has moved on, nothing reruns it
                    raise StepWorkerDied(f"step {info.name!r} of run {info.run_id!r}: attempt {info.attempt} timed "
                                         "out and its worker process was stopped", run_id=info.run_id,
                                         step=info.name, attempt=info.attempt) from None
                if journal_deaths and self._began((info.run_id, info.seq, info.attempt)):
                    log.warning("step worker process died; the attempt is lost", run_id=info.run_id, step=info.name,
                                attempt=info.attempt)
                    raise StepWorkerDied(
                        f"step {info.name!r} of run {info.run_id!r}: its worker process died during attempt "
                        f"{info.attempt} (the attempt is lost)", run_id=info.run_id, step=info.name, attempt=info.attempt,
                    ) from None
                log.warning("step worker process died; the step runs again", run_id=info.run_id, step=info.name,
                            attempt=info.attempt, deaths=death)
                continue
            value = cloudpickle.loads(payload)
            if ok:
                return value
            raise value
        raise StepWorkerDied(
            f"step {info.name!r} of run {info.run_id!r}: its worker process died {MAX_DEATHS} times",
            run_id=info.run_id,
            step=info.name,
        )

    def close(self) -> None:
        """Stop the workers; one still inside a step (abandoned after the grace period) is killed:
        a closed engine leaves no process behind, and the step runs again after the next open."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            channel, self._channel = self._channel, None
        if pool is not None:
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.join(timeout=2.0)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=2.0)
        if channel is not None:
            _end_drain(channel)


def _end_drain(channel: Any) -> None:
    """Send the drain thread its end. The queue's write lock is shared with the workers: one killed
    in the middle of a put (a step timeout's SIGKILL, the OOM killer) holds it for good, and a
    blocking put would hang close() forever. So the put gets a deadline; past it the drain thread
    (a daemon, blocked on a pipe nobody writes to any more) is left behind, and that is logged."""
    sender = threading.Thread(target=channel.put, args=(None,), name="actorflow-step-channel-end", daemon=True)
    sender.start()
    sender.join(_END_DRAIN_WAIT)
    if sender.is_alive():
        log.warning("a step worker died holding the channel's write lock: its reader thread is left behind")


class _Replaced(Exception):
    """The pool was shut down (replaced after a worker death) before this step was submitted."""


def _outcome(pool: ProcessPoolExecutor, blob: bytes, info: StepInfo) -> Any:
    """Submit the step and wait for its (ok, payload), in two races of Python's pool with a death:

    - the pool another thread just replaced refuses new work (RuntimeError "after shutdown"): the
      step never reached a worker, so it is submitted to the new pool (not a death of its own);
    - a submit that lands while the pool's manager thread marks it broken is never failed by it
      (CPython's terminate_broken neither takes the submit lock nor sees the new item): its future
      would wait forever. A broken pool runs nothing more, so a future still pending a moment after
      the pool broke is lost - raised as BrokenProcessPool, i.e. the step runs again."""
    try:
        fut: Future[Any] = pool.submit(_call, blob, info)
    except RuntimeError as exc:
        if getattr(pool, "_shutdown_thread", False) and not getattr(pool, "_broken", False):
            raise _Replaced() from exc
        raise
    broken_since: float | None = None
    while True:
        try:
            return fut.result(timeout=_BROKEN_POLL)
        except FutureTimeout:
            if not getattr(pool, "_broken", False):
                continue
            now = time.monotonic()
            if broken_since is None:
                broken_since = now
            elif now - broken_since >= _BROKEN_GRACE and not fut.done():
                raise BrokenProcessPool("the pool broke and never settled this step's future") from None


_END_DRAIN_WAIT = 2.0  # close(): how long the drain thread's end may wait for the channel's write lock
_BROKEN_POLL = 0.5  # how often a waiting step looks whether its pool broke without telling it
_BROKEN_GRACE = 1.0  # the manager thread settles the futures it knows of right after marking the pool
