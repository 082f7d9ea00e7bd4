"""Bringing runs into a host's memory: loading a passivated or recovered run from the journal,
reading ahead the runs a batch of messages wakes, admitting runs that waited for room, and the
recovery scan after a (re)start. A mixin of `RunHost` (`_host.py`), which routes the messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from ._core import Completion, Env, RunMachine
from ._messages import CancelRun, ChildCreated, ChildDone, LoadRun, SignalArrived, TimerFired

if TYPE_CHECKING:
    from storage import WriteBatch

    from ._runtime import Runtime

__all__ = ["RunLoading"]

log = structlog.get_logger("actorflow.host")

_CHUNK = 256  # messages whose passivated runs are read ahead together (a bounded set of fresh objects)
# message kinds that reflect a durable outside event and therefore wake (load) a passivated run
_WAKING: frozenset[type] = frozenset({SignalArrived, ChildDone, CancelRun, LoadRun, ChildCreated})
_WAKING_TAGS = frozenset({"sleep", "wait", "reload"})  # timers that wake a passivated run


class RunLoading:
    """The loading half of RunHost (which sets up the attributes below)."""

    if TYPE_CHECKING:
        rt: Runtime
        shard: int
        env: Env
        runs: dict[str, RunMachine]
        blocked: dict[str, int]
        finishing: dict[str, tuple[str, Any]]
        prefetched: dict[str, Any]
        held: dict[str, list[Any] | None]
        admitting: bool
        batch: WriteBatch
        outputs: list[Any]
        outbox: list[tuple[Any, Any]]
        rederivable: int

        def _guarded(self, item: Any) -> None: ...
        def _apply(self, run: RunMachine, out: Completion) -> None: ...
        def _isolate(self, msg: Any, exc: BaseException, marks: tuple[int, int, int, int]) -> None: ...
        def entered(self) -> None: ...
        def full(self) -> bool: ...
        def hold(self, run_id: str, msg: Any) -> None: ...

    def bring_in(self, run_ids: list[str]) -> None:
        """Admit runs that waited for room: load each (a start too: its start is in the journal),
        then hand it the messages held for it, in order."""
        items: list[Any] = []
        for run_id in run_ids:
            items.append(LoadRun(run_id))
            items += self.held.pop(run_id, None) or ()
        self.admitting = True
        try:
            for lo in range(0, len(items), _CHUNK):
                chunk = items[lo : lo + _CHUNK]
                self.prefetched = self._prefetch(chunk)
                for item in chunk:
                    self._guarded(item)
        finally:
            self.admitting = False
            self.prefetched = {}

    def _prefetch(self, items: list[Any]) -> dict[str, Any]:
        """Read every passivated run these messages wake in one journal transaction."""
        if len(items) < 2:
            return {}
        runs, blocked, finishing = self.runs, self.blocked, self.finishing
        wake = [
            msg.run_id
            for msg in items
            if (type(msg) in _WAKING or (type(msg) is TimerFired and msg.tag in _WAKING_TAGS))
            and msg.run_id not in runs
            and msg.run_id not in blocked
            and msg.run_id not in finishing
        ]
        if len(wake) < 2:
            return {}
        try:
            return self.rt.journal.load_runs(list(dict.fromkeys(wake)))
        except Exception:  # noqa: BLE001 - a damaged run among them: each is loaded (and isolated) alone
            return {}

    def _load(self, run_id: str, force: bool = False) -> RunMachine | None:
        if run_id in self.runs:
            return self.runs[run_id]
        if run_id in self.blocked and not force:
            return None
        got = self.prefetched.pop(run_id, None)
        rec, events, signals = got if got is not None else self.rt.journal.load_run(run_id)
        if rec is None or rec.finished:
            return None
        fn = self.rt.workflows.get(rec.workflow)
        if fn is None:
            log.warning("run of unregistered workflow left as is", run_id=run_id, workflow=rec.workflow)
            return None
        self.blocked.pop(run_id, None)
        run = RunMachine(rec, fn, tuple(events[0].data["args"]), events, self.env, signals)
        run.last_active = self.rt.clock.now()
        self.runs[run_id] = run
        self.entered()
        self._apply(run, run.activate(LoadRun(run_id)))
        return self.runs.get(run_id)

    def _recover(self) -> None:
        """Load this shard's runs that were doing something; sleepers and waiters wake on demand.

        A waiter with signals in its inbox is loaded too: the message that would have woken it was
        lost with the crash (or the failed host), but the signal itself is durable and must arrive.
        So is one waiting on a child run: a child that finished just before the crash had its
        outcome message (sent once its end was durable) lost with it, and ended runs are not
        recovered - loaded, the parent watches its children again and hears of the ended ones.
        """
        journal = self.rt.journal
        for run_id in journal.active_run_ids():
            if self.rt.shard_of(run_id) != self.shard or run_id in self.runs:
                continue
            marks = (len(self.batch.ops), len(self.outputs), len(self.outbox), self.rederivable)
            try:
                rec = journal.get_run(run_id)
                if rec is None:
                    continue
                if rec.state in ("pending", "running", "blocked") or (
                    rec.state in ("waiting", "sleeping") and (journal.signals(run_id) or _waits_on_child(journal, run_id))
                ):
                    if run_id in self.held or self.full():
                        self.hold(run_id, None)  # a burst in flight at the crash comes back in cohorts
                    else:
                        self._load(run_id, force=True)
            except Exception as exc:  # noqa: BLE001 - this run's journal or code: the others recover
                self._isolate(LoadRun(run_id), exc, marks)


def _waits_on_child(journal: Any, run_id: str) -> bool:
    """Whether the run's journal has a child started at a position with no outcome yet."""
    open_children: set[int] = set()
    for ev in journal.events(run_id):
        if ev.kind == "child_started":
            open_children.add(ev.pos)
        elif ev.kind in ("child_completed", "child_failed"):
            open_children.discard(ev.pos)
    return bool(open_children)
