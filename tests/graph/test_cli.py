"""`actorflow graph validate/run` on the approval example, as the README shows them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from actorflow._cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "approval" / "approval.json")
APP = str(ROOT / "examples" / "approval" / "executors.py")


def run_cli(capsys: object, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()  # type: ignore[attr-defined]
    return code, out.out, out.err


def test_validate_the_example(capsys: object, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "graph", "validate", EXAMPLE, "--app", APP)
    assert code == 0 and "ok" in out and "7 nodes" in out
    broken = json.loads(Path(EXAMPLE).read_text())
    broken["edges"].append({"from": "process", "to": "nowhere"})
    broken["nodes"][0]["config"] = {"max_amount": -5}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    code, _, err = run_cli(capsys, "graph", "validate", str(bad), "--app", APP)
    assert code == 1
    assert "edge 'process->nowhere': dangling edge" in err
    assert "node 'validate': config rejected by 'task.expense.validate': max_amount must be a positive number" in err


def test_run_small_amount_is_auto_approved(capsys: object, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "graph", "run", EXAMPLE, "--app", APP, "--data-dir", str(tmp_path),
                           "--input", '{"employee": "ann", "amount": 250}')
    assert code == 0
    res = json.loads(out)["result"]
    assert res["visited"] == ["validate", "route", "process"] and res["output"]["approved_by"] == "auto"


def test_run_waits_for_the_manager_then_resumes_with_the_decision(capsys: object, tmp_path: Path) -> None:
    args = ["graph", "run", EXAMPLE, "--app", APP, "--data-dir", str(tmp_path), "--run-id", "exp-7"]
    code, out, err = run_cli(capsys, *args, "--input", '{"employee": "bob", "amount": 4200}')
    assert code == 3 and json.loads(out)["state"] == "waiting" and "--signal" in err
    code, out, _ = run_cli(capsys, *args, "--signal", 'approval={"decision": "approved", "approver": "maria"}')
    assert code == 0
    res = json.loads(out)["result"]
    assert res["visited"] == ["validate", "route", "manager_approval", "process"]
    assert res["output"]["approved_by"] == "maria"


def test_invalid_expense_takes_the_error_edge_via_the_console_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actorflow._cli", "graph", "run", EXAMPLE, "--app", APP, "--data-dir", str(tmp_path),
         "--input", '{"employee": "eve", "amount": 999999}'],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert res["visited"] == ["validate", "notify_invalid"] and res["output"]["error"]["error_type"] == "validation"


def test_the_readme_graph_example_runs() -> None:
    import re

    section = (ROOT / "README.md").read_text().split("## Graph workflows", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python example under '## Graph workflows'"
    exec(compile(code.group(1), "README.md#graph-workflows", "exec"), {})  # noqa: S102 - our own README
