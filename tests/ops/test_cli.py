"""`actorflow runs ...` end to end: the real entry point in a subprocess, against a data directory
that another process's live engine holds, checking output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actorflow import Engine, RetryPolicy

from .conftest import actorflow_cli, calls, json_lines


def _finished_dir(tmp_path: Path) -> Path:
    """A data directory with one completed run (a retried step) and one failed run; no engine holds it."""
    d = tmp_path / "done"
    e = Engine(d)
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    def boom() -> None:
        raise ValueError("no way")

    @e.workflow(name="shop")
    async def shop(ctx: Any, x: int) -> str:
        await ctx.step("first", lambda: x)
        if x < 0:
            await ctx.step("explode", boom)
        return str(await ctx.step("flaky", flaky, retry=RetryPolicy.exponential(max_attempts=3, initial_delay=0.01)))

    with e:
        e.run(shop, 1, run_id="good", timeout=30)
        e.start(shop, -1, run_id="bad")
        try:
            e.result("bad", timeout=30)
        except Exception:  # noqa: BLE001 - it fails on purpose
            pass
    return d


def test_list_show_history_on_a_closed_directory(tmp_path: Path) -> None:
    d = _finished_dir(tmp_path)
    p = actorflow_cli("runs", "list", "--json", data_dir=d)
    assert p.returncode == 0, p.stderr
    rows = {r["run_id"]: r["state"] for r in json_lines(p.stdout)}
    assert rows == {"good": "completed", "bad": "failed"}
    p = actorflow_cli("runs", "list", "--state", "failed", "--json", data_dir=d)
    assert [r["run_id"] for r in json_lines(p.stdout)] == ["bad"]
    p = actorflow_cli("runs", "list", data_dir=d)
    assert p.returncode == 0 and "good" in p.stdout and "completed" in p.stdout and "2 runs in the journal" in p.stdout

    p = actorflow_cli("runs", "show", "good", "--json", data_dir=d)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["run"]["state"] == "completed" and shown["result"] == "ok"
    flaky = next(r for r in shown["timeline"] if r["name"] == "flaky")
    assert flaky["attempts"] == 2 and flaky["status"] == "ok" and flaky["duration"] >= 0
    p = actorflow_cli("runs", "show", "bad", data_dir=d)
    assert p.returncode == 0 and "no way" in p.stdout and "explode" in p.stdout

    p = actorflow_cli("runs", "history", "good", "--json", data_dir=d)
    kinds = [e["kind"] for e in json_lines(p.stdout)]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed" and "step_attempt_failed" in kinds
    # the first CLI's forms still answer as they did (JSON lines)
    assert {r["run_id"] for r in json_lines(actorflow_cli("runs", data_dir=d).stdout)} == {"good", "bad"}
    assert [e["kind"] for e in json_lines(actorflow_cli("history", "good", data_dir=d).stdout)] == kinds


def test_errors_are_one_line_with_what_to_do_and_an_exit_code(tmp_path: Path) -> None:
    d = _finished_dir(tmp_path)
    for args in (("runs", "show", "nope"), ("runs", "history", "nope"), ("runs", "signal", "nope", "go"), ("runs", "fork", "nope", "--from-step", "0")):
        p = actorflow_cli(*args, data_dir=d)
        assert p.returncode == 3, (args, p.stdout, p.stderr)
        assert p.stderr.count("\n") == 1 and "no workflow run with id 'nope'" in p.stderr and "actorflow runs list" in p.stderr
    p = actorflow_cli("runs", "cancel", "good", data_dir=d)
    assert p.returncode == 4 and "already finished" in p.stderr and "runs fork good" in p.stderr
    p = actorflow_cli("runs", "list", data_dir=tmp_path / "missing")
    assert p.returncode == 3 and "no actorflow data directory" in p.stderr and "--data-dir" in p.stderr
    assert not (tmp_path / "missing").exists()  # a reading command never creates a data directory
    p = actorflow_cli("runs", "list", "--state", "sleepy", data_dir=d)
    assert p.returncode == 2 and "sleepy" in p.stderr
    p = actorflow_cli("runs", "fork", "good", "--from-step", "9", data_dir=d)
    assert p.returncode == 2 and "from_step must be 0..2" in p.stderr
    p = actorflow_cli("runs", "fork", "good", "--from-step", "1", "--run-id", "bad", data_dir=d)
    assert p.returncode == 4 and "'bad' is taken" in p.stderr
    p = actorflow_cli("runs", "watch", "bad", "--json", data_dir=d)
    assert p.returncode == 5 and json_lines(p.stdout)[-1]["state"] == "failed"
    with Engine(d) as e:  # nothing was written by the refused commands
        assert sorted(r.run_id for r in e.runs()) == ["bad", "good"]


def test_commands_against_a_directory_a_live_engine_holds(tmp_path: Path, live_engine: Any) -> None:
    d = tmp_path / "live"
    eng = live_engine(d)
    p = actorflow_cli("runs", "show", "r-live", "--json", data_dir=d)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["run"]["state"] == "waiting" and shown["steps_done"] == 2
    assert [(w["kind"], w["name"]) for w in shown["waiting"]] == [("signal", "go")]
    p = actorflow_cli("runs", "show", "r-live", data_dir=d)
    assert "waiting on" in p.stdout and "signal 'go'" in p.stdout

    p = actorflow_cli("runs", "signal", "r-live", "go", '{"by": "ops"}', "--json", data_dir=d)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "applied" and out["engine_pid"] == eng.proc.pid
    p = actorflow_cli("runs", "watch", "r-live", "--timeout", "60", data_dir=d)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "r-live completed" in p.stdout
    p = actorflow_cli("runs", "show", "r-live", "--json", data_dir=d)
    assert json.loads(p.stdout)["result"]["c"] == "v1:{'by': 'ops'}"
    assert eng.proc.poll() is None  # the engine is still up: reads and writes beside it were fine

    p = actorflow_cli("runs", "signal", "r-live", "go", "not json", data_dir=d)
    assert p.returncode == 2 and "PAYLOAD_JSON is not JSON" in p.stderr
    p = actorflow_cli("runs", "cancel", "r-live", data_dir=d)
    assert p.returncode == 4


def test_cancel_goes_through_the_live_engine(tmp_path: Path, live_engine: Any) -> None:
    d = tmp_path / "live"
    live_engine(d)
    p = actorflow_cli("runs", "cancel", "r-live", data_dir=d)
    assert p.returncode == 0, p.stderr
    assert "cancel of r-live: cancelled" in p.stdout
    p = actorflow_cli("runs", "watch", "r-live", "--json", "--timeout", "30", data_dir=d)
    assert p.returncode == 5 and json_lines(p.stdout)[-1]["state"] == "cancelled"


def test_fork_through_the_cli_runs_on_the_live_engine_without_rerunning_the_prefix(tmp_path: Path, live_engine: Any) -> None:
    d = tmp_path / "live"
    first = live_engine(d)
    assert actorflow_cli("runs", "signal", "r-live", "go", "true", data_dir=d).returncode == 0
    assert actorflow_cli("runs", "watch", "r-live", "--timeout", "60", data_dir=d).returncode == 0
    first.stop()
    assert calls(d) == [("v1", "prepare"), ("v1", "review"), ("v1", "finish")]
    # new code is deployed; the fork keeps prepare and review - and everything journaled before
    # finish's first event, so the "go" signal the original received is replayed too
    p = actorflow_cli("runs", "fork", "r-live", "--from-step", "2", "--run-id", "r-fork", "--json", "--wait", "0", data_dir=d)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["replayed_steps"] == ["prepare", "review"] and info["engine"] == "none"
    assert info["forked_from"] == "r-live" and info["events_copied"] > 3
    e = Engine(d)

    def call(name: str, value: Any) -> Any:
        with open(d / "calls.log", "a") as f:
            f.write(f"0 v2 {name}\n")
        return value

    @e.workflow(name="approval")
    async def approval(ctx: Any, n: int) -> dict[str, Any]:
        a = await ctx.step("prepare", lambda: call("prepare", -1))
        ctx.report_progress(0.3)
        b = await ctx.step("review", lambda: call("review", -1))
        ctx.report_progress(0.6)
        ok = await ctx.wait_signal("go", timeout=300)
        c = await ctx.step("finish", lambda: call("finish", f"v2:{ok}"))
        return {"a": a, "b": b, "c": c}

    with e:  # the fork is an unfinished run: open() recovers it, replaying the copied prefix
        assert e.result("r-fork", timeout=60) == {"a": 5, "b": 50, "c": "v2:True"}
        assert e.result("r-live", timeout=5)["c"] == "v1:True"  # the original is untouched
        assert e.status("r-fork").state.value == "completed"
    assert calls(d) == [("v1", "prepare"), ("v1", "review"), ("v1", "finish"), ("v2", "finish")]
