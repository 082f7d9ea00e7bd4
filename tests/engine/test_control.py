"""The control inbox: commands written by another process reach the engine that holds the directory."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine, RunFinished, RunNotFound
from actorflow import _control as control
from actorflow.errors import ConfigError, PayloadError
from storage import LmdbJournal

from .conftest import TIMEOUT, wait_until

SERVICE = Path(__file__).resolve().parents[1] / "dashboard" / "service.py"


def _waiter(engine: Engine) -> None:
    @engine.workflow(name="hold")
    async def hold(ctx: Any) -> Any:
        return await ctx.wait_signal("go")


def test_a_command_queued_while_no_engine_runs_is_applied_at_the_next_open(tmp_path: Path, new_engine: Callable[..., Engine]) -> None:
    e1 = new_engine(tmp_path, sync=False, open=False)
    _waiter(e1)
    with e1:
        e1.start("hold", run_id="h1")
        e1.start("hold", run_id="h2")
        wait_until(lambda: e1.status("h1").state.value == "waiting" and e1.status("h2").state.value == "waiting")
    with LmdbJournal(tmp_path) as j:  # what the dashboard or a CLI does with no engine on the dir
        sig = control.submit_signal(j, "h1", "go", {"n": 1})
        can = control.submit_cancel(j, "h2")
        assert [c.id for c in control.pending(j)] == [sig.id, can.id]
        assert control.outcome(j, sig.id) is None
    e2 = new_engine(tmp_path, sync=False, open=False)
    _waiter(e2)
    e2.open()
    assert e2.result("h1", timeout=TIMEOUT) == {"n": 1}
    wait_until(lambda: e2.status("h2").state.value == "cancelled", what="h2 cancelled")
    wait_until(lambda: control.outcome(e2.journal, can.id) is not None, what="cancel outcome")  # type: ignore[arg-type]
    j2 = e2.journal
    assert j2 is not None and control.pending(j2) == []
    got = {o.id: o for o in control.outcomes(j2)}
    assert got[sig.id].ok and got[sig.id].kind == "signal" and got[sig.id].run_id == "h1"
    assert got[can.id].ok and got[can.id].detail == "cancelled"
    # exactly once: the signal was consumed once and nothing is left in the run's inbox
    assert [ev.kind for ev in e2.history("h1")].count("signal_received") == 1


def test_bad_commands_are_refused_before_anything_is_written(tmp_path: Path, new_engine: Callable[..., Engine]) -> None:
    e = new_engine(tmp_path, sync=False, open=False)
    _waiter(e)

    @e.workflow(name="quick")
    async def quick(ctx: Any) -> int:
        return 1

    with e:
        e.start("hold", run_id="h")
        assert e.run("quick", run_id="done", timeout=TIMEOUT) == 1
    with LmdbJournal(tmp_path) as j:
        marker = j.change_marker()
        with pytest.raises(RunNotFound):
            control.submit_signal(j, "nope", "go")
        with pytest.raises(RunFinished):
            control.submit_signal(j, "done", "go")
        with pytest.raises(RunFinished):
            control.submit_cancel(j, "done")
        with pytest.raises(ConfigError, match="signal name"):
            control.submit_signal(j, "h", "")
        with pytest.raises(PayloadError):
            control.submit_signal(j, "h", "go", threading.Lock())  # cannot be pickled
        assert j.change_marker() == marker and control.pending(j) == []


def test_a_signal_for_a_run_that_finished_meanwhile_is_recorded_as_refused(tmp_path: Path, new_engine: Callable[..., Engine]) -> None:
    e = new_engine(tmp_path, sync=False, open=False)
    _waiter(e)
    with e:
        e.start("hold", run_id="h")
        wait_until(lambda: e.status("h").state.value == "waiting")
    with LmdbJournal(tmp_path) as j:
        first = control.submit_signal(j, "h", "go", 1)
        late = control.submit_signal(j, "h", "go", 2)  # the run ends with the first: this one is too late
    e2 = new_engine(tmp_path, sync=False, open=False)
    _waiter(e2)
    e2.open()
    assert e2.result("h", timeout=TIMEOUT) == 1
    j2 = e2.journal
    assert j2 is not None
    wait_until(lambda: control.outcome(j2, late.id) is not None, what="both outcomes")
    assert control.outcome(j2, first.id).ok  # type: ignore[union-attr]
    # the second was journaled into the inbox before the run finished, or refused after: never lost silently
    late_out = control.outcome(j2, late.id)
    assert late_out is not None and control.pending(j2) == []


def test_a_live_engine_in_another_process_applies_signal_and_cancel(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, str(SERVICE), str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        with LmdbJournal(data) as j:  # the engine holds the dir: only the journal is open here
            with pytest.raises(ConfigError, match="another engine"):
                Engine(data).open()
            sig = control.submit_signal(j, "order-1", "approve", True, source="test")
            can = control.submit_cancel(j, "hold-1")

            def settled() -> bool:
                a, b = j.get_run("order-1"), j.get_run("hold-1")
                return a is not None and b is not None and a.state == "completed" and b.state == "cancelled"

            wait_until(settled, what="the live engine applied both commands")
            assert j.events("order-1")[-1].data == {"payment": "payment-order-1", "stock": "held widget", "approved": True}
            wait_until(lambda: control.outcome(j, can.id) is not None, what="cancel outcome")
            assert control.outcome(j, sig.id).ok and control.outcome(j, can.id).ok  # type: ignore[union-attr]
            assert control.pending(j) == []
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
