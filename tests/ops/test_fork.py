"""engine.fork: the new run replays the original's first N steps from the journal and runs the rest on
the code registered now; the original is untouched; bad requests write nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigError, Engine, RunNotFound
from actorflow.errors import RunIdTaken, WorkflowNotRegistered
from actorflow.testing import memory_engine


def _engine(data_dir: Path | None, version: str, ran: list[str]) -> Engine:
    e = memory_engine() if data_dir is None else Engine(data_dir)

    def step(name: str, value: Any) -> Any:
        ran.append(f"{version}:{name}")
        return value

    @e.workflow(name="pipeline")
    async def pipeline(ctx: Any, x: int) -> list[Any]:
        a = await ctx.step("extract", lambda: step("extract", x + 1))
        b = await ctx.step("transform", lambda: step("transform", a * 10 if version == "v1" else a * 100))
        await ctx.sleep("settle", 0.01)
        c = await ctx.step("load", lambda: step("load", f"{version}:{b}"))
        return [a, b, c]

    return e


def test_a_fork_completes_on_new_code_with_the_first_n_results_and_no_rerun(tmp_path: Path) -> None:
    ran: list[str] = []
    with _engine(tmp_path / "d", "v1", ran) as e:
        assert e.run("pipeline", 1, run_id="orig", timeout=30) == [2, 20, "v1:20"]
        original = [ev.to_dict() for ev in e.history("orig")]
    assert ran == ["v1:extract", "v1:transform", "v1:load"]
    ran.clear()
    with _engine(tmp_path / "d", "v2", ran) as e:  # new code deployed
        h = e.fork("orig", from_step=1, run_id="orig-fork")
        assert h.run_id == "orig-fork"
        assert h.result(timeout=30) == [2, 200, "v2:200"]  # extract's result replayed, the rest on v2
        assert ran == ["v2:transform", "v2:load"]  # extract did not run again
        ran.clear()
        assert e.fork("orig", from_step=3).result(timeout=30) == [2, 20, "v1:20"]  # every step replayed
        assert ran == []
        assert [ev.to_dict() for ev in e.history("orig")] == original  # the original is untouched
        forked = e.history("orig-fork")
        assert [(ev.kind, ev.name) for ev in forked[:2]] == [("run_started", "pipeline"), ("step_completed", "extract")]
        assert forked[0].data == {"args": (1,)} or forked[0].data == {"args": [1]}
        assert e.fork("orig", from_step=0).result(timeout=30) == [2, 200, "v2:200"]


def test_bad_forks_are_refused_before_anything_is_written() -> None:
    ran: list[str] = []
    with _engine(None, "v1", ran) as e:
        e.run("pipeline", 1, run_id="orig", timeout=30)
        before = sorted(r.run_id for r in e.runs())
        with pytest.raises(RunNotFound):
            e.fork("nope", from_step=1)
        with pytest.raises(ConfigError, match=r"from_step must be 0\.\.3"):
            e.fork("orig", from_step=4)
        with pytest.raises(ConfigError, match="int >= 0"):
            e.fork("orig", from_step=-1)
        with pytest.raises(ConfigError, match="int >= 0"):
            e.fork("orig", from_step=True)
        with pytest.raises(RunIdTaken, match="'orig' is taken"):
            e.fork("orig", from_step=1, run_id="orig")
        assert sorted(r.run_id for r in e.runs()) == before


def test_fork_needs_the_workflow_registered() -> None:
    with memory_engine() as e:

        @e.workflow(name="a")
        async def a(ctx: Any) -> int:
            return int(await ctx.step("s", lambda: 1))

        e.run(a, run_id="r", timeout=10)
        e._workflows.pop("a")
        e._names.pop(a)
        with pytest.raises(WorkflowNotRegistered):
            e.fork("r", from_step=0)
        assert [r.run_id for r in e.runs()] == ["r"]


def test_a_failed_run_forked_from_its_failed_step_runs_it_again_on_fixed_code() -> None:
    fixed = {"on": False}

    def charge() -> str:
        if not fixed["on"]:
            raise ValueError("bug in charge")
        return "charged"

    with memory_engine() as e:

        @e.workflow(name="pay")
        async def pay(ctx: Any) -> str:
            await ctx.step("reserve", lambda: "r")
            return str(await ctx.step("charge", charge))

        h = e.start(pay, run_id="p")
        with pytest.raises(Exception, match="bug in charge"):
            h.result(timeout=10)
        fixed["on"] = True
        assert e.fork("p", from_step=1).result(timeout=10) == "charged"
