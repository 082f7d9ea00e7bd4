"""The Engine facade: a thread-safe, sync and asyncio API over the journal and the actor runtime."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from storage import Codec, Event, Journal, LmdbJournal, RunRecord, SignalResult, WriteBatch
from storage._journal import check_run_id

from ._aio import LoopBridge
from ._check import CheckReport, check_runs
from ._clock import Clock, SystemClock
from ._control import ControlInbox
from ._core import Env, failure_text
from ._handle import RunHandle, RunHandles, new_run_id
from ._lockfile import DirLock
from ._malloc import pin_mmap_threshold
from ._messages import CancelRun, LoadRun, SignalArrived, StartRun, StartRuns
from ._monitor import afollow, follow
from ._multiproc import MultiprocRuntime
from ._multiproc._node_shards import check_shard_nodes, record_shard_map
from ._multiproc._options import check_join, check_node_options, require_admin
from ._multiproc._placement import PlacementWait
from ._multiproc._routed import RoutedJournal
from ._options import check_engine_options
from ._residency import Residency, residency_of
from ._runtime import Facade, Runtime
from ._thespian import ActorRuntime
from ._types import RunState, RunStatus
from .errors import (
    ActorflowError,
    Cancelled,
    ConfigError,
    JournalCorrupt,
    PayloadError,
    RunConflict,
    RunFinished,
    RunNotFound,
    WorkflowFailed,
    WorkflowNotRegistered,
)
from .tasks import TaskMethods
from .telemetry import _hooks as _telemetry

__all__ = ["Engine", "RunHandle"]

F = TypeVar("F", bound=Callable[..., Any])
_GC_DEFAULT = (700, 10, 10)
# runs per commit of start_many: a million in one LMDB transaction would hold ~1.2 KB per run at
# once (the batch, then the dirty pages, which LMDB keeps for reuse after the commit)
START_MANY_COMMIT = 10_000
_gc_lock = threading.Lock()
_gc_tuned: list[Any] = [None, 0]  # [(saved, applied) thresholds, number of open engines relying on them]


def _expire(fut: asyncio.Future[tuple[str, Any, Any]], run_id: str, timeout: float) -> None:
    """aresult's deadline passed: fail its wait (the run itself goes on)."""
    if not fut.done():
        fut.set_exception(TimeoutError(f"run {run_id!r} did not finish within {timeout}s"))


