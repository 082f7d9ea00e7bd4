"""Starting runs: the Engine's start methods (a mixin of `Engine`).

Every way in (`start`, `astart`, `start_many`, `fork`) adds the run's creation to a journal batch,
reads its arguments back before anything is written (a payload that pickles but cannot load is
refused here), commits, then posts the run to its host. Kept apart from `_engine.py`, which opens
and closes the runtime these methods write through."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from storage import Event, RunRecord, WriteBatch
from storage._journal import check_run_id

from ._aio import LoopBridge
from ._handle import RunHandle, RunHandles, new_run_id
from ._messages import LoadRun, StartRun, StartRuns
from ._runtime import Facade
from .errors import ConfigError, PayloadError, RunConflict
from .telemetry import _hooks as _telemetry

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["START_MANY_COMMIT", "StartMethods"]

# runs per commit of start_many: a million in one LMDB transaction would hold ~1.2 KB per run at
# once (the batch, then the dirty pages, which LMDB keeps for reuse after the commit)
START_MANY_COMMIT = 10_000


class StartMethods:
    """`start`, `astart`, `start_many`, `run`, `arun` and `fork` of `Engine`."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge]
        max_resident: int | None
        passivate_after: float | None

        def _runtime(self) -> Facade: ...
        def _name_of(self, wf: Callable[..., Any] | str) -> str: ...

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
        return RunHandle(cast("Engine", self), rec.run_id, self._after_start(rt, rec, copy, existing, helps=rt.quiet()))

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
        return RunHandle(cast("Engine", self), rec.run_id, self._after_start(rt, rec, args, existing))

    def _bridge(self) -> LoopBridge:
        loop = asyncio.get_running_loop()
        bridge = self._bridges.get(loop)  # every astart and aresult asks: no lock once it exists
        if bridge is None:
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
        handles = RunHandles(cast("Engine", self))
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
        return RunHandle(cast("Engine", self), plan.run_id, fresh)
