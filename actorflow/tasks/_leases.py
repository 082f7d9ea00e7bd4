"""Leases on running handler attempts: `@engine.task(lease=30)` gives an attempt 30 s to live,
which each `ctx.heartbeat()` renews. An attempt whose lease runs out is *lost*: the process hosting
its step pool reports the attempt failed with `LeaseLost` (journaled like any failed attempt),
tells it to stop (its `ctx.cancelled` turns True, `heartbeat()` raises) and, when it runs in a step worker
process (`Engine(step_processes=N)`), kills that process, whose late result is then discarded. The
execution workflow starts a new attempt (at-least-once; one journaled success, ever).

The table lives in the process whose step pool dispatched the attempt (the engine's, or a shard's
under system='multiproc'). A handler in a step worker process reaches it by the worker's channel
to its host (`actorflow._procsteps.to_host`): a LeaseBeat at start, per heartbeat and at the end.
A handler on a worker node (`actorflow worker`, remote_tasks=True) sends the same, through its step
actor to the shard that placed it (`_multiproc._remote_steps.NODE_HANDLERS`); the shard holds its
lease, and when it runs out the node is told (StepCancel: ctx.cancelled, heartbeat raises) - its
process is not killed, like a thread here - and a new attempt runs on a node of its queue."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from .. import _procsteps
from .._messages import StepDone
from .._multiproc import _wire as _multiproc_notices
from .._multiproc._remote_steps import NODE_HANDLERS, NodeLink
from .._procsteps import to_host
from .._types import StepInfo
from ..errors import ActorflowError

__all__ = ["LeaseBeat", "LeaseLost", "Leases", "LEASES", "lost_error", "INFLIGHT", "ON_NODE", "inflight_begin", "inflight_end"]

log = structlog.get_logger("actorflow.tasks")

Key = tuple[str, int, int]  # (run id, step position, attempt)


class LeaseLost(ActorflowError):
    """A handler attempt stopped heartbeating past its lease, or its worker process died."""


def lost_error(text: str) -> bool:
    """Whether a journaled attempt error is a lost lease (or a dead worker): retried as lost."""
    return text.startswith(("LeaseLost", "StepWorkerDied"))


@dataclass(frozen=True, slots=True)
class LeaseBeat:
    """From a step worker process to its host: hold (first), renew, or end (`done`) a lease."""

    run_id: str
    pos: int
    attempt: int
    lease: float
    pid: int
    done: bool = False


@dataclass
class _Lease:
    lease: float
    expires: float
    post: Callable[[Any], None]
    pid: int | None  # the step worker process running it (None: a thread of this process, or a node's)
    beats: int = 0
    stop: Callable[[], None] | None = None  # on a node: tell it the attempt lost its lease
    where: str = ""  # on a node: which


class Leases:
    """The leases held by attempts dispatched from this process, and the thread that expires them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[Key, _Lease] = {}
        self._ended: dict[Key, float] = {}  # keys released here: a late hold for them is ignored
        self.lost: dict[Key, float] = {}  # keys whose lease ran out (their late results are discarded)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, key: Key, lease: float, post: Callable[[Any], None] | None, pid: int | None = None,
             stop: Callable[[], None] | None = None, where: str = "") -> None:
        if post is None:
            return  # not inside a step pool (a test calling a handler directly): nothing to guard
        with self._lock:
            if key in self._ended or key in self._table:
                return
            self._table[key] = _Lease(lease, time.monotonic() + lease, post, pid, 0, stop, where)
            self._ensure_thread()
        self._wake.set()

    def beat(self, key: Key) -> None:
        with self._lock:
            held = self._table.get(key)
            if held is not None:
                held.expires = time.monotonic() + held.lease
                held.beats += 1

    def release(self, key: Key) -> None:
        with self._lock:
            self._table.pop(key, None)
            now = time.monotonic()
            self._ended[key] = now
            if len(self._ended) > 10_000:
                self._ended = {k: t for k, t in self._ended.items() if now - t < 300}
            if len(self.lost) > 10_000:
                self.lost = {k: t for k, t in self.lost.items() if now - t < 3600}

    def held(self) -> dict[Key, float]:
        """Each held lease's seconds left (for tests and operators)."""
        now = time.monotonic()
        with self._lock:
            return {k: v.expires - now for k, v in self._table.items()}

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._watch, name="actorflow-leases", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            expired: list[tuple[Key, _Lease]] = []
            with self._lock:
                for key, held in list(self._table.items()):
                    if held.expires <= now:
                        expired.append((key, self._table.pop(key)))
                        self._ended[key] = now
                        self.lost[key] = now
                nxt = min((h.expires for h in self._table.values()), default=now + 1.0)
            for key, held in expired:
                self._expire(key, held)
            self._wake.wait(min(1.0, max(0.005, nxt - time.monotonic())))

    def _expire(self, key: Key, held: _Lease) -> None:
        run_id, pos, attempt = key
        where = f"worker process {held.pid}" if held.pid is not None else held.where or "a step thread"
        err = LeaseLost(
            f"attempt {attempt} of execution {run_id!r} lost its {held.lease:g}s lease in {where} "
            f"(no heartbeat in time; {held.beats} heartbeats before); it runs again",
            execution_id=run_id, attempt=attempt, lease=held.lease, pid=held.pid,
        )
        log.warning("task lease lost", execution_id=run_id, attempt=attempt, lease=held.lease, pid=held.pid)
        held.post(StepDone(run_id, pos, attempt, False, err))  # the handler sees ctx.cancelled (self.lost)
        if held.stop is not None:
            held.stop()  # a node's handler: told by its shard
        if held.pid is not None and held.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(held.pid, signal.SIGKILL)