class Engine(TaskMethods):  # task queue methods: actorflow/tasks/_api.py
    """Durable workflows on an actor runtime; `open()` recovers every unfinished registered run."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = "./actorflow-data",
        *,
        system: str = "embedded",
        passivate_after: float | None = 60.0,
        clock: Clock | None = None,
        journal: Journal | None = None,
        sync: bool = True,
        shards: int = 2,
        step_threads: int = 32,
        step_processes: int = 0,
        admin_port: int | None = None,
        secret: str | bytes | None = None,
        step_requirements: dict[str, Any] | None = None,
        node_timeout: float = 15.0,
        close_grace: float = 10.0,
        codec: str = "pickle",
        max_payload: int = 2 * 1024 * 1024,
        timer_horizon: float = 30.0,
        gc_threshold: tuple[int, int, int] | None = (50_000, 20, 100),
        queues: Iterable[str] | None = None,
        capabilities: dict[str, Any] | None = None,
        remote_tasks: bool = False,
        max_resident: int | None = 20_000,
        shard_nodes: dict[int, str] | None = None,
    ) -> None:
        check_engine_options(
            data_dir=data_dir,
            system=system,
            passivate_after=passivate_after,
            clock=clock,
            journal=journal,
            sync=sync,
            shards=shards,
            step_threads=step_threads,
            step_processes=step_processes,
            close_grace=close_grace,
            codec=codec,
            max_payload=max_payload,
            timer_horizon=timer_horizon,
            gc_threshold=gc_threshold,
            max_resident=max_resident,
        )
        join = check_join(system)  # "HOST:PORT": an admin `actorflow admin start` runs on this machine
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.system = system
        self.passivate_after = passivate_after
        self.clock = clock or SystemClock()
        self._journal_given = journal
        self.sync = sync
        self.shards = shards
        self.step_threads = step_threads
        self.step_processes = step_processes
        # multi-machine options (actorflow/_multiproc/_placement.py, README "Multiple machines")
        self._join = join
        self._admin_port, self._secret, self._node_timeout = admin_port, secret, node_timeout
        self._step_requirements = check_node_options(system, admin_port, secret, step_requirements, node_timeout,
                                                     join)
        # shards owned (and journaled) by member nodes: actorflow/_multiproc/_node_shards.py
        self._shard_nodes = check_shard_nodes(shard_nodes, shards, system)
        self.close_grace = close_grace
        self.timer_horizon = timer_horizon
        # runs in memory at most (with passivation on): a burst passes through in cohorts (_residency)
        self.max_resident = max_resident
        # thousands of live coroutines make CPython's default cyclic-GC cadence cost ~30% of
        # throughput; open() raises the thresholds unless the host already tuned them
        self.gc_threshold = gc_threshold
        self._gc_held = False
        self._dir_lock: DirLock | None = None
        self._codec = Codec(codec, max_payload)
        self._codec_name = codec
        if journal is not None and (
            journal.codec.codec_id != self._codec.codec_id or journal.codec.max_payload != max_payload
        ):
            raise ConfigError(
                f"codec={codec!r}/max_payload={max_payload} differ from the given journal's codec; "
                "configure the journal's Codec instead (the journal encodes every payload)"
            )
        self._workflows: dict[str, Callable[..., Any]] = {}
        self._names: dict[Callable[..., Any], str] = {}
        self._lock = threading.Lock()
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge] = weakref.WeakKeyDictionary()
        self._rt: Facade | None = None
        self._actors: ActorRuntime | MultiprocRuntime | None = None
        self.journal: Journal | None = None
        self._control: ControlInbox | None = None
        self._dashboards: list[Any] = []  # servers started by dashboard(); stopped by close()
        # tasks: the queues and capabilities this engine consumes (actorflow/tasks/_routing.py)
        self.consumer = self._consumer_of(queues, capabilities)
        # executions this engine's consumer does not take are placed on worker nodes (`actorflow worker
        # --queues ... --capability ...`) instead of waiting for an engine that takes them
        if not isinstance(remote_tasks, bool):
            raise ConfigError(f"remote_tasks must be a bool, got {remote_tasks!r}")
        if remote_tasks and system == "embedded":
            raise ConfigError("remote_tasks=True places task handlers on worker nodes: it needs "
                              "system='multiproc' or system='HOST:PORT'")
        self.remote_tasks = remote_tasks

    # --- registration --------------------------------------------------------------------------
    def workflow(self, name: str | None = None) -> Callable[[F], F]:
        """Register an `async def wf(ctx, *args)`; returns it unchanged."""
        if callable(name):
            raise ConfigError("use @engine.workflow() with parentheses")

        def register(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise ConfigError(f"workflow {getattr(fn, '__qualname__', fn)!r} must be an async def function")
            wf_name = name or fn.__qualname__
            other = self._workflows.get(wf_name)
            if other is not None and other is not fn and getattr(other, "__code__", None) is not getattr(fn, "__code__", None):
                if other.__module__ != fn.__module__ or other.__qualname__ != fn.__qualname__:
                    raise ConfigError(f"workflow name {wf_name!r} is already registered to {other!r}")
            if isinstance(self._actors, MultiprocRuntime):  # open: its shard processes need it too
                self._actors.add_workflow(wf_name, fn)
            self._workflows[wf_name] = fn
            self._names[fn] = wf_name
            return fn

        return register

    def _name_of(self, wf: Callable[..., Any] | str) -> str:
        if isinstance(wf, str):
            if wf not in self._workflows:
                raise WorkflowNotRegistered(wf, list(self._workflows))
            return wf
        name = self._names.get(wf)
        if name is None:
            raise WorkflowNotRegistered(getattr(wf, "__qualname__", repr(wf)), list(self._workflows))
        return name

    # --- life cycle ----------------------------------------------------------------------------
    def open(self) -> Engine:
        """Start the actor system and recover every unfinished run of a registered workflow.

        The replay is the actors' first item: open() returns once the system runs, without waiting
        for it (a restart with 10,000 runs in flight is usable in ~10 ms; they run again within ~1 s).
        """
        with self._lock:
            if self._rt is not None:
                return self
            pin_mmap_threshold()  # a long-running engine's freed memory must not pile up in glibc's arenas
            if self.system != "embedded":  # "multiproc" or an admin's "HOST:PORT"
                self._open_multiproc()
                if self._control is not None:
                    self._control.poll()
                return self
            journal = self._journal_given
            if journal is None:
                if self.data_dir is None:
                    raise ConfigError("Engine needs a data_dir (or a journal)")
                self._dir_lock = DirLock(self.data_dir)
                self._dir_lock.acquire()
                try:
                    journal = LmdbJournal(self.data_dir, sync=self.sync, codec=self._codec)
                except BaseException:
                    self._release_dir()
                    raise
            self.journal = journal
            rt = Runtime(
                journal,
                self.clock,
                self._workflows,
                shards=self.shards,
                passivate_after=self.passivate_after,
                step_threads=self.step_threads,
                step_processes=self.step_processes,
                timer_horizon=self.timer_horizon,
                max_resident=self.max_resident,
            )
            rt.names = self._names
            actors = ActorRuntime(rt)
            try:
                actors.start()
            except BaseException:
                rt.steps.close()
                if self._journal_given is None:
                    journal.close()
                    self._release_dir()
                raise
            self._rt, self._actors = rt, actors
            if _telemetry.current is not None:
                _telemetry.current.attach(rt)
            self._tune_gc()
            self._tasks_opened()  # tasks: the limit dispatcher and the scheduler (actorflow/tasks)
            # commands other processes queued for this data directory (see _control): now and each tick
            self._control = control = ControlInbox(self)
            rt.housekeepers.append(control.poll)
        control.poll()
        return self

    def _open_multiproc(self) -> None:
        """Run hosts in their own processes (actorflow._multiproc); this process keeps the journal
        for starts, signals and reads. The processes are forked before the journal opens here (an
        LMDB environment must not cross a fork)."""
        if self.data_dir is None or self._journal_given is not None:
            raise ConfigError("system='multiproc' needs a data_dir (its processes open the journal there)")
        if self.clock.jumps:
            raise ConfigError("system='multiproc' runs on the real clock (a MockClock cannot cross processes)")
        if self._join is not None:
            require_admin(self._join)  # before anything is written to the data directory
        self._dir_lock = DirLock(self.data_dir)
        self._dir_lock.acquire()
        rt = MultiprocRuntime(
            self.clock,
            self._workflows,
            self._names,
            data_dir=self.data_dir,
            shards=self.shards,
            codec=self._codec_name,
            max_payload=self._codec.max_payload,
            sync=self.sync,
            passivate_after=self.passivate_after,
            step_threads=self.step_threads,
            step_processes=self.step_processes,
            timer_horizon=self.timer_horizon,
            admin_port=self._admin_port,
            secret=self._secret,
            step_requirements=self._step_requirements,
            node_timeout=self._node_timeout,
            join=self._join,
            gc_threshold=self.gc_threshold,
            max_resident=self.max_resident,
            shard_nodes=self._shard_nodes,
        )
        try:
            with LmdbJournal(self.data_dir, sync=self.sync, codec=self._codec) as checked:  # format check, fails fast
                rt.cluster = record_shard_map(checked, self._shard_nodes, self.shards)
            rt.start()
        except BaseException:
            self._release_dir()
            raise
        try:
            # no append cache: this process never appends to a run twice (its shards do), so it
            # would only hold the ids of the runs it started (up to 100,000) until its next write
            journal: Journal = LmdbJournal(self.data_dir, sync=self.sync, codec=self._codec, append_cache=False)
            if self._shard_nodes:  # a run of a node-owned shard is read and written at its owner
                journal = RoutedJournal(journal, frozenset(self._shard_nodes), rt.shard_of, rt.journal_call,
                                        rt.on_gateway)
            rt.journal = self.journal = journal
        except BaseException:
            rt.close(0.0)
            self._release_dir()
            raise
        self._rt, self._actors = rt, rt
        self._tune_gc()
        self._tasks_opened()  # tasks: the limit dispatcher and the scheduler (actorflow/tasks)
        if _telemetry.current is not None:
            _telemetry.current.attach(rt)
        # commands other processes queued for this data directory (see _control): the gateway polls
        self._control = control = ControlInbox(self)
        rt.housekeepers.append(control.poll)

    def close(self, grace: float | None = None) -> None:
        """Stop cleanly: running steps get `grace` seconds, then are abandoned (re-run on next open)."""
        with self._lock:
            rt, actors = self._rt, self._actors
            if rt is None or actors is None:
                return
            self._rt = self._actors = None
        self._tasks_closing()  # tasks: stop the scheduler and the limit dispatcher first
        if self._control is not None:
            self._control.stop()
        for board in self._dashboards:
            board.close()
        self._dashboards.clear()
        actors.close(self.close_grace if grace is None else grace)
        self._untune_gc()
        if self._journal_given is None:
            rt.journal.close()
            self._release_dir()

    def _tune_gc(self) -> None:
        """Raise the GC thresholds for the first open engine, unless the host tuned them itself."""
        with _gc_lock:
            if _gc_tuned[0] is None:
                if self.gc_threshold is None or gc.get_threshold() != _GC_DEFAULT:
                    return
                _gc_tuned[0] = (gc.get_threshold(), self.gc_threshold)
                gc.set_threshold(*self.gc_threshold)
            _gc_tuned[1] += 1
            self._gc_held = True

    def _untune_gc(self) -> None:
        """The last engine relying on the raised thresholds restores the host's."""
        if not self._gc_held:
            return
        self._gc_held = False
        with _gc_lock:
            _gc_tuned[1] -= 1
            if _gc_tuned[1] == 0 and _gc_tuned[0] is not None:
                saved, applied = _gc_tuned[0]
                if gc.get_threshold() == applied:
                    gc.set_threshold(*saved)
                _gc_tuned[0] = None

    def _release_dir(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._rt is not None

    def waiting_for_placement(self) -> list[PlacementWait]:
        """Steps that wait for a node whose capabilities meet their requirements (none has joined yet,
        or the one running them was lost), oldest first; empty for an embedded engine."""
        rt = self._runtime()
        return rt.waiting_for_placement() if isinstance(rt, MultiprocRuntime) else []

    def _runtime(self) -> Facade:
        rt = self._rt
        if rt is None:
            raise ConfigError("the engine is not open: call engine.open() or use `with engine:`")
        if rt.fatal is not None:
            raise ActorflowError(f"the engine's actor system stopped ({rt.fatal}); close and reopen the engine")
        return rt

    # --- starting runs -------------------------------------------------------------------------
    def _start_batch(
        self,
        rt: Facade,
        name: str,
        args: tuple[Any, ...],
        run_id: str | None,
        batch: WriteBatch,
        now: float | None = None,
    ) -> tuple[int, RunRecord, tuple[Any, ...]]:
        """Add a run's creation to `batch`: (op index, record, the journaled copy of its arguments).

        The copy is read back before anything is written, so arguments that pickle but cannot be
        unpickled are refused here (PayloadError) instead of leaving a run no host can load."""
        rid = run_id if run_id is not None else new_run_id()
        check_run_id(rid)
        if now is None:
            now = rt.clock.now()
        rec = RunRecord(rid, name, "pending", now, now)
        idx = batch.create_run(rec, Event(0, "run_started", name, {"args": args}, now))
        try:
            copy = rt.codec.readback(batch.ops[idx][3], f"arguments of workflow {name!r}", args)
        except PayloadError:
            batch.truncate(idx)
            raise
        return idx, rec, tuple(copy[4]["args"])

    def _after_start(
        self, rt: Facade, rec: RunRecord, args: tuple[Any, ...], existing: RunRecord | None, helps: bool = False
    ) -> tuple[Facade, int] | None:
        """Hand a created run to its host; returns the handle's freshness token (None: it existed).

        `helps`: this (blocking) caller runs the actors itself if no other thread is (Runtime.help)."""
        if existing is not None:
            if existing.workflow != rec.workflow:
                raise RunConflict(rec.run_id, existing.workflow, rec.workflow)
            return None
        fresh = (rt, rt.notifier.evictions)  # before the run can finish: its outcome is in `recent` after
        item = StartRun(rec.run_id, rec.as_tuple(), args)
        if helps:
            rt.post_and_help(item)
        else:
            rt.post(item)
        return fresh

    def start(self, wf: Callable[..., Any] | str, *args: Any, run_id: str | None = None) -> RunHandle:
        """Start a run; returns once the start is durable (same run id + workflow: the existing run)."""
        rt = self._runtime()
        name = self._name_of(wf)
        batch = rt.journal.batch()
        _, rec, copy = self._start_batch(rt, name, args, run_id, batch)
        tel = _telemetry.current
        if tel is not None:
            tel.start_run(batch, rec.run_id, name)
        existing = rt.journal.commit(batch)[0]
        if tel is not None and existing is not None:
            tel.start_failed(rec.run_id)
        return RunHandle(self, rec.run_id, self._after_start(rt, rec, copy, existing, helps=rt.quiet()))

    async def astart(self, wf: Callable[..., Any] | str, *args: Any, run_id: str | None = None) -> RunHandle:
        """Async start; all astarts of one event-loop iteration share one durable commit."""
        rt = self._runtime()
        name = self._name_of(wf)

        def add(batch: WriteBatch) -> tuple[int, RunRecord, tuple[Any, ...]]:
            got = self._start_batch(rt, name, args, run_id, batch)
            tel = _telemetry.current
            if tel is not None:
                tel.start_run(batch, got[1].run_id, name)
            return got

        handle: RunHandle = await self._bridge().start(rt, add, self._astarted)
        return handle

    def _astarted(self, rec: RunRecord, args: tuple[Any, ...], existing: RunRecord | None) -> RunHandle:
        rt = self._runtime()
        if existing is not None and _telemetry.current is not None:
            _telemetry.current.start_failed(rec.run_id)
        return RunHandle(self, rec.run_id, self._after_start(rt, rec, args, existing))

    def _bridge(self) -> LoopBridge:
        loop = asyncio.get_running_loop()
        with self._lock:
            bridge = self._bridges.get(loop)
            if bridge is None:
                bridge = self._bridges[loop] = LoopBridge(loop)
            return bridge

    def start_many(
        self,
        wf: Callable[..., Any] | str,
        args_list: Iterable[Sequence[Any]],
        run_ids: Sequence[str] | None = None,
    ) -> RunHandles:
        """Start many runs; returns once every start is durable, a read-only list of their handles.

        Up to `START_MANY_COMMIT` runs commit atomically in one transaction (one fsync); a larger
        call commits in consecutive groups of that size, after every argument and run id was
        checked (bad input raises before anything is written). A crash in the middle of a larger
        call leaves the groups committed so far started: call again with the same `run_ids` to
        get them (a run id that exists with the same workflow is that run)."""
        rt = self._runtime()
        name = self._name_of(wf)
        args_seq = [tuple(a) for a in args_list]
        n = len(args_seq)
        if run_ids is not None and len(run_ids) != n:
            raise ConfigError(f"start_many: {n} argument tuples but {len(run_ids)} run ids")
        step = START_MANY_COMMIT
        if n > step:
            self._check_many(rt, name, args_seq, run_ids)
        handles = RunHandles(self)
        conflicts: list[RunConflict] = []
        pace = self._pace(rt) if n > step else None
        for lo in range(0, n, step):
            if pace is not None and lo and not pace():
                pace = None  # the hosts take none: go on without waiting
            ids = run_ids[lo : lo + step] if run_ids is not None else None
            self._start_group(rt, name, args_seq[lo : lo + step], ids, conflicts, handles)
        if conflicts:
            raise conflicts[0]
        return handles

    def _pace(self, rt: Facade) -> Callable[[], bool] | None:
        """For a start_many of several groups: a wait until the runs posted so far are mostly in
        memory (_residency.StartGate), so a burst reaches the hosts as waves would; None if there
        is no cap, or the hosts run in other processes."""
        gate = getattr(rt, "start_gate", None)
        local = getattr(rt, "local_hosts", None)
        cap = self.max_resident
        if gate is None or local is None or cap is None or self.passivate_after is None:
            return None

        def waiting() -> int:
            return sum(len(actor.logic.admission) for actor in list(local.values()))

        return lambda: bool(gate.wait_room(cap, waiting))

    def _check_many(
        self, rt: Facade, name: str, args_seq: list[tuple[Any, ...]], run_ids: Sequence[str] | None
    ) -> None:
        """What `_start_batch` refuses, for every run of a start_many that commits in groups, before
        the first group is written (one argument tuple passed many times is checked once)."""
        if run_ids is not None:
            for rid in run_ids:
                check_run_id(rid)
        scratch = rt.journal.batch()
        seen: Any = None
        for args in args_seq:
            if args is not seen:
                self._start_batch(rt, name, args, "check", scratch)
                scratch.truncate(0)
                seen = args

    def _start_group(
        self,
        rt: Facade,
        name: str,
        args_seq: list[tuple[Any, ...]],
        run_ids: Sequence[str] | None,
        conflicts: list[RunConflict],
        handles: RunHandles,
    ) -> None:
        """One commit of start_many; its runs go to their hosts as one message per shard."""
        batch = rt.journal.batch()
        now = rt.clock.now()
        recs = [self._start_batch(rt, name, a, run_ids[i] if run_ids else None, batch, now) for i, a in enumerate(args_seq)]
        tel = _telemetry.current
        if tel is not None:  # after every create: results[i] stays the i-th run's
            for _, rec, _ in recs:
                tel.start_run(batch, rec.run_id, name)
        results = rt.journal.commit(batch)
        del batch
        fresh = (rt, rt.notifier.evictions)  # before the runs can finish: their outcomes are in `recent` after
        per_shard: dict[int, tuple[list[str], list[tuple[Any, ...]]]] = {}
        group: list[str] = []
        existed: set[int] = set()
        for (_, rec, copy), existing in zip(recs, results):
            rid = rec.run_id
            if existing is not None:
                if tel is not None:
                    tel.start_failed(rid)
                if existing.workflow != name:
                    conflicts.append(RunConflict(rid, existing.workflow, name))
                    continue
                existed.add(len(group))
                group.append(rid)
                continue
            ids, args = per_shard.setdefault(rt.shard_of(rid), ([], []))
            ids.append(rid)
            args.append(copy)
            group.append(rid)
        handles._add(group, fresh, frozenset(existed))
        gate = getattr(rt, "start_gate", None)
        for ids, args in per_shard.values():
            if gate is not None:
                gate.add(len(ids))
            rt.post(StartRuns(ids[0], tuple(ids), name, now, tuple(args)))

    def run(self, wf: Callable[..., Any] | str, *args: Any, run_id: str | None = None, timeout: float | None = None) -> Any:
        """Start a run and wait for its result."""
        return self.start(wf, *args, run_id=run_id).result(timeout)

    async def arun(self, wf: Callable[..., Any] | str, *args: Any, run_id: str | None = None, timeout: float | None = None) -> Any:
        handle = await self.astart(wf, *args, run_id=run_id)
        return await handle.aresult(timeout)

    # --- interacting with runs -----------------------------------------------------------------
    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Queue a signal for the run; durable when this returns, delivered in order per name."""
        self._signal(run_id, name, payload)

    def _signal(self, run_id: str, name: str, payload: Any, also: Callable[[WriteBatch], None] | None = None) -> None:
        """`signal`, with `also` adding writes that must commit with it (the control inbox's)."""
        check_run_id(run_id)
        rt = self._runtime()
        batch = rt.journal.batch()
        batch.put_signal(run_id, str(name), payload)
        if also is not None:
            also(batch)
        copy = rt.codec.readback(batch.ops[0][3], f"payload of signal {name!r}", payload)  # before durable
        res = rt.journal.commit(batch)[0]
        if res == SignalResult.NOT_FOUND:
            raise RunNotFound(run_id)
        if isinstance(res, str):
            raise RunFinished(run_id, res)
        rt.post(SignalArrived(run_id, str(name), res, copy))

    def cancel(self, run_id: str, timeout: float | None = 30.0) -> bool:
        """Cancel a run: its pending operation raises Cancelled, compensations run. False if it had ended."""
        rt = self._runtime()
        rec = self._record(run_id)
        if rec.finished:
            return False
        request, fut = rt.notifier.request()
        rt.post(CancelRun(run_id, request))
        try:
            return bool(fut.result(timeout))
        finally:
            rt.notifier.forget(request)

    def _record(self, run_id: str) -> RunRecord:
        check_run_id(run_id)
        journal = self._rt.journal if self._rt is not None else self.journal
        if journal is None:
            raise ConfigError("the engine is not open")
        rec = journal.get_run(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        return rec

    def status(self, run_id: str) -> RunStatus:
        return RunStatus.from_record(self._record(run_id))

    def runs(self, state: RunState | str | None = None, workflow: str | None = None) -> list[RunStatus]:
        journal = self._runtime().journal
        st = None if state is None else RunState(state).value
        return [RunStatus.from_record(r) for r in journal.runs(st, workflow)]

    def history(self, run_id: str) -> list[Event]:
        """The run's journal, decoded; a record that cannot be decoded shows as an `undecodable`
        event with the error, so a damaged run's history is still readable up to and past it."""
        self._record(run_id)
        return self._runtime().journal.events(run_id, strict=False)

    # --- results -------------------------------------------------------------------------------
    def _final(self, run_id: str, rec: RunRecord) -> tuple[str, Any, Any]:
        try:
            ev = self._runtime().final_event(run_id)
        except JournalCorrupt as exc:  # the outcome's record is damaged: the run record still says how it ended
            return (rec.state, None, {"error": f"{rec.error} (final event unreadable: {exc})"})
        if ev is None:
            return (rec.state, None, {"error": rec.error})
        if ev.kind == "run_completed":
            return ("completed", ev.data, None)
        return ("cancelled" if ev.kind == "run_cancelled" else "failed", None, ev.data)

    def _outcome(self, run_id: str, outcome: tuple[str, Any, Any]) -> Any:
        state, value, data = outcome
        if state == "completed":
            return value
        data = data or {}
        if state == "cancelled":
            comp = data.get("compensation_errors")
            raise Cancelled(run_id, f"cancelled (compensation failed: {'; '.join(comp)})" if comp else "cancelled")
        raise WorkflowFailed(run_id, failure_text(data), data.get("exc"))

    def _settled(self, rt: Facade, run_id: str) -> tuple[str, Any, Any] | None:
        """The outcome if the run has finished (from memory, else the journal); RunNotFound if unknown."""
        recent = rt.notifier.recent.get(run_id)
        if recent is not None:
            return recent
        rec = self._record(run_id)
        return self._final(run_id, rec) if rec.finished else None

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's return value; raises WorkflowFailed, Cancelled or TimeoutError."""
        return self._result(run_id, timeout, None)

    def _result(self, run_id: str, timeout: float | None, fresh: tuple[Facade, int] | None) -> Any:
        check_run_id(run_id)
        rt = self._runtime()
        outcome = rt.notifier.recent.get(run_id)
        if outcome is None:
            box: list[tuple[str, Any, Any]] = []
            done = threading.Event()

            def cb(o: tuple[str, Any, Any]) -> None:
                box.append(o)
                done.set()

            outcome, known_live = rt.notifier.wait(run_id, cb, fresh)
            try:
                if outcome is None and not known_live:
                    # one journal read, after the waiter is in place: no finish can fall in between
                    outcome = self._settled(rt, run_id)
                if outcome is None:
                    if not done.wait(timeout):
                        raise TimeoutError(f"run {run_id!r} did not finish within {timeout}s")
                    outcome = box[0]
            finally:
                rt.notifier.remove_waiter(run_id, cb)
        return self._outcome(run_id, outcome)

    async def aresult(self, run_id: str, timeout: float | None = None) -> Any:
        """`result()` for asyncio callers."""
        return await self._aresult(run_id, timeout, None)

    async def _aresult(self, run_id: str, timeout: float | None, fresh: tuple[Facade, int] | None) -> Any:
        check_run_id(run_id)
        rt = self._runtime()
        outcome = rt.notifier.recent.get(run_id)
        if outcome is None:
            bridge = self._bridge()
            fut: asyncio.Future[tuple[str, Any, Any]] = bridge.loop.create_future()
            cb = bridge.waiter(fut)
            outcome, known_live = rt.notifier.wait(run_id, cb, fresh)
            try:
                if outcome is None and not known_live:
                    outcome = self._settled(rt, run_id)
                if outcome is None:
                    # a timer on the future rather than asyncio.wait_for, which wraps it in a task of its own
                    expiry = None if timeout is None else bridge.loop.call_later(timeout, _expire, fut, run_id, timeout)
                    try:
                        outcome = await fut
                    finally:
                        if expiry is not None:
                            expiry.cancel()
            finally:
                rt.notifier.remove_waiter(run_id, cb)
        return self._outcome(run_id, outcome)

    # --- memory ----------------------------------------------------------------------------------
    def residency(self) -> Residency:
        """How many runs are in memory now, at most so far, and waiting for room (`max_resident`)."""
        rt = self._runtime()
        local = getattr(rt, "local_hosts", None)
        if local is None:
            raise ConfigError("residency() reads this process's run hosts; with system='multiproc' they run in the shard processes")
        return residency_of((actor.logic for actor in list(local.values())), self.max_resident)

    # --- dashboard -----------------------------------------------------------------------------
    def dashboard(self, port: int = 8765, *, bind: str = "127.0.0.1", read_only: bool = False) -> Any:
        """Serve the web dashboard of this open engine on a background thread (the `dashboard` extra);
        actions go straight to this engine. Returns the server (`.url`, `.close()`); close() stops it."""
        try:
            from .dashboard import serve_engine
        except ImportError as exc:
            raise ConfigError(f"the dashboard needs the 'dashboard' extra: pip install 'actorflow[dashboard]' ({exc})") from None
        board = serve_engine(self, port=port, bind=bind, read_only=read_only)
        self._dashboards.append(board)
        return board

    # --- monitoring ----------------------------------------------------------------------------
    def monitor(self, run_id: str, timeout: float | None = None) -> Iterator[RunStatus]:
        """The current status, then each change of state or progress, until the run stops.

        Raises RunNotFound when called (not on first iteration) for an unknown run id."""
        rt = self._runtime()
        self._record(run_id)
        return follow(rt.notifier, lambda: self.status(run_id), run_id, timeout)

    def amonitor(self, run_id: str) -> AsyncIterator[RunStatus]:
        """Async `monitor`; raises RunNotFound when called for an unknown run id."""
        rt = self._runtime()
        self._record(run_id)
        return afollow(rt.notifier, lambda: self.status(run_id), run_id)

    # --- replay check (see actorflow._check) -------------------------------------------------
    def check(self, run_ids: Iterable[str] | None = None) -> CheckReport:
        """Replay every unfinished run (or `run_ids`) against the workflows registered now, running
        no step and writing nothing; the report lists each run that would block, with its evidence.

        Works on an open engine and on a closed one (it then reads the data directory, also beside
        the engine of another process that holds it)."""
        workflows = self._workflows

        def name_of(wf: Any) -> str:
            name = wf if isinstance(wf, str) else self._names.get(wf, getattr(wf, "__qualname__", repr(wf)))
            if name not in workflows:
                raise WorkflowNotRegistered(str(name), list(workflows))
            return str(name)

        rt = self._rt
        if rt is not None:
            return check_runs(rt.journal, workflows, Env(self.clock.now, rt.codec, name_of), run_ids)
        if self._journal_given is not None:
            journal = self._journal_given
            return check_runs(journal, workflows, Env(self.clock.now, journal.codec, name_of), run_ids)
        if self.data_dir is None:
            raise ConfigError("Engine.check needs a data_dir or a journal")
        with LmdbJournal(self.data_dir, sync=False, codec=self._codec) as journal:
            return check_runs(journal, workflows, Env(self.clock.now, journal.codec, name_of), run_ids)

    # --- fork (issue 15; see actorflow._fork for exactly what is copied) ------------------------
    def fork(self, source: str, /, from_step: int, run_id: str | None = None) -> RunHandle:
        """A new run whose journal is `source`'s up to its first `from_step` steps, then run on the
        code registered now: the copied steps replay from the journal (none runs again), the rest
        runs. `source` is only read. RunNotFound, ConfigError (N out of range), RunIdTaken (`run_id`
        exists), WorkflowNotRegistered - all before anything is written."""
        from ._fork import add_fork, check_created, plan_fork

        rt = self._runtime()
        plan = plan_fork(rt.journal, source, from_step, run_id, now=rt.clock.now())
        self._name_of(plan.workflow)  # runs on this engine's code: it must know the workflow
        batch = rt.journal.batch()
        idx = add_fork(batch, plan)
        tel = _telemetry.current
        if tel is not None:
            tel.start_run(batch, plan.run_id, plan.workflow, **{"actorflow.forked_from": source, "actorflow.from_step": from_step})
        check_created(plan, rt.journal.commit(batch)[idx])
        fresh = (rt, rt.notifier.evictions)
        rt.post(LoadRun(plan.run_id))  # the recovery path: replays the copied prefix, runs the rest
        return RunHandle(self, plan.run_id, fresh)
