"""Smoke test of the benchmark harness: the whole `python -m benchmarks` pipeline on its tiny sizes.

No timing assertions (a noisy 2-core machine): only that every scenario ran, printed one JSON line
with the expected keys, and the result files were written. With DBOS installed (the `bench` extra)
the peer is measured too; without it the harness runs actorflow alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = {"journal", "seq3", "conc3", "multiproc", "tasks", "steps100", "sleepers", "million", "burst", "recovery",
             "dashboard"}
HAS_DBOS = importlib.util.find_spec("dbos") is not None
# the task queue peers of the `tasks` scenario (bench extra; Dramatiq also needs Debian's redis-server)
TASK_PEERS = [p for p in ("huey", "dramatiq") if importlib.util.find_spec(p) is not None
              and (p != "dramatiq" or (importlib.util.find_spec("redis") and shutil.which("redis-server")))]
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_PSUTIL = importlib.util.find_spec("psutil") is not None


# every scenario, each side in fresh processes: ~60 s alone and ~90 s at load 10 on this 2-core machine;
# with DBOS installed (the bench extra; CI has the test extra only) ~170 s at that load
@pytest.mark.timeout(360)
def test_quick_harness_tiny(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--tiny", "--out", str(tmp_path / "results"),
           "--dir", str(tmp_path)]
    names = set(SCENARIOS)
    if not HAS_PSUTIL:  # RSS needs psutil (bench extra); everything else runs without it
        names.discard("sleepers")
        names.discard("multiproc")
        cmd += [s for s in _order() if s in names]
    if HAS_DBOS:
        cmd += ["--peer", "dbos"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=340, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [line["scenario"] for line in lines] == [s for s in _order() if s in names]
    for line in lines:
        assert not line.get("errors"), line.get("errors")
        for key in ("scenario", "title", "params", "repeat", "actorflow", "units", "better", "elapsed_s"):
            assert key in line, (line["scenario"], key)
        assert line["actorflow"], line["scenario"]
        for metric, stats in line["actorflow"].items():
            assert set(stats) >= {"median", "min", "max", "runs"}, (line["scenario"], metric)
            assert stats["median"] is not None, (line["scenario"], metric)
            assert stats["min"] <= stats["median"] <= stats["max"]
        if HAS_DBOS and line["scenario"] not in ("journal", "million", "burst", "dashboard"):  # no DBOS peer for these
            assert line["dbos"] and "ratio_actorflow_over_dbos" in line, line["scenario"]
            assert all(s["median"] is not None for s in line["dbos"].values()), line["dbos"]
            assert all(r is not None for r in line["ratio_actorflow_over_dbos"].values())
            # every ratio is between figures over the same N, and both sides' settings are recorded
            compared = line["ratio_actorflow_over_dbos"]
            assert compared and all(len(line["n"][k]) == 2 and line["n"][k][0] == line["n"][k][1] is not None
                                    for k in compared), line["n"]
            assert line["settings"]["actorflow"]["gc thresholds"] and line["settings"]["dbos"]["api"]
            assert "synchronous=2" in line["settings"]["dbos"]["durability"]  # DBOS's SQLite: FULL, read back
        else:
            assert "dbos" not in line

    by = {line["scenario"]: line for line in lines}
    assert by["seq3"]["actorflow"]["wf_per_s"]["median"] > 0
    assert {"astart_wf_per_s", "start_wf_per_s", "start_many_wf_per_s"} <= set(by["conc3"]["actorflow"])
    assert by["steps100"]["actorflow"]["cpu_us_per_step"]["median"] > 0
    for key in ("s1_rerun_after_crash", "peer_n_s1_rerun_after_crash"):  # journaled steps not re-run
        assert by["recovery"]["actorflow"][key]["max"] == 0
    assert by["million"]["actorflow"]["rss_mib"]["median"] > 0
    assert {"near_fire_lateness_p99_ms", "far_fire_lateness_p99_ms", "resume_lateness_p99_ms"} <= set(
        by["million"]["actorflow"])
    assert by["million"]["actorflow_info"]["far_armed_beyond_window_s"] > 0  # read back from the timer index
    assert by["million"]["actorflow_info"]["evicted_before_rss"]["resident_runs"] == 0
    assert by["journal"]["actorflow"]["ratio_pipelined_vs_raw_at_epc"]["median"] > 0
    burst = by["burst"]["actorflow"]  # one start_many vs waves: both parked, evicted, within the cap
    assert burst["one_call_settled_rss_mib"]["median"] > 0 and burst["waves_settled_rss_mib"]["median"] > 0
    assert 0 < burst["one_call_peak_resident"]["median"] <= 20_000
    if "sleepers" in by:
        assert {"rss_per_run_bytes", "lateness_p50_ms", "lateness_p99_ms"} <= set(by["sleepers"]["actorflow"])
    assert {"enqueue_e2e_per_s", "enqueue_per_s", "threads_e2e_per_s", "threads_per_s", "enqueue_many_e2e_per_s",
            "enqueue_many_per_s"} <= set(by["tasks"]["actorflow"])

    out = tmp_path / "results"
    saved = json.loads((out / "latest.json").read_text())
    assert [s["scenario"] for s in saved["scenarios"]] == [line["scenario"] for line in lines]
    md = (out / "latest.md").read_text()
    assert "| scenario | metric |" in md and "seq3" in md
    run_logs = list((out / "runs").glob("*.jsonl"))  # what --render rebuilds latest.* from
    assert len(run_logs) == 1 and len(run_logs[0].read_text().splitlines()) == len(lines)
    if HAS_MPL:
        assert (out / "latest.png").stat().st_size > 1000


def _order() -> list[str]:
    sys.path.insert(0, ROOT)
    import actorflow  # noqa: F401
    from benchmarks._harness import scenarios

    return list(scenarios())


def test_timeline_tool_accounts_for_a_sequential_workflow(tmp_path):
    """`python -m benchmarks.timeline`: every workflow's marks are paired and its segments add up."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.timeline", "--n", "5", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert out["n"] == 5
    assert out["median_us_in_journal_writes"] > 0 and out["median_us_elsewhere"] > 0
    segs = out["segments"]
    # 4 fsync'd commits per workflow: the start's (by the caller) and one per step result
    assert sum(v["per_wf"] for k, v in segs.items() if k.startswith("write> -> write<")) == 4
    assert any("(step worker)" in k for k in segs)


