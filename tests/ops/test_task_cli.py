"""`actorflow tasks ...`, `dead-letters`, `schedules list` end to end: the real entry point in a
subprocess against a data directory an engine prepared (a task that succeeded, one in the dead
letters, a delayed one, a schedule) - closed, and held by a live engine in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HERE, ROOT, actorflow_cli, json_lines

APP = HERE / "task_app.py"

# The entry point's main() for several command lines in ONE subprocess: importing actorflow costs
# ~0.7 s per process here, and these tests run some thirty commands.
_BATCH = """
import contextlib, io, json, sys
from actorflow._cli import main
out = []
for argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    out.append([code, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""


def cli_batch(data_dir: Path, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run each command (with --data-dir) through `actorflow._cli.main`, in one subprocess, in order."""
    argvs = [[*cmd] if "--data-dir" in cmd else [*cmd, "--data-dir", str(data_dir)] for cmd in commands]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    env.pop("ACTORFLOW_DATA_DIR", None)
    p = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(argvs)], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert p.returncode == 0, p.stderr
    return [subprocess.CompletedProcess(argv, code, out, err) for argv, (code, out, err) in zip(argvs, json.loads(p.stdout), strict=True)]


def _ids(line: str) -> dict[str, str]:
    assert line.startswith("ready "), line
    ids: dict[str, str] = json.loads(line[len("ready "):])
    return ids


@pytest.fixture(scope="module")
def closed_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("tasks") / "data"
    p = subprocess.run([sys.executable, str(APP), str(d)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert p.returncode == 0, p.stderr
    return d, _ids(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    d = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, str(APP), str(d), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        yield d, _ids(proc.stdout.readline().strip())
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_reads_of_a_closed_directory(closed_dir: tuple[Path, dict[str, str]]) -> None:
    d, ids = closed_dir
    p = actorflow_cli("tasks", "list", "--json", data_dir=d)  # the console script itself, once
    assert p.returncode == 0, p.stderr
    rows = json_lines(p.stdout)
    assert {r["execution_id"]: r["state"] for r in rows} == {ids["ok"]: "succeeded", ids["bad"]: "failed", ids["later"]: "queued"}
    assert [r["execution_id"] for r in rows] == [ids["later"], ids["bad"], ids["ok"]]  # newest first
    by_id = {r["execution_id"]: r for r in rows}
    assert by_id[ids["ok"]]["status"] == {"type": "TaskSucceeded", "execution_id": ids["ok"], "output": {"thumb": "cat.png.small"}}
    assert by_id[ids["bad"]]["status"]["message"] == "cannot decode broken.png"

    failed, tagged, limited, none, table, later, bad, letters, letters_table, scheds, scheds_table = cli_batch(
        d,
        ("tasks", "list", "--state", "failed", "--json"),
        ("tasks", "list", "--tag", "user:7", "--json"),
        ("tasks", "list", "--name", "resize", "--limit", "2", "--json"),
        ("tasks", "list", "--name", "tick", "--json"),
        ("tasks", "list"),
        ("tasks", "show", ids["later"], "--json"),
        ("tasks", "show", ids["bad"]),
        ("dead-letters", "--json"),
        ("dead-letters",),
        ("schedules", "list", "--json"),
        ("schedules", "list"),
    )
    assert all(p.returncode == 0 for p in (failed, tagged, limited, none, table, later, bad, letters, scheds)), [p.stderr for p in (failed, later)]
    assert [r["execution_id"] for r in json_lines(failed.stdout)] == [ids["bad"]]
    assert [r["execution_id"] for r in json_lines(tagged.stdout)] == [ids["ok"]]
    assert [r["execution_id"] for r in json_lines(limited.stdout)] == [ids["later"], ids["bad"]]
    assert json_lines(none.stdout) == []
    assert ids["bad"] in table.stdout and "cannot decode broken.png" in table.stdout and "3 matching" in table.stdout

    shown = json.loads(later.stdout)
    assert shown["state"] == "queued" and shown["input"] == {"image": "dog.png"}
    assert shown["options"]["delay"] == 3600 and shown["options"]["priority"] == 3 and shown["attempts"] == 0
    assert "error: cannot decode broken.png" in bad.stdout and "tasks requeue" in bad.stdout

    [letter] = json_lines(letters.stdout)
    assert letter["execution_id"] == ids["bad"] and letter["task"] == "resize" and letter["input"] == {"image": "broken.png"}
    assert letter["error"] == "cannot decode broken.png" and letter["attempts"] == 1
    assert "1 dead letters" in letters_table.stdout

    [sched] = json_lines(scheds.stdout)
    assert sched["name"] == "tick" and sched["every"] == 3600 and sched["input"] == {"ops": 1} and sched["catch_up"] is False
    assert sched["next_slot"] > time.time() + 3000
    assert "every 60.0 min" in scheds_table.stdout


def test_errors_and_a_requeue_without_engine(closed_dir: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    d, ids = closed_dir
    got = cli_batch(d, ("tasks", "show", "nope"), ("tasks", "cancel", "nope"), ("tasks", "requeue", "nope"),
                    ("tasks", "list", "--state", "bogus"), ("tasks", "requeue", ids["ok"]), ("tasks", "cancel", ids["ok"]), ("tasks",),
                    ("dead-letters", "--data-dir", str(tmp_path / "missing")),
                    # no engine holds the directory: a requeue waits in the control inbox, once
                    ("tasks", "requeue", ids["bad"], "--json"), ("tasks", "show", ids["bad"], "--json"), ("tasks", "requeue", ids["bad"]))
    assert got[0].stderr.strip().startswith("actorflow: no task execution with id 'nope'"), got[0].stderr
    for p in got[:3]:
        assert p.returncode == 3 and "no task execution with id 'nope'" in p.stderr and "actorflow tasks list" in p.stderr
    assert got[3].returncode == 2 and "unknown task state 'bogus'" in got[3].stderr
    assert got[4].returncode == 4 and "is succeeded, not a dead letter" in got[4].stderr
    assert got[5].returncode == 4 and "has already ended (succeeded); nothing to cancel" in got[5].stderr
    assert got[6].returncode == 2
    missing = got[7]
    assert missing.returncode == 3 and "no actorflow data directory" in missing.stderr
    assert not (tmp_path / "missing").exists()
    first, shown, again = got[8:]
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["state"] == "queued"
    assert json.loads(shown.stdout)["pending_commands"][0]["kind"] == "requeue"
    assert again.returncode == 4 and "already waiting for the engine" in again.stderr


def test_cancel_and_requeue_through_a_live_engine(served_dir: tuple[Path, dict[str, str]]) -> None:
    d, ids = served_dir
    cancel, cancelled, requeue = cli_batch(d, ("tasks", "cancel", ids["later"], "--json"), ("tasks", "show", ids["later"], "--json"),
                                           ("tasks", "requeue", ids["bad"], "--json"))
    assert cancel.returncode == 0, cancel.stderr
    out = json.loads(cancel.stdout)
    assert out["state"] == "applied" and out["engine_pid"] > 0, out
    assert json.loads(cancelled.stdout)["state"] == "cancelled"

    assert requeue.returncode == 0, requeue.stderr
    out = json.loads(requeue.stdout)
    assert out["state"] == "applied", out
    new_id = out["new_execution_id"]
    assert new_id and new_id != ids["bad"]
    new, old, letters, again = cli_batch(d, ("tasks", "show", new_id, "--json"), ("tasks", "show", ids["bad"], "--json"),
                                         ("dead-letters", "--json"), ("tasks", "requeue", ids["bad"]))
    shown = json.loads(new.stdout)
    assert shown["task"] == "resize" and shown["input"] == {"image": "broken.png"} and shown["options"]["tags"] == ["user:8"]
    assert json.loads(old.stdout)["requeued_as"] == new_id
    assert ids["bad"] not in [x["execution_id"] for x in json_lines(letters.stdout)]
    assert again.returncode == 4 and f"already requeued as {new_id!r}" in again.stderr
