"""The Engine facade: a thread-safe, sync and asyncio API over the journal and the actor runtime."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from storage import Codec, Journal, LmdbJournal

from ._aio import LoopBridge
from ._check import CheckReport, check_runs
from ._clock import Clock, SystemClock
from ._control import ControlInbox
from ._core import Env
from ._handle import RunHandle
from ._lockfile import DirLock
from ._malloc import pin_mmap_threshold
from ._monitor import afollow, follow
from ._multiproc import MultiprocRuntime
from ._multiproc._node_shards import check_shard_nodes, record_shard_map
from ._multiproc._options import check_join, check_node_options, require_admin
from ._multiproc._placement import PlacementWait
from ._multiproc._routed import RoutedJournal
from ._options import check_engine_options
from ._residency import Residency, residency_of
from ._results import RunMethods
from ._runtime import Facade, Runtime
from ._starts import START_MANY_COMMIT, StartMethods
from ._thespian import ActorRuntime
from ._types import RunStatus
from .errors import (
    ActorflowError,
    ConfigError,
    WorkflowNotRegistered,
)
from .tasks import TaskMethods
from .telemetry import _hooks as _telemetry

__all__ = ["START_MANY_COMMIT", "Engine", "RunHandle"]

F = TypeVar("F", bound=Callable[..., Any])
_GC_DEFAULT = (700, 10, 10)
_gc_lock = threading.Lock()
_gc_tuned: list[Any] = [None, 0]  # [(saved, applied) thresholds, number of open engines relying on them]


class Engine(StartMethods, RunMethods, TaskMethods):  # methods: _starts.py, _results.py, tasks/_api.py
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
