"""The kill -9 campaign (campaign.py) as tests: a short one in the default run, the full-size one
(1,000 units x 5 steps, 20 kills) and a multiprocess one (engine and actor processes killed) marked
slow. A checker self-test shows each verdict can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .campaign import Campaign, Checkpoint, check, run_campaign


def _assert_ok(report: dict[str, Any]) -> None:
    assert report["ok"], json.dumps(report, indent=1, default=str)[:6000]
    assert report["distinct_steps"] == report["units"] * 5
    assert report["sleeps"] == report["sleeps_fired"] > 0
    assert report["signals_acknowledged"] > 0


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_campaign(tmp_path_factory.mktemp("campaign") / "work", units=40, kills=2, seed=11, max_life=1.5)


def test_short_campaign_loses_nothing(short: dict[str, Any]) -> None:
    _assert_ok(short)
    assert short["engine_kills"] == 2 and short["checkpoints"] == 2


def test_checker_catches_each_kind_of_violation(short: dict[str, Any]) -> None:
    """The same campaign's evidence, falsified one way at a time: each verdict turns non-empty."""
    work = Path(short["work_dir"])
    plan = json.loads((work / "plan.json").read_text())
    c = Campaign(work, "embedded", __import__("random").Random(0))
    steps_log = (work / "steps.log").read_text().splitlines()
    final_cp = c.read_facts(c.data, "final", c.size("steps.log"), c.size("acks.log"), True)

    # a checkpoint at which every step was journaled, followed by one more run of a step body
    first = steps_log[0].split(" ")
    c.checkpoints = [Checkpoint("falsified", c.size("steps.log"), 0, set(final_cp.completed), set(), set(), {})]
    with open(work / "steps.log", "a") as f:
        f.write(f"99 1 {first[2]} {first[3]} 1 {first[5]}\n")
    try:
        v = check(c, plan)["verdicts"]
        assert v["steps_rerun_after_journaled"]
        c.checkpoints = []  # no kill between the two runs of that step body (the same process ran both)
        with open(work / "steps.log", "a") as f:
            f.write(f"99 1 {first[2]} {first[3]} 1 {first[5]}\n")
        assert (0, first[2], int(first[3])) in check(c, plan)["verdicts"]["steps_run_twice_between_kills"]
        # an acknowledged signal missing from a checkpoint taken after its ack
        c.checkpoints = [Checkpoint("no signals", 0, c.size("acks.log"), set(), final_cp.runs, set(), {})]
        v = check(c, plan)["verdicts"]
        assert v["lost_acknowledged_signals"] and not v["lost_acknowledged_starts"]
        c.checkpoints = [Checkpoint("no runs", 0, c.size("acks.log"), set(), set(), final_cp.signals, {"timer_missing": 1})]
        v = check(c, plan)["verdicts"]
        assert v["lost_acknowledged_starts"] and v["lost_timers"] and v["fsck_findings"]
        # a result that is not what the inputs determine
        results = json.loads((work / "results.json").read_text())
        some = next(iter(results))
        (work / "results.json").write_text(json.dumps({**results, some: "wrong"}))
        c.checkpoints = []
        assert check(c, plan)["verdicts"]["wrong_results"] == [(some, "wrong")]
        c.left_after_close = [12345]  # a process of the final generation alive after it closed and exited
        assert check(c, plan)["verdicts"]["processes_left_after_close"] == ["pid 12345"]
    finally:
        (work / "steps.log").write_text("\n".join(steps_log) + "\n")


@pytest.mark.slow
def test_full_campaign_1000_units_20_kills(tmp_path: Path) -> None:
    report = run_campaign(tmp_path / "work", units=1000, kills=20, max_life=3.0)
    _assert_ok(report)
    assert report["engine_kills"] == 20


@pytest.mark.slow
def test_multiproc_campaign_kills_engines_shards_and_step_workers(tmp_path: Path) -> None:
    report = run_campaign(tmp_path / "work", units=150, kills=3, mode="multiproc", proc_kills=4, max_life=4.0)
    _assert_ok(report)
    assert report["engine_kills"] == 3 and report["actor_process_kills"] >= 1
