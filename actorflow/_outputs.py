"""A host's journal batch and its outputs: output commit, and undoing one run's share (quarantine).

Everything the runs of a host decide while it handles a batch of messages is written into one journal
batch, and every effect (step dispatch, timers, messages to other hosts, replies, notifications) is
held as an output, released only once that batch is durable. A run whose handling raised has its
writes and outputs cut from the batch and is held `blocked` with the evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from storage import Event, WriteBatch
from storage._journal import OP_APPEND, OP_PUT_RUN

from ._core import RunMachine, describe_error
from ._messages import ArmTimer, Committed, RunMessage
from ._types import RunStatus
from .errors import ActorflowError, StorageError

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["OutputCommit", "Output", "OUT_STEP", "OUT_REPLY", "OUT_TIMER", "OUT_SEND"]

log = structlog.get_logger("actorflow.host")

# (None, fn()) | (op index, fn(result)) | (OUT_STEP, step to submit) | (OUT_REPLY, (request id, value))
# | (OUT_TIMER, (timer message, guard)) | (OUT_SEND, run message)
Output = tuple[int | None, Any]
OUT_STEP = -1
OUT_REPLY = -2  # a caller waiting for this batch; failed if the commit fails
OUT_TIMER = -3  # armed/disarmed unless its guard (a command) resolved meanwhile
OUT_SEND = -4  # to the host of the message's run


class OutputCommit:
    """The batch half of RunHost (which sets these attributes up)."""

    rt: Runtime
    shard: int
    runs: dict[str, RunMachine]
    blocked: dict[str, int]
    finishing: dict[str, tuple[str, Any]]
    batch: WriteBatch
    outputs: list[Output]
    outbox: list[tuple[Any, Any]]
    dirty: dict[str, RunMachine]
    touched: dict[str, RunMachine]
    commits_in_flight: int
    rederivable: int

    # --- commit --------------------------------------------------------------------------------
    def flush(self, force: bool = False) -> None:
        """Submit this batch's journal writes; what they caused is released once durable.

        Status-only changes of runs with a step in flight wait for that step's commit (saving an
        fsync), at most until the next housekeeping round (`force`), so status() stays fresh.
        """
        if self.dirty:
            now = self.rt.clock.now()
            notify = self.rt.notifier
            for run in self.dirty.values():
                run.record.updated_at = now
                self.batch.put_run(run.record)
                if notify.watching(run.run_id) and run.phase != "finished":
                    status = RunStatus.from_record(run.record)
                    self.outputs.append((None, lambda s=status: notify.status_changed(s)))
                self.touched[run.run_id] = run
            self.dirty = {}
        if not self.batch.ops:
            outputs, self.outputs = self.outputs, []
            self._release(outputs, None)
            return
        if self._only_rederivable():
            # only status records and fired sleep timers: recovery derives the same again (the
            # timer index entry goes only with the fact, so an overdue timer fires anew), so
            # nothing released here needs this write to be durable first
            outputs, self.outputs = self.outputs, []
            self._release(outputs, None)
            if not force and any(run.steps_inflight for run in self.touched.values()):
                return  # a step result is coming: its commit carries these writes along
        batch, outputs, touched = self.batch, self.outputs, list(self.touched.values())
        self.batch, self.outputs, self.touched = self.rt.journal.batch(), [], {}
        self.rederivable = 0
        if not self.commits_in_flight and not self.rt.commits_pending and not self.rt.queue:
            # nothing else to do meanwhile: commit on this thread and act at once (saves two
            # thread hand-offs per step for a lone sequential workflow)
            try:
                results = self.rt.journal.commit(batch)
            except Exception as exc:  # noqa: BLE001 - handled like a failed asynchronous commit
                self._commit_failed(exc, touched, outputs)
                return
            self._release(outputs, results)
            return
        for run in touched:
            run.pending_commits += 1
        self.commits_in_flight += 1
        self.rt.commit_started()
        token = (self, outputs, touched)
        fut = self.rt.journal.submit(batch)
        shard, post = self.shard, self.rt.post
        fut.add_done_callback(lambda f: post(Committed(shard, token, f)))

    def _only_rederivable(self) -> bool:
        """Whether the batch holds nothing but status records and `rederivable` ops (stops early)."""
        budget = self.rederivable
        for op in self.batch.ops:
            if op[0] != OP_PUT_RUN:
                budget -= 1
                if budget < 0:
                    return False
        return True

    def _on_commit(self, token: tuple[OutputCommit, list[Output], list[RunMachine]], fut: Any) -> None:
        host, outputs, touched = token
        self.rt.commit_finished()
        if host is not self:
            return  # written by a host that failed and was replaced: its runs are recovered by replay
        self.commits_in_flight -= 1
        for run in touched:
            run.pending_commits -= 1
        exc = fut.exception()
        if exc is not None:
            self._commit_failed(exc, touched, outputs)
        else:
            self._release(outputs, fut.result())
        outputs.clear()  # the message carrying this token may outlive it: let passivated runs go
        touched.clear()

    def _release(self, outputs: list[Output], results: list[Any] | None) -> None:
        steps: list[tuple[Any, ...]] = []
        for idx, fn in outputs:
            if idx is None:
                fn()
            elif idx == OUT_STEP:
                steps.append(fn)
            elif idx == OUT_TIMER:
                msg, guard = fn
                if guard is None or not guard.done:
                    self.outbox.append(("timer", msg))
            elif idx == OUT_SEND:
                self.outbox.append((self.rt.shard_of(fn.run_id), fn))
            elif idx == OUT_REPLY:
                self.rt.notifier.reply(*fn)
            else:
                fn(None if results is None else results[idx])
        if steps:
            self.rt.steps.submit_many(steps)

    def _commit_failed(self, exc: BaseException, touched: list[RunMachine], outputs: list[Output]) -> None:
        """Nothing of the batch happened: drop its runs from memory and replay them from the journal in a second."""
        log.error("journal commit failed; affected runs reload from the journal", error=str(exc), runs=len(touched))
        for idx, x in outputs:
            if idx == OUT_REPLY:
                self.rt.notifier.reply(x[0], None, StorageError(f"journal commit failed: {exc}"))
        retry_at = self.rt.clock.now() + 1.0
        for run in touched:
            self.runs.pop(run.run_id, None)
            run.detach()
            self.finishing.pop(run.run_id, None)
            self.outbox.append(("timer", ArmTimer(retry_at, run.run_id, -1, "reload")))

    # --- fault isolation ---------------------------------------------------------------------
    def _isolate(self, item: RunMessage, exc: Exception, marks: tuple[int, int, int, int]) -> None:
        """Handling `item` raised: undo what it added to this batch and quarantine its run."""
        ops, outputs, outbox, rederivable = marks
        run_id = item.run_id
        undone = self.batch.ops[ops:]
        self.batch.truncate(ops)
        del self.outputs[outputs:]
        del self.outbox[outbox:]
        self.rederivable = rederivable
        # the run's first event this item appended is where its quarantine record goes
        seqs = [op[2] for op in undone if op[0] == OP_APPEND and op[1] == run_id]
        run = self.runs.get(run_id)
        # (a run whose activation raised has buffered, never written, events: its completion knows
        # where they began)
        next_seq = min(seqs) if seqs else run.out.first_seq if run is not None else None
        self.quarantine(run_id, exc, type(item).__name__, next_seq)

    def quarantine(self, run_id: str, exc: Exception, during: str, next_seq: int | None = None) -> None:
        """Hold a run whose journal cannot be read, or whose handling raised, `blocked` with the
        evidence, running no more of its code until the next open() (with fixed code) retries it.

        The run leaves memory; later messages for it are dropped (it is in `blocked`); cancel()
        still ends it without running its code. The evidence is journaled once: a run quarantined
        again for the same reason on every open adds nothing."""
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.detach()
        for d in (self.dirty, self.touched, self.finishing):
            d.pop(run_id, None)
        error = f"quarantined while handling {during!r}: {describe_error(exc)}"
        evidence: dict[str, Any] = {"error": error, "type": type(exc).__name__, "during": during}
        if isinstance(exc, ActorflowError):
            evidence.update((k, v) for k, v in exc.evidence.items() if isinstance(v, (str, int, float)))
        log.error("run quarantined", run_id=run_id, during=during, error=describe_error(exc), exc_info=exc)
        journal = self.rt.journal
        try:
            rec = run.record if run is not None else journal.get_run(run_id)
            if next_seq is None:
                next_seq = journal.last_seq(run_id) + 1
        except Exception as read_exc:  # noqa: BLE001 - its record too is unreadable: hold it in memory only
            log.error("quarantined run's record is unreadable", run_id=run_id, error=describe_error(read_exc))
            self.blocked[run_id] = 0
            return
        if rec is None or rec.finished:
            return
        if rec.state != "blocked" or rec.error != error:
            now = self.rt.clock.now()
            self.batch.append(run_id, Event(next_seq, "run_blocked", "", evidence, now))
            next_seq += 1
            rec.state, rec.error, rec.updated_at = "blocked", error, now
            self.batch.put_run(rec)
            if self.rt.notifier.watching(run_id):
                status = RunStatus.from_record(rec)
                self.outputs.append((None, lambda: self.rt.notifier.status_changed(status)))
        self.blocked[run_id] = next_seq
