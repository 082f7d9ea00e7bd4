"""How a run ends: cancellation, saga compensation in reverse order, completion, and blocking."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from ._messages import CancelRun
from .errors import Cancelled, NondeterminismError, PayloadError

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["request_cancel", "deliver_cancel", "complete", "fail", "on_comp_result", "block", "describe_error", "failure_text"]


def describe_error(exc: BaseException) -> str:
    """`Type: message` of an exception, as journals and errors show it."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_text(data: dict[str, Any]) -> str:
    """The error text of a failed/cancelled run's final event, with its failed compensations."""
    error = str(data.get("error", "?"))
    comp = data.get("compensation_errors")
    if comp:
        error += f" (compensation failed: {'; '.join(comp)})"
    return error


def request_cancel(run: Run) -> bool:
    """Journal the cancel request and raise Cancelled at the awaited operation; False if already over."""
    if run.phase != "running":
        return run.phase == "compensating"
    if run.cancelled:
        return True
    pos = run.awaiting.pos if run.awaiting is not None else run.pos
    run._append("cancel_requested", "", pos, None)
    deliver_cancel(run)
    if run.awaiting is not None and run.awaiting.done:
        run.awaiting = None
        run._drive()
    return True


def deliver_cancel(run: Run) -> None:
    """Resolve every pending operation with Cancelled (late step results are then discarded)."""
    run.cancelled = True
    for cmd in list(run.pending.values()):
        if cmd.kind == "step" and cmd.inflight:
            cmd.inflight = False
            run.steps_inflight -= 1
        elif cmd.kind in ("sleep", "signal") and cmd.due is not None:
            run.host.batch.del_timer(cmd.due, run.run_id, cmd.pos)
        elif cmd.kind == "child":
            run.host.send_run(CancelRun(cmd.spec))
        run._done(cmd, None, Cancelled(run.run_id))
    run.waits.clear()


def complete(run: Run, value: Any) -> None:
    """The workflow returned: journal its (serializable) result."""
    try:
        run._append("run_completed", "", -1, value)
    except PayloadError as exc:
        fail(run, exc)
        return
    finish(run, "completed", value, None)


def fail(run: Run, exc: BaseException, cancelled: bool = False) -> None:
    """The workflow raised or was cancelled: compensate completed steps in reverse order, then end."""
    run.phase = "compensating"
    run.final = ("cancelled" if cancelled else "failed", exc)
    run.record.state = "running"
    run.comp_queue = [c for c in reversed(run.comps)]
    next_compensation(run)


def next_compensation(run: Run) -> None:
    """Dispatch the next compensation not yet journaled, or journal the run's end."""
    while run.comp_queue:
        seq, pos, name, fn = run.comp_queue.pop(0)
        done = run.comp_done.get(pos)
        if done is not None:
            if done.kind == "compensation_failed":
                run.comp_errors.append(f"{name}: {done.data['error']}")
            continue
        run.host.dispatch_step(run, pos, name, 1, fn, "comp")
        return
    assert run.final is not None
    state, exc = run.final
    data = run._exc_data(exc)
    if run.comp_errors:
        data["compensation_errors"] = list(run.comp_errors)
    error = failure_text(data)
    run._append("run_cancelled" if state == "cancelled" else "run_failed", "", -1, data)
    finish(run, state, None, error, data)


def on_comp_result(run: Run, pos: int, ok: bool, payload: Any) -> None:
    """Journal one compensation's outcome (failures are recorded and reported, not swallowed)."""
    if run.phase != "compensating":
        return
    name = next((c[2] for c in run.comps if c[1] == pos), "")
    if ok:
        run._append("compensation_completed", name, pos, None)
    else:
        run._append("compensation_failed", name, pos, {"error": describe_error(payload), "tb": "".join(traceback.format_exception(payload))[-2000:]})
        run.comp_errors.append(f"{name}: {describe_error(payload)}")
    next_compensation(run)


def finish(run: Run, state: str, value: Any, error: str | None, data: Any = None) -> None:
    """Set the final state and hand the outcome to the host (released once durable)."""
    run.phase = "finished"
    run.record.state = state
    run.record.error = error
    if state == "completed":
        run.record.progress = 1.0
    run.host.mark_dirty(run)
    run.host.finished(run, state, value, data)


def block(run: Run, err: NondeterminismError) -> None:
    """Replay diverged: hold the run `blocked` with the evidence, running no more of its code."""
    run.phase = "blocked"
    for cmd in run.pending.values():
        cmd.inflight = False
    run.pending.clear()
    run.steps_inflight = 0
    run._append("run_blocked", "", -1, {"error": str(err), "seq": err.seq, "expected": err.expected, "recorded": err.recorded})
    run.record.state = "blocked"
    run.record.error = str(err)
    run.host.mark_dirty(run)
    run.host.blocked_run(run)
