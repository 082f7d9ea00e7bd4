"""RunHost: the run machines of one shard in one actor: routes messages to them, loads and passivates
them, and carries out their completions (writes into one journal batch, effects once it is durable)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import structlog

from storage import Event, RunRecord

from ._core import (
    ABANDON,
    APPEND,
    ARM,
    BLOCKED,
    CREATE_CHILD,
    CREATE_ELSEWHERE,
    DEL_SIGNAL,
    DEL_TIMER,
    DISARM,
    DISPATCH,
    FINISHED,
    PUT_TIMER,
    REPLY,
    SEND,
    Completion,
    Env,
    RunMachine,
)
from ._elsewhere import ChildrenElsewhere
from ._host_load import _CHUNK, _WAKING, _WAKING_TAGS, RunLoading
from ._messages import (
    ADMIT,
    REARM,
    Admit,
    CancelRun,
    ChildCreated,
    ChildDone,
    Committed,
    CreateChild,
    Housekeep,
    Rearm,
    Recover,
    RunMessage,
    StartRun,
    StartRuns,
    TimerFired,
    WatchChild,
)
from ._outputs import OUT_REPLY, OUT_SEND, OUT_STEP, OUT_TIMER, OutputCommit
from ._residency import ResidentCap, host_cap
from ._trim import trimmer

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["RunHost"]

log = structlog.get_logger("actorflow.host")



class RunHost(RunLoading, OutputCommit, ResidentCap, ChildrenElsewhere):
    """Routes messages to run machines, loads/passivates them, and commits their facts before acting.

    Each message for a run is one `RunMachine.activate`; the host writes the completion's events
    and index ops into its journal batch and holds the completion's effects (step dispatch,
    timers, messages to other hosts, notifications) as outputs, released only once the batch's
    journal writes are durable (output commit, in `_outputs.OutputCommit`). At most `cap` runs
    are in memory at once; the rest wait for room (`_residency.ResidentCap`).
    """

    def __init__(self, rt: Runtime, shard: int) -> None:
        self.rt = rt
        self.shard = shard
        env = rt.env_shards  # with shards on member nodes: the shards whose runs this journal holds
        self.env = Env(rt.clock.now, rt.codec, rt.workflow_name,
                       None if env is None else (lambda run_id: rt.shard_of(run_id) not in env))
        self.creating = {}  # children asked of their owner elsewhere (_elsewhere)
        self.runs: dict[str, RunMachine] = {}
        self.blocked: dict[str, int] = {}  # run id -> next event seq (its run_blocked may not be committed yet)
        self.finishing: dict[str, tuple[str, Any]] = {}
        self.watchers: dict[str, list[tuple[str, int]]] = {}
        self.batch = rt.journal.batch()
        self.outputs = []
        self.outbox: list[tuple[Any, Any]] = []
        self.dirty: dict[str, RunMachine] = {}
        self.touched: dict[str, RunMachine] = {}
        self.commits_in_flight = 0
        self.housekept = False
        self.rederivable = 0  # ops of this batch that recovery would write again the same (fired sleeps)
        self.prefetched: dict[str, Any] = {}  # run id -> journal.load_run() result, read ahead for this batch
        cap = None if rt.passivate_after is None else rt.max_resident  # nothing leaves memory without passivation
        self._init_residency(host_cap(cap, rt.shards, shard))
        self.admitting = False  # bringing waiting runs in: they have their room

    # --- carrying out what a run's activation asks ------------------------------------------------
    def _apply(self, run: RunMachine, out: Completion) -> None:
        """Write a completion's events and index ops into the batch; hold its effects as outputs."""
        run_id = run.run_id
        if out.dirty:
            self.dirty[run_id] = run
        ops = out.ops
        if not ops:
            return
        batch, outputs = self.batch, self.outputs
        touched = False
        for op in ops:
            code = op[0]
            if code == APPEND:
                batch.append_encoded(run_id, op[1], op[2])
                touched = True
            elif code == DISPATCH:
                outputs.append((OUT_STEP, op[1]))
            elif code == ARM:
                outputs.append((OUT_TIMER, (op[1], op[2])))
            elif code == PUT_TIMER:
                batch.put_timer(op[1], run_id, op[2], op[3])
            elif code == DEL_TIMER:
                batch.del_timer(op[1], run_id, op[2])
            elif code == DISARM:
                outputs.append((OUT_TIMER, (op[1], None)))
            elif code == DEL_SIGNAL:
                batch.del_signal(run_id, op[1], op[2])
            elif code == SEND:
                outputs.append((OUT_SEND, op[1]))
            elif code == REPLY:
                outputs.append((OUT_REPLY, (op[1], op[2])))
            elif code == CREATE_CHILD:
                self._create_child(run, *op[1:])
            elif code == CREATE_ELSEWHERE:
                self.ask_create(op[1])
            elif code == FINISHED:
                self._finished(run, op[1], op[2], op[3])
            elif code == ABANDON:
                outputs.append((None, functools.partial(self.rt.steps.abandon, *op[1])))
            elif code == BLOCKED:
                self.runs.pop(run_id, None)
                self.changed()
                self.blocked[run_id] = run.next_seq
                log.warning("run blocked", run_id=run_id, error=run.record.error)
        ops.clear()  # consumed: an ARM op holds its Command, whose run is this machine (a cycle left for the GC)
        if touched:
            self.touched[run_id] = run
        self.rederivable += out.rederivable

    def reply(self, request_id: int, value: Any) -> None:
        """Answer a waiting caller once this batch is durable."""
        self.outputs.append((OUT_REPLY, (request_id, value)))

    def send_run(self, msg: RunMessage) -> None:
        self.outputs.append((OUT_SEND, msg))

    def _create_child(
        self, run: RunMachine, child_id: str, name: str, args: tuple[Any, ...], args_copy: tuple[Any, ...], pos: int
    ) -> None:
        now = self.rt.clock.now()
        parent_id = run.run_id
        rec = RunRecord(child_id, name, "pending", now, now, parent=parent_id, meta={"parent_pos": pos})
        idx = self.batch.create_run(rec, Event(0, "run_started", name, {"args": args}, now))
        rt = self.rt

        def created(existing: RunRecord | None) -> None:
            if existing is None:
                self.outbox.append((rt.shard_of(child_id), StartRun(child_id, rec.as_tuple(), args_copy)))
            elif existing.workflow != name:
                error = f"run id {child_id!r} belongs to workflow {existing.workflow!r}"
                outcome = {"run_id": child_id, "conflict": existing.workflow, "error": error}
                self.outbox.append((rt.shard_of(parent_id), ChildDone(parent_id, pos, "child_failed", outcome)))

        self.outputs.append((idx, created))

    def _finished(self, run: RunMachine, state: str, value: Any, data: Any) -> None:
        run_id = run.run_id
        if state == "completed":
            outcome: tuple[str, Any] = ("child_completed", value)
        else:
            d = dict(data or {})
            d["run_id"] = run_id
            d["cancelled"] = state == "cancelled"
            outcome = ("child_failed", d)
        self.finishing[run_id] = outcome
        self.runs.pop(run_id, None)
        self.changed()
        targets: list[tuple[str, Any]] = list(self.watchers.pop(run_id, ()))
        parent_pos = run.record.meta.get("parent_pos")
        if run.record.parent and (run.record.parent, parent_pos) not in targets:
            targets.append((run.record.parent, parent_pos))
        record = run.record
        rt = self.rt

        def release() -> None:
            self.finishing.pop(run_id, None)
            for parent_id, pos in targets:
                self.outbox.append((rt.shard_of(parent_id), ChildDone(parent_id, pos, outcome[0], outcome[1])))
            rt.notifier.finished(run_id, record, state, value, data)

        self.outputs.append((None, release))

    # --- message handling ---------------------------------------------------------------------
    def handle(self, items: list[Any]) -> list[tuple[Any, Any]]:
        """Process a batch of messages; returns (target, message) pairs for the actor layer to send."""
        try:
            for lo in range(0, len(items), _CHUNK):
                chunk = items[lo : lo + _CHUNK] if len(items) > _CHUNK else items
                if len(chunk) > 1:
                    self.prefetched = self._prefetch(chunk)
                elif self.prefetched:  # what an earlier chunk read ahead and nobody took
                    self.prefetched = {}
                for item in chunk:
                    marks = (len(self.batch.ops), len(self.outputs), len(self.outbox), self.rederivable)
                    try:
                        self._handle(item)
                    except Exception as exc:
                        # one run's data or code: confined to that run. Anything else (a commit, the
                        # host's own rounds) goes to the supervisor, whose restart budget is for our bugs.
                        if not isinstance(item, RunMessage):
                            raise
                        self._isolate(item, exc, marks)
        finally:
            if self.prefetched:
                self.prefetched = {}
        admitted = self.admit() if self.admission else 0
        if admitted:
            self.rt.start_gate.progressed()
        batch = self.batch
        self.flush(force=self.housekept)
        self.housekept = False
        committed = self.batch is not batch
        if committed:
            self.changed()
        if self.admission and not self.commits_in_flight and (admitted or committed):
            # committed here: runs may leave and the next cohort come in (later: other work interleaves)
            self.outbox.append((self.shard, ADMIT))
        out, self.outbox = self.outbox, []
        return out

    def _guarded(self, item: Any) -> None:
        """Handle one message; if it raises, undo what it added and quarantine its run."""
        marks = (len(self.batch.ops), len(self.outputs), len(self.outbox), self.rederivable)
        try:
            self._handle(item)
        except Exception as exc:
            if not isinstance(item, RunMessage):
                raise
            self._isolate(item, exc, marks)

    def _handle(self, msg: Any) -> None:
        t = type(msg)
        if t is Committed:
            self._on_commit(msg.token, msg.future)
            self.changed()
            return
        if t is Admit:
            return  # admission runs after every batch of messages
        if t is StartRuns:
            self._start_many(msg)
            return
        if t is Housekeep:
            self._housekeep()
            self.housekept = True  # and flush every record this round (status() stays fresh)
            return
        if t is Recover:
            self._recover()
            return
        if t is Rearm:
            self._rearm()
            return
        run_id = msg.run_id
        if t is WatchChild:
            self._watch(run_id, msg.parent_id, msg.pos)
            return
        if t is CreateChild:
            self.create_requested(msg)  # a child of a parent journaled elsewhere (_elsewhere)
            return
        if t is ChildCreated:
            self.child_created(msg)  # and on to the parent run
        run = self.runs.get(run_id)
        if run is None:
            if run_id in self.finishing:
                if t is CancelRun and msg.reply is not None:
                    self.reply(msg.reply, False)
                return
            if t is StartRun:
                if run_id in self.held or (not self.admitting and self.full()):
                    self.hold(run_id, None)  # loaded from the journal when there is room
                else:
                    self._start(msg)
                return
            if t is CancelRun and run_id in self.blocked:
                self._cancel_blocked(run_id, msg.reply)
                return
            if t in _WAKING or (t is TimerFired and msg.tag in _WAKING_TAGS):
                if not self.admitting and (run_id in self.held or self.full()):
                    self.hold(run_id, msg)
                    return
                run = self._load(run_id)
            if run is None:
                if t is CancelRun and msg.reply is not None:
                    # not loadable here (workflow not registered): cancelled without running code
                    self._cancel_blocked(run_id, msg.reply)
                return
        run.last_active = self.rt.clock.now()
        self._apply(run, run.activate(msg))

    def _start(self, msg: StartRun) -> None:
        run_id, args = msg.run_id, msg.args
        if run_id in self.blocked:
            return
        rec = RunRecord.from_tuple(msg.record)
        fn = self.rt.workflows.get(rec.workflow)
        if fn is None:
            return
        started = Event(0, "run_started", rec.workflow, {"args": args}, rec.created_at)
        run = RunMachine(rec, fn, args, [started], self.env)
        run.last_active = self.rt.clock.now()
        self.runs[run_id] = run
        self.entered()
        self._apply(run, run.activate(msg))

    def _start_many(self, msg: StartRuns) -> None:
        """The runs of one start_many commit: each starts now, or waits for room (as its id only)."""
        runs, held, blocked = self.runs, self.held, self.blocked
        self.rt.start_gate.taken(len(msg.run_ids))
        for run_id, args in zip(msg.run_ids, msg.args):
            if run_id in runs or run_id in blocked or run_id in self.finishing:
                continue
            if run_id in held or self.full():
                self.hold(run_id, None)
                continue
            item = StartRun(run_id, (run_id, msg.workflow, "pending", msg.created_at, msg.created_at), args)
            self._guarded(item)

    def _cancel_blocked(self, run_id: str, reply: Any) -> None:
        rec = self.rt.journal.get_run(run_id)
        if rec is None or rec.finished:
            if reply is not None:
                self.reply(reply, False)
            return
        next_seq = self.blocked.pop(run_id, 0)
        self.dirty.pop(run_id, None)  # the blocked record waiting for this batch's flush must not win
        now = self.rt.clock.now()
        seq = max(self.rt.journal.last_seq(run_id) + 1, next_seq)
        self.batch.append(run_id, Event(seq, "run_cancelled", "", {"error": "Cancelled: cancelled while blocked"}, now))
        rec.state, rec.updated_at = "cancelled", now
        self.batch.put_run(rec)

        targets: list[tuple[str, Any]] = list(self.watchers.pop(run_id, ()))
        if rec.parent and (rec.parent, rec.meta.get("parent_pos")) not in targets:
            targets.append((rec.parent, rec.meta.get("parent_pos")))
        outcome = {"run_id": run_id, "cancelled": True, "error": "Cancelled: cancelled while blocked"}

        def done() -> None:
            for parent_id, pos in targets:
                self.outbox.append((self.rt.shard_of(parent_id), ChildDone(parent_id, pos, "child_failed", outcome)))
            self.rt.notifier.finished(run_id, rec, "cancelled", None, {"error": "cancelled while blocked"})

        self.outputs.append((None, done))
        if reply is not None:
            self.reply(reply, True)

    def _watch(self, child_id: str, parent_id: str, pos: int) -> None:
        outcome = self.finishing.get(child_id)
        if outcome is None and child_id not in self.runs:
            rec = self.rt.journal.get_run(child_id)
            if rec is not None and rec.finished:
                outcome = self.rt.final_outcome(child_id, rec)
        if outcome is not None:
            kind, data = outcome
            self.send_run(ChildDone(parent_id, pos, kind, data))
            return
        targets = self.watchers.setdefault(child_id, [])
        if (parent_id, pos) not in targets:
            targets.append((parent_id, pos))

    def _rearm(self) -> None:
        """The timer actor restarted: arm again what only lived in its memory."""
        for run in list(self.runs.values()):
            self._apply(run, run.activate(REARM))

    def _housekeep(self) -> None:
        self.changed()
        self.resend_creates()
        limit = self.rt.passivate_after
        if limit is None:
            return
        now = self.rt.clock.now()
        gone: list[str] = []
        for run_id, run in list(self.runs.items()):
            if now - run.last_active >= limit and not run.pending_commits and run.idle():
                del self.runs[run_id]
                run.detach()
                gone.append(run_id)
        if gone:  # the journal's cache entries of passivated runs would outlive a burst (Journal.forget)
            self.rt.journal.forget(gone)
        trimmer.passivated(len(gone))  # a passivation wave: give its freed memory back (_trim)
