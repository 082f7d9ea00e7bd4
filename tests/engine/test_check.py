"""The replay check: `Engine.check()` / `actorflow check` replay every unfinished run against the code
registered now, run no step and write nothing, and name each run that would block."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from actorflow import Engine, RunState

from .conftest import wait_until

CALLS: list[str] = []


def _step(name: str, value: Any) -> Any:
    CALLS.append(name)
    return value


async def stable(ctx: Any, i: int) -> int:
    a = await ctx.step("a", lambda: _step("a", i))
    await ctx.sleep("day", 86400)
    return int(await ctx.step("b", lambda: _step("b", a + 1)))


async def changed_v1(ctx: Any, i: int) -> int:
    a = await ctx.step("fetch", lambda: _step("fetch", i))
    await ctx.sleep("day", 86400)
    return int(a)


async def changed_v2(ctx: Any, i: int) -> int:  # a new step inserted before the sleep: old runs diverge
    a = await ctx.step("fetch", lambda: _step("fetch", i))
    await ctx.step("audit", lambda: _step("audit", a))
    await ctx.sleep("day", 86400)
    return int(a)


def _park(data: Path, n_stable: int, n_changed: int, system: str) -> list[str]:
    engine = Engine(data, sync=False, passivate_after=0.2, system=system)
    engine.workflow(name="stable")(stable)
    engine.workflow(name="changed")(changed_v1)
    with engine:
        hs = engine.start_many("stable", [(i,) for i in range(n_stable)])
        changed = engine.start_many("changed", [(i,) for i in range(n_changed)])
        wait_until(lambda: len(engine.runs(state="sleeping")) == n_stable + n_changed, 60, "every run parked")
        assert len(hs) == n_stable
        return [h.run_id for h in changed]


def test_check_finds_the_changed_workflow_among_1000_parked_runs(tmp_path: Path, system: str) -> None:
    data = tmp_path / "data"
    changed_ids = _park(data, 990, 10, system)
    CALLS.clear()

    same = Engine(data, system=system)  # the code that wrote them: every run replays
    same.workflow(name="stable")(stable)
    same.workflow(name="changed")(changed_v1)
    report = same.check()
    assert report.ok and report.checked == 1000 and not report.skipped

    new = Engine(data)  # the deploy to check: `changed` gained a step
    new.workflow(name="stable")(stable)
    new.workflow(name="changed")(changed_v2)
    report = new.check()
    assert not report.ok and report.checked == 1000
    assert sorted(d.run_id for d in report.divergences) == sorted(changed_ids)
    d = report.divergences[0]
    assert (d.workflow, d.seq, d.expected, d.recorded) == ("changed", 1, "step 'audit'", "timer_started 'day'")
    assert CALLS == []  # no step ran

    partial = Engine(data)  # a workflow this code no longer registers is reported, not guessed at
    partial.workflow(name="stable")(stable)
    report = partial.check()
    assert report.ok and report.checked == 990 and sorted(report.skipped) == sorted(changed_ids)

    with same:  # nothing was written: the runs are still parked and their journals unchanged
        assert {r.state for r in same.runs()} == {RunState.SLEEPING}
        assert [e.kind for e in same.history(changed_ids[0])] == ["run_started", "step_completed", "timer_started"]


APP = textwrap.dedent(
    """
    from actorflow import Engine

    async def changed(ctx, i):
        a = await ctx.step("fetch", lambda: i)
        {extra}
        await ctx.sleep("day", 86400)
        return a

    engine = Engine("{data}")
    engine.workflow(name="changed")(changed)
    """
)


def test_the_check_command_exits_7_on_a_divergence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _park(data, 0, 3, "embedded")  # the command reads the directory: who wrote it does not matter
    root = Path(__file__).resolve().parents[2]
    for extra, code in (("", 0), ("await ctx.step('audit', lambda: a)", 7)):
        app = tmp_path / f"app{code}.py"
        app.write_text(APP.format(extra=extra, data=data))
        proc = subprocess.run(
            [sys.executable, "-m", "actorflow._cli", "check", "--app", str(app), "--json"],
            capture_output=True, text=True, cwd=root, timeout=60, check=False,
        )
        assert proc.returncode == code, proc.stderr
        out = json.loads(proc.stdout)
        assert out["checked"] == 3 and out["ok"] is (code == 0)
        assert sorted(d["run_id"] for d in out["divergences"]) == (sorted(ids) if code else [])
