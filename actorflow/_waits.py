"""Commands that wait on the outside world: durable sleeps, signals (with timeouts) and child runs."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from storage._journal import check_run_id

from ._messages import DisarmTimer
from ._saga import failure_text
from .errors import Cancelled, RunConflict, WaitTimeout, WorkflowFailed

if TYPE_CHECKING:
    from ._context import Command
    from ._run import Run

__all__ = ["cmd_sleep", "cmd_wait", "on_signal", "try_deliver", "cmd_child", "on_child_done", "child_outcome"]


def cmd_sleep(run: Run, name: str, seconds: float) -> Command:
    """A durable timer: journaled due time plus an entry in the timer index."""
    cmd, evs = run._next("sleep", name)
    if evs:
        if any(ev.kind == "timer_fired" for ev in evs):
            run._done(cmd)
            return cmd
        cmd.due = evs[0].data
    else:
        cmd.due = run.clock_now() + seconds
        run._append("timer_started", name, cmd.pos, cmd.due)
        run.host.batch.put_timer(cmd.due, run.run_id, cmd.pos, "sleep")
    run.pending[cmd.pos] = cmd
    run._arm(cmd.due, cmd.pos, "sleep", durable=True, cmd=cmd)
    return cmd


def cmd_wait(run: Run, name: str, timeout: float | None) -> Command:
    """The next signal of `name` from the run's inbox; a timeout is a durable timer too."""
    cmd, evs = run._next("signal", name)
    cmd.spec = timeout
    for ev in evs or ():
        if ev.kind == "signal_received":
            run.seen_signals.add(ev.data["seq"])
            run._done(cmd, ev.data["payload"])
            return cmd
        if ev.kind == "wait_timeout":
            run._done(cmd, None, WaitTimeout(run.run_id, name, timeout or 0.0))
            return cmd
        cmd.due = ev.data
    run.pending[cmd.pos] = cmd
    run.waits.setdefault(name, []).append(cmd)
    if run.inbox.get(name):
        try_deliver(run, name)
        return cmd
    if timeout is not None and not evs:
        cmd.due = run.clock_now() + timeout
        run._append("wait_started", name, cmd.pos, cmd.due)
        run.host.batch.put_timer(cmd.due, run.run_id, cmd.pos, "wait")
    if cmd.due is not None:
        run._arm(cmd.due, cmd.pos, "wait", durable=True, cmd=cmd)
    return cmd


def on_signal(run: Run, name: str, seq: int, payload: Any) -> None:
    """A signal reached the inbox (each inbox seq is taken once)."""
    if seq in run.seen_signals:
        return
    run.seen_signals.add(seq)
    bisect.insort(run.inbox.setdefault(name, []), (seq, payload), key=lambda s: s[0])
    try_deliver(run, name)


def try_deliver(run: Run, name: str) -> None:
    """Hand inbox entries to waits in order: journal the receipt, drop the inbox entry and timeout."""
    waits = run.waits.get(name)
    box = run.inbox.get(name)
    while waits and box:
        cmd = waits.pop(0)
        seq, payload = box.pop(0)
        run._append("signal_received", name, cmd.pos, {"payload": payload, "seq": seq})
        run.host.batch.del_signal(run.run_id, name, seq)
        if cmd.due is not None:
            run.host.batch.del_timer(cmd.due, run.run_id, cmd.pos)
            run.host.send_timer(DisarmTimer(cmd.due, run.run_id, cmd.pos, "wait"))
        run._resolve(cmd, payload)


def cmd_child(run: Run, wf: Any, args: tuple[Any, ...], run_id: str | None) -> Command:
    """Start (or, on replay, re-attach to) a child run and wait for its outcome."""
    name = run.host.rt.workflow_name(wf)
    cmd, evs = run._next("child", name)
    if evs:
        child_id = evs[0].data["run_id"]
        for ev in evs[1:]:
            child_outcome(run, cmd, ev.kind, ev.data, resolve=False)
            return cmd
    else:
        child_id = run_id if run_id is not None else f"{run.run_id}/{cmd.pos}"
        check_run_id(child_id)
        # refused here, in the parent's code, before anything is journaled: a child whose arguments
        # do not load back could never start
        copy = run.host.rt.codec.roundtrip(args, f"arguments of child workflow {name!r}")
        run._append("child_started", name, cmd.pos, {"run_id": child_id})
        run.host.create_child(run, cmd, child_id, name, args, tuple(copy))
    cmd.spec = child_id
    run.pending[cmd.pos] = cmd
    run.host.watch(child_id, run.run_id, cmd.pos)
    return cmd


def on_child_done(run: Run, pos: int, kind: str, data: Any) -> None:
    """A child finished: journal its outcome at the waiting position."""
    cmd = run.pending.get(pos)
    if cmd is None or cmd.kind != "child":
        return
    run._append(kind, cmd.name, pos, data)
    child_outcome(run, cmd, kind, data, resolve=True)


def child_outcome(run: Run, cmd: Command, kind: str, data: Any, resolve: bool) -> None:
    """Resolve the child command with the child's result or the matching error."""
    done = run._resolve if resolve else run._done
    if kind == "child_completed":
        done(cmd, data)
    elif data.get("cancelled"):
        done(cmd, None, Cancelled(data.get("run_id", ""), "child run was cancelled"))
    elif data.get("conflict"):
        done(cmd, None, RunConflict(data["run_id"], data["conflict"], cmd.name))
    else:
        err = WorkflowFailed(data.get("run_id", ""), failure_text(data))
        if data.get("exc") is not None:
            err.__cause__ = data["exc"]
        done(cmd, None, err)
