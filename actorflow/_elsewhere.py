"""Child runs journaled elsewhere than their parent: the two hosts' halves of their creation.

With shards owned by member nodes (`Engine(shard_nodes=...)`), a parent's journal and its child's
may be two LMDB environments on two machines, so the child's record cannot be written in the
parent's batch (as `RunHost._create_child` does when both are journaled here). Instead:

1. The parent's run machine issues `CreateChild` (`CREATE_ELSEWHERE`; it journals nothing yet, and
   counts as running). Its host sends it to the child's shard once its batch is durable, and again
   every `_RESEND` seconds until answered (the owner's process may have been replaced, its node
   lost and back): `creating`, dropped when the parent leaves memory (its replay asks again).
2. The child's host creates the run in its own journal (a run that exists already is "that run":
   the child's id is deterministic, so a repeated request finds it) and, once that is durable,
   starts it and answers `ChildCreated` to the parent (or the workflow its id belongs to).
3. The parent journals `child_started` then and watches the child (`WatchChild`); the child's
   outcome comes back as `ChildDone`, as between any two shards. A parent that crashed before step 3
   replays to the child command and asks again; one recovered after it watches again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from storage import Event, RunRecord

from ._messages import CancelRun, ChildCreated, CreateChild, StartRun
from ._outputs import OUT_SEND

if TYPE_CHECKING:
    from ._core import RunMachine
    from ._runtime import Runtime

__all__ = ["ChildrenElsewhere"]

_RESEND = 5.0  # seconds between requests to create a child while its owner has not answered


class ChildrenElsewhere:
    """The part of RunHost that creates child runs journaled by another process (module docstring)."""

    rt: Runtime
    batch: Any
    outputs: list[tuple[int | None, Any]]
    outbox: list[tuple[Any, Any]]
    runs: dict[str, RunMachine]
    creating: dict[tuple[str, int], tuple[float, CreateChild]]

    def ask_create(self, msg: CreateChild) -> None:
        """The parent's side: send the request once this batch is durable; again until answered."""
        self.creating[(msg.parent_id, msg.pos)] = (time.monotonic(), msg)
        self.outputs.append((OUT_SEND, msg))

    def child_created(self, msg: ChildCreated) -> None:
        """The parent's side: the owner answered (the run machine journals child_started). A parent
        cancelled (and ended) meanwhile: its CancelRun may have reached the owner before the child
        existed, so the child is cancelled now (a resident parent's machine does the same)."""
        self.creating.pop((msg.run_id, msg.pos), None)
        if msg.run_id not in self.runs:
            rec = self.rt.journal.get_run(msg.run_id)
            if rec is not None and rec.state == "cancelled":
                self.outbox.append((self.rt.shard_of(msg.child_id), CancelRun(msg.child_id)))

    def resend_creates(self) -> None:
        """The parent's side, on housekeeping: ask again what was not answered within _RESEND."""
        if not self.creating:
            return
        now = time.monotonic()
        for key, (since, msg) in list(self.creating.items()):
            if key[0] not in self.runs:
                del self.creating[key]  # finished, or left memory: a replay asks again if need be
            elif now - since >= _RESEND:
                self.creating[key] = (now, msg)
                self.outbox.append((self.rt.shard_of(msg.run_id), msg))

    def create_requested(self, msg: CreateChild) -> None:
        """The child's side: create the run in this journal; once durable, start it (if new) and
        answer the parent."""
        rt = self.rt
        child_id, parent_id = msg.run_id, msg.parent_id
        now = rt.clock.now()
        rec = RunRecord(child_id, msg.workflow, "pending", now, now, parent=parent_id, meta={"parent_pos": msg.pos})
        idx = self.batch.create_run(rec, Event(0, "run_started", msg.workflow, {"args": msg.args}, now))

        def created(existing: RunRecord | None) -> None:
            if existing is None:
                self.outbox.append((rt.shard_of(child_id), StartRun(child_id, rec.as_tuple(), msg.args)))
            conflict = None if existing is None or existing.workflow == msg.workflow else existing.workflow
            self.outbox.append((rt.shard_of(parent_id), ChildCreated(parent_id, msg.pos, child_id, conflict)))

        self.outputs.append((idx, created))
