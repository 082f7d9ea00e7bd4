"""Step functions run in worker processes (`Engine(step_processes=N)`), not in the host's threads.

Why: a step that crashes its process (a segfaulting extension, `os._exit`, the OOM killer) or holds
the GIL for long then takes only a worker with it, not the run host. A step thread of the host hands
the step to the pool and waits; the function and its result travel by cloudpickle. When a worker
dies mid-step, the pool is replaced and the same attempt runs again on a new worker (the step did
not fail: its process did; at-least-once, as after any crash); a step that keeps killing its worker
fails that attempt with `StepWorkerDied` after `MAX_DEATHS` tries, and its retry policy applies.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cloudpickle
import structlog

from ._types import StepInfo, _current_step
from .errors import ActorflowError, PayloadError

__all__ = ["ProcessSteps", "StepWorkerDied"]

log = structlog.get_logger("actorflow.steps")

MAX_DEATHS = 3


class StepWorkerDied(ActorflowError):
    """The process running a step attempt died every time it was tried."""


def _call(blob: bytes, info: StepInfo) -> tuple[bool, bytes]:
    """In the worker: run the step; (ok, cloudpickled result or exception)."""
    token = _current_step.set(info)
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

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self.replaced = 0  # pools replaced after a worker died

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise StepWorkerDied("the engine is closing: the step runs again after the next open")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("fork"))
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
        for death in range(1, MAX_DEATHS + 1):
            pool = self._current()
            try:
                ok, payload = pool.submit(_call, blob, info).result()
            except BrokenProcessPool:
                log.warning("step worker process died; the step runs again", run_id=info.run_id, step=info.name,
                            attempt=info.attempt, deaths=death)
                self._replace(pool)
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
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)
