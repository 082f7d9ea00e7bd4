"""The host as the run machine's adapter: what an activation buffered but the host never wrote."""

from __future__ import annotations

from typing import Any

import pytest

import actorflow
from actorflow import Engine
from actorflow._core import RunMachine

from .conftest import TIMEOUT, wait_state


async def two_steps(ctx: Any, i: int) -> int:
    a = await ctx.step("a", lambda: i)
    b = await ctx.step("b", lambda: a + 1)
    return int(b) * 2


def test_an_activation_raising_after_buffering_events_is_quarantined_where_they_began(
    new_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step a's result is buffered (seq 1) and b dispatched, then the machine raises (outside the
    workflow's code): nothing of that activation is written, and the quarantine record takes seq 1
    (no gap a reader would take for corruption)."""
    original = RunMachine._update_state

    def buggy(self: Any) -> None:
        if self.run_id == "victim" and self.awaiting is not None and self.awaiting.name == "b":
            raise RuntimeError("bug after the result was buffered")
        original(self)

    monkeypatch.setattr(RunMachine, "_update_state", buggy)
    engine: Engine = new_engine(workflows=[two_steps])  # opened after the patch: a shard process forks with it
    victim = engine.start(two_steps, 1, run_id="victim")
    others = [engine.start(two_steps, i) for i in range(5)]
    st = wait_state(engine, "victim", "blocked")
    assert st.error is not None and "bug after the result was buffered" in st.error
    history = victim.history()
    assert [(e.seq, e.kind) for e in history] == [(0, "run_started"), (1, "run_blocked")]
    assert [h.result(timeout=TIMEOUT) for h in others] == [(i + 1) * 2 for i in range(5)]
    monkeypatch.setattr(RunMachine, "_update_state", original)
    assert engine.cancel("victim") is True
    with pytest.raises(actorflow.Cancelled):
        victim.result(timeout=TIMEOUT)
