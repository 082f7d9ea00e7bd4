"""Runs step and compensation functions off the actor thread: a thread pool plus an asyncio loop."""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._messages import CompDone, StepDone
from ._procsteps import ProcessSteps
from ._types import StepInfo, _current_step, step_post
from .errors import Cancelled, PayloadError
from .telemetry import _hooks as _telemetry

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["StepPool"]

_SIMPLE = (type(None), bool, int, float, str)


def _is_async(fn: Callable[[], Any]) -> bool:
    """inspect.iscoroutinefunction without its slow path for plain functions and builtins."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_COROUTINE)
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return False
    return inspect.iscoroutinefunction(fn)


class _Raised:
    """What an async step raised, returned rather than raised: asyncio lets KeyboardInterrupt and
    SystemExit out of a task and stops its loop, which would hang every async step of the engine."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _end_span(span: Any, exc: BaseException | None) -> None:
    if span is not None:
        tel = _telemetry.current
        if tel is not None:
            tel.step_end(span, exc)


class StepPool:
    """Executes step functions and posts StepDone / CompDone results back to the runtime."""

    def __init__(self, rt: Runtime, threads: int = 32, processes: int = 0) -> None:
        self.rt = rt
        # sync steps run in worker processes when asked (_procsteps); the threads then only wait
        self.procs = ProcessSteps(processes, post=rt.post) if processes else None
        self._run_sync: Callable[[Callable[[], Any], StepInfo], Any] | None = (
            self.procs.run if self.procs is not None else None
        )

        # plain threads on a SimpleQueue: no Future/Condition allocation per step
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._tls = threading.local()  # on a worker running the actors: `kept`, the next step it runs itself
        self._threads = [
            threading.Thread(target=self._worker, name=f"actorflow-step-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="actorflow-async-steps", daemon=True)
        self._loop_thread.start()
        self._lock = threading.Lock()
        self.inflight = 0
        self._idle = threading.Condition(self._lock)
        self._idle_waiters = 0  # threads in wait_idle (close): only they need the notify
        # False when every step must pass the sync runner (a shard whose steps all go to member nodes)
        self.async_here = True

    def run_sync_with(
        self, runner: Callable[[Callable[[], Any], StepInfo], Any] | None
    ) -> Callable[[Callable[[], Any], StepInfo], Any] | None:
        """Run sync steps through `runner(fn, info)` (a multiprocess shard's placement on nodes), waited
        for by a thread; returns the runner it replaces (None: called here, else worker processes)."""
        previous, self._run_sync = self._run_sync, runner if runner is not None else self._run_sync
        return previous

    def abandon(self, run_id: str, pos: int, attempt: int) -> None:
        """The run gave up on this attempt (it timed out). A thread cannot be stopped (its late result
        is ignored); a step worker process running it is, so it does not hold its worker for good."""
        if self.procs is not None:
            self.procs.abandon((run_id, pos, attempt))

    def submit(self, run_id: str, pos: int, name: str, attempt: int, fn: Callable[[], Any], kind: str) -> None:
        self.submit_many([(run_id, pos, name, attempt, fn, kind)])

    def submit_many(self, steps: list[tuple[Any, ...]]) -> None:
        """Start (run_id, pos, name, attempt, fn, kind) steps; one lock round for the lot."""
        if self.rt.closing:
            return  # the engine is closing: the steps run again after the next open (at-least-once)
        with self._lock:
            self.inflight += len(steps)
        put = self._tasks.put
        tls = self._tls
        keep = getattr(tls, "helping", False) and tls.kept is None
        for run_id, pos, name, attempt, fn, kind in steps:
            if _is_async(fn) and self.async_here:
                info = StepInfo(run_id, name, pos, attempt, f"{run_id}#{pos}:{name}")
                fut = asyncio.run_coroutine_threadsafe(self._run_async(fn, info, kind), self._loop)
                fut.add_done_callback(functools.partial(self._future_done, info=info, kind=kind))
            elif keep:  # a worker running the actors: it runs this one next, no hand-off
                tls.kept = (fn, run_id, pos, name, attempt, kind)
                keep = False
            else:
                put((fn, run_id, pos, name, attempt, kind))  # StepInfo is built off the pump

    def _worker(self) -> None:
        tls = self._tls
        tls.kept = None
        tls.helping = False
        get = self._tasks.get
        step_post.set(self.rt.post)  # this thread's own context: set once, read by every step it runs
        while True:
            task = tls.kept
            if task is None:
                task = get()
                if task is None:
                    return
            else:
                tls.kept = None
            fn, run_id, pos, name, attempt, kind = task
            info = StepInfo(run_id, name, pos, attempt, f"{run_id}#{pos}:{name}")
            token = _current_step.set(info)
            tel = _telemetry.current  # None unless actorflow.telemetry is enabled: nothing else to do
            span = None if tel is None else tel.step_begin(self.rt, info, kind)
            try:
                result = fn() if self._run_sync is None else self._run_sync(fn, info)
            except BaseException as exc:  # noqa: BLE001 - reported to the run as a failed attempt
                if tel is not None:
                    tel.step_end(span, exc)
                self._done(exc, None, info, kind, helps=True)
                continue
            finally:
                _current_step.reset(token)
            if type(result) not in _SIMPLE and inspect.isawaitable(result):
                # a sync callable that returned a coroutine: finish it on the loop, free this thread
                awaiting = self._await(result, info, span)
                try:
                    fut = asyncio.run_coroutine_threadsafe(awaiting, self._loop)
                except RuntimeError:  # the engine closed (its loop with it) while this step ran
                    awaiting.close()
                    if inspect.iscoroutine(result):
                        result.close()
                    self._done(Cancelled(info.run_id, f"step {info.name!r} abandoned"), None, info, kind)
                    continue
                fut.add_done_callback(functools.partial(self._future_done, info=info, kind=kind))
                del fut, awaiting, result  # this thread lives on: its locals must not keep the outcome alive
            else:
                if tel is not None:
                    tel.step_end(span, None)
                self._done(None, result, info, kind, helps=True)

    def _future_done(self, fut: Future[Any], info: StepInfo, kind: str) -> None:
        if fut.cancelled():  # the loop stopped under it (close): abandoned, runs again after the next open
            self._done(Cancelled(info.run_id, f"step {info.name!r} abandoned"), None, info, kind)
            return
        result = fut.result()
        if type(result) is _Raised:
            self._done(result.exc, None, info, kind)
        else:
            self._done(None, result, info, kind)

    async def _run_async(self, fn: Callable[[], Any], info: StepInfo, kind: str = "step") -> Any:
        _current_step.set(info)
        step_post.set(self.rt.post)
        tel = _telemetry.current
        span = None if tel is None else tel.step_begin(self.rt, info, kind)
        try:
            awaitable = fn()
        except BaseException as exc:  # noqa: BLE001 - see _Raised
            if tel is not None:
                tel.step_end(span, exc)
            return _Raised(exc)
        return await self._await(awaitable, info, span)

    async def _await(self, awaitable: Any, info: StepInfo, span: Any = None) -> Any:
        _current_step.set(info)
        try:
            result = await awaitable
        except BaseException as exc:  # noqa: BLE001 - see _Raised
            _end_span(span, exc)
            return _Raised(exc)  # not kept in a local: this frame, in exc's traceback, would hold it (a cycle)
        _end_span(span, None)
        return result

    def _done(self, exc: BaseException | None, result: Any, info: StepInfo, kind: str, helps: bool = False) -> None:
        """Report a finished attempt; `helps` (a worker thread): run the actors here if nobody is."""
        rt = self.rt
        if kind == "comp":
            item: StepDone | CompDone = CompDone(info.run_id, info.seq, exc is None, exc)
        elif exc is not None:
            item = StepDone(info.run_id, info.seq, info.attempt, False, exc)
        else:
            codec = rt.codec
            fields = ("step_completed", info.name, info.seq, rt.clock.now(), result)
            try:
                try:
                    record = codec.encode(fields)
                except PayloadError:  # again, to name the step (not formatted on every result)
                    record = codec.encode(fields, f"result of step {info.name!r}")
                if type(result) in _SIMPLE:
                    value = result
                else:
                    value = codec.readback(record, f"result of step {info.name!r}", result)[4]
            except BaseException as err:  # noqa: BLE001 - PayloadError: cannot be journaled (or read back)
                item = StepDone(info.run_id, info.seq, info.attempt, False, err)
            else:
                item = StepDone(info.run_id, info.seq, info.attempt, True, (record, value))
        rt.queue.append(item)
        with self._lock:
            self.inflight -= 1  # before waking or helping: the pump thread may then find the runtime idle
            quiet = not self.inflight
            if quiet and self._idle_waiters:
                self._idle.notify_all()
        if helps and quiet:  # no other step running: nobody else is about to run the actors either
            tls = self._tls
            tls.helping = True
            try:
                rt.help()
            finally:
                tls.helping = False
        else:
            rt.wake()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no step is running (the grace period of close())."""
        with self._lock:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: self.inflight == 0, timeout)
            finally:
                self._idle_waiters -= 1

    def close(self, wait: bool = False, join_timeout: float = 2.0) -> None:
        """Stop the workers. If none is inside a step they are joined (within `join_timeout`), so a closed
        engine leaves no threads behind; with a step abandoned after the grace period they are left to
        end on their own, unless `wait`."""
        while True:  # drop queued steps: they run again after the next open
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._tasks.put(None)
        if self.procs is not None:
            self.procs.close()  # a thread waiting on an abandoned step in a worker is released
        if wait or not self.inflight:  # every worker is idle: each takes its None and ends at once
            deadline = time.monotonic() + join_timeout
            for t in self._threads:
                t.join(None if wait else max(0.0, deadline - time.monotonic()))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        if not self._loop_thread.is_alive():
            # closed here, not by the loop's __del__ at interpreter exit, when its self-pipe socket
            # may already be gone (`Exception ignored ... Invalid file descriptor: -1`)
            self._loop.close()
