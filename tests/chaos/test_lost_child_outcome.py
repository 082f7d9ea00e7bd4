"""A child that ended just before a crash: its outcome message to the waiting parent (sent once the
end was durable) died with the process. Found by the kill -9 campaign (a chain stuck `waiting` on a
member that had completed). Recovery must load such a parent so it hears of the ended child."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actorflow import Engine, RunNotFound
from storage import Event, LmdbJournal


def _engine(d: Path) -> Engine:
    engine = Engine(d, sync=False)

    @engine.workflow(name="kid")
    async def kid(ctx: Any) -> str:
        return await ctx.wait_signal("go")

    @engine.workflow(name="parent")
    async def parent(ctx: Any) -> str:
        got = await ctx.child("kid", run_id="the-kid")
        return f"parent got {got}"

    return engine


def _both_waiting(engine: Engine) -> bool:
    try:
        return all(engine.status(r).state.value == "waiting" for r in ("the-kid", "the-parent"))
    except RunNotFound:  # the child is created by the parent's first commit
        return False


def test_parent_of_a_child_that_ended_unannounced_completes_after_restart(tmp_path: Path) -> None:
    d = tmp_path / "data"
    engine = _engine(d)
    with engine:
        engine.start("parent", run_id="the-parent")
        deadline = time.monotonic() + 20
        while not _both_waiting(engine):
            assert time.monotonic() < deadline, "runs did not settle"
            time.sleep(0.01)
        time.sleep(0.3)  # their status records reach the journal at the next housekeeping

    # the child's end is journaled, the message to its parent never was: what a kill -9 right after
    # the child's final commit leaves
    with LmdbJournal(d) as j:
        rec = j.get_run("the-kid")
        assert rec is not None and rec.state == "waiting"
        b = j.batch()
        b.append("the-kid", Event(j.last_seq("the-kid") + 1, "run_completed", "", "late", time.time(), -1))
        rec.state = "completed"
        b.put_run(rec)
        j.commit(b)
        assert j.get_run("the-parent").state == "waiting"  # type: ignore[union-attr]

    engine = _engine(d)
    with engine:
        assert engine.result("the-parent", timeout=10) == "parent got late"