LEASES = Leases()


def _from_worker(msg: LeaseBeat, post: Callable[[Any], None]) -> None:
    key = (msg.run_id, msg.pos, msg.attempt)
    if msg.done:
        LEASES.release(key)
    elif key in LEASES.held():
        LEASES.beat(key)
    else:
        LEASES.hold(key, msg.lease, post, msg.pid)


def _from_node(msg: LeaseBeat, post: Callable[[Any], None], link: NodeLink) -> None:
    """In a shard: a handler on a worker node holds, renews or ends its lease (held here)."""
    key = (msg.run_id, msg.pos, msg.attempt)
    if msg.done:
        LEASES.release(key)
    elif key in LEASES.held():
        LEASES.beat(key)
    else:
        LEASES.hold(key, msg.lease, post, None, stop=lambda: link.stop(key), where=f"node {link.node or link.host}")


# --- handler attempts running from this process's step pool, by execution id (-> queue) -------------
# The control plane's exact in-flight counts on the embedded system (the facade is the host there).
INFLIGHT: dict[str, str] = {}
# those of them running on a worker node -> "host:pid" of its `actorflow worker` process
ON_NODE: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class InFlight:
    """From a step worker process to its host: a handler attempt began (`running`) or ended."""

    run_id: str
    queue: str
    running: bool
    node: str = ""  # set by the shard for a handler on a worker node ("host:pid" of that node)


def _tell_facade(msg: InFlight) -> None:
    """In a shard process (system='multiproc'): the engine facade, where the control plane and
    task_status read, learns at once that a handler began or ended - not when the run's status
    record is next written."""
    shard = sys.modules.get("actorflow._multiproc._shard")
    for tell in getattr(shard, "TO_FACADE", ()):
        tell(msg)


def _note(msg: InFlight) -> None:
    if msg.running:
        INFLIGHT[msg.run_id] = msg.queue
        if msg.node:
            ON_NODE[msg.run_id] = msg.node
        else:
            ON_NODE.pop(msg.run_id, None)
    else:
        INFLIGHT.pop(msg.run_id, None)
        ON_NODE.pop(msg.run_id, None)


def inflight_begin(run_id: str, queue: str) -> None:
    msg = InFlight(run_id, queue, True)
    if not to_host(msg):
        _note(msg)
        _tell_facade(msg)


def inflight_end(run_id: str) -> None:
    msg = InFlight(run_id, "", False)
    if not to_host(msg):
        _note(msg)
        _tell_facade(msg)


def _inflight_from_worker(msg: InFlight, post: Callable[[Any], None]) -> None:
    _note(msg)
    _tell_facade(msg)


def _inflight_from_node(msg: InFlight, post: Callable[[Any], None], link: NodeLink) -> None:
    noted = InFlight(msg.run_id, msg.queue, msg.running, link.node or link.host)
    _note(noted)
    _tell_facade(noted)


def _step_ended(info: StepInfo) -> None:
    LEASES.release((info.run_id, info.seq, info.attempt))
    if INFLIGHT.pop(info.run_id, None) is not None:  # also when its worker died before telling
        _tell_facade(InFlight(info.run_id, "", False))


def _inflight_in_facade(msg: InFlight) -> None:
    _note(msg)


_procsteps.HOST_HANDLERS[InFlight] = _inflight_from_worker
_multiproc_notices.NOTICE_HANDLERS[InFlight] = _inflight_in_facade
_procsteps.HOST_HANDLERS[LeaseBeat] = _from_worker
NODE_HANDLERS[LeaseBeat] = _from_node
NODE_HANDLERS[InFlight] = _inflight_from_node
_procsteps.STEP_END_HOOKS.append(_step_ended)