def test_tasks_scenario_beside_the_task_queue_peers(tmp_path):
    """`python -m benchmarks tasks` with huey and Dramatiq (a redis-server the peer starts and stops) when
    they are installed, else actorflow alone: same N on every side, each side's guarantee and durability
    settings (read back from the running system) beside its figures."""
    cmd = [sys.executable, "-m", "benchmarks", "tasks", "--tiny", "--out", str(tmp_path / "results"),
           "--dir", str(tmp_path)]
    for peer in TASK_PEERS:
        cmd += ["--peer", peer]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=100, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (tasks,) = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert not tasks.get("errors"), tasks["errors"]
    assert tasks["params"]["n"] == 40
    assert all(s["median"] > 0 for s in tasks["actorflow"].values()), tasks["actorflow"]
    assert "at-least-once" in tasks["settings"]["actorflow"]["guarantee"]
    for peer in TASK_PEERS:  # huey and Dramatiq have no async enqueue: no figure, no ratio, for those two
        ratios = tasks[f"ratio_actorflow_over_{peer}"]
        assert all(ratios[k] is None for k in ("async_e2e_per_s", "async_per_s")), ratios
        assert all(r is not None for k, r in ratios.items() if not k.startswith("async_")), tasks[peer]
        assert all(len(set(ns)) == 1 and ns[0] == 40 for ns in tasks["n"].values()), tasks["n"]
        assert tasks["settings"][peer]["guarantee"] and tasks["settings"][peer]["durability"]
    if "huey" in TASK_PEERS:
        assert "at-most-once" in tasks["settings"]["huey"]["guarantee"]
        assert "synchronous=2" in tasks["settings"]["huey"]["durability"]
    if "dramatiq" in TASK_PEERS:
        assert "appendfsync=always" in tasks["settings"]["dramatiq"]["durability"]
        assert "at-least-once" in tasks["settings"]["dramatiq"]["guarantee"]
    md = (tmp_path / "results" / "latest.md").read_text()
    assert all(f"ratio af/{peer}" in md for peer in TASK_PEERS)
