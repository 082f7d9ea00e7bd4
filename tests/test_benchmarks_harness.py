"""The benchmark harness's honesty rules, on canned worker results (no processes, no timings)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import _harness as h  # noqa: E402


def scenario() -> h.Scenario:
    return h.Scenario(
        name="fake",
        title="fake",
        params=lambda s: {},
        actorflow="x:y",
        peers={"dbos": "x:z"},
        metrics=[
            h.Metric("rate", "rate", "1/s", "higher", "rate"),
            h.Metric("peer_n_rate", "rate at the peer's N", "1/s", "higher", "rate", n_key="peer_n"),
            h.Metric("reruns", "reruns", "runs", "lower"),
        ],
        must_be_zero=("reruns",),
    )


def run(monkeypatch: pytest.MonkeyPatch, af: list[dict[str, Any]], peer: list[dict[str, Any]]) -> dict[str, Any]:
    order: list[str] = []
    results = {"actorflow": iter(af), "dbos": iter(peer)}

    def fake_worker(sc: Any, side: str, params: Any, base: str, profile: Any = None) -> dict[str, Any]:
        order.append(side)
        return next(results[side])

    monkeypatch.setattr(h, "run_worker", fake_worker)
    line = h.run_scenario(scenario(), h.Settings(), len(af), ["dbos"], "/nonexistent")
    line["order"] = order
    return line


def test_ratios_only_at_equal_n_and_sides_alternate(monkeypatch: pytest.MonkeyPatch) -> None:
    af = [{"rate": 10.0, "peer_n_rate": 8.0, "reruns": 0, "n": 1000, "peer_n": 100, "settings": {"api": "a"}}] * 2
    peer = [{"rate": 2.0, "n": 100, "settings": {"api": "d"}}] * 2
    line = run(monkeypatch, af, peer)
    assert line["order"] == ["actorflow", "dbos", "dbos", "actorflow"]
    assert line["n"] == {"rate": [1000, 100], "peer_n_rate": [100, 100], "reruns": [1000]}
    assert line["ratio_actorflow_over_dbos"] == {"peer_n_rate": 4.0}  # none between N=1000 and N=100
    assert any("N differs" in e for e in line["errors"]["dbos"])
    assert line["settings"] == {"actorflow": {"api": "a"}, "dbos": {"api": "d"}}
    json.dumps(line)


def test_a_must_be_zero_metric_above_zero_in_any_repetition_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"rate": 10.0, "peer_n_rate": 8.0, "n": 100, "peer_n": 100}
    af = [{**base, "reruns": 0}, {**base, "reruns": 3}, {**base, "reruns": 0}]
    line = run(monkeypatch, af, [{"rate": 2.0, "n": 100}] * 3)
    assert line["actorflow"]["reruns"]["median"] == 0  # the median alone would hide it ...
    assert line["errors"]["actorflow"] == ["reruns must be 0 in every repetition, got [3]"]  # ... this does not
    assert "dbos" not in line.get("errors", {})


def test_render_reads_only_committed_run_logs(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stray = tmp_path / "stray.jsonl"
    stray.write_text("")
    assert h.render([str(stray)], str(tmp_path / "results"), {}, []) == 2
    assert "run logs in" in capsys.readouterr().err
