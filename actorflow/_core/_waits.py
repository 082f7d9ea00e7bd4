"""Commands that wait on the outside world: durable sleeps, signals (with timeouts) and child runs."""

from __future__ import annotations

import bisect
from typing import Any

from storage._journal import check_run_id

from .._context import Command
from .._messages import CancelRun, CreateChild, DisarmTimer, WatchChild
from ..errors import Cancelled, RunConflict, WaitTimeout, WorkflowFailed
from ._completion import CREATE_CHILD, CREATE_ELSEWHERE, DEL_SIGNAL, DEL_TIMER, DISARM, PUT_TIMER, SEND
from ._state import RunState, failure_text

__all__ = ["Waits"]


class Waits(RunState):
    __slots__ = ()

    def cmd_sleep(self, name: str, seconds: float) -> Command:
        """A durable timer: journaled due time plus an entry in the timer index."""
        cmd, evs = self._next("sleep", name)
        if evs:
            if any(ev.kind == "timer_fired" for ev in evs):
                self._done(cmd)
                return cmd
            cmd.due = evs[0].data
        else:
            cmd.due = self.env.now() + seconds
            self._append("timer_started", name, cmd.pos, cmd.due)
            self.ops.append((PUT_TIMER, cmd.due, cmd.pos, "sleep"))
        self.pending[cmd.pos] = cmd
        self._arm(cmd.due, cmd.pos, "sleep", durable=True, cmd=cmd)
        return cmd

    def cmd_wait(self, name: str, timeout: float | None) -> Command:
        """The next signal of `name` from the run's inbox; a timeout is a durable timer too."""
        cmd, evs = self._next("signal", name)
        cmd.spec = timeout
        for ev in evs or ():
            if ev.kind == "signal_received":
                self.seen_signals.add(ev.data["seq"])
                self._done(cmd, ev.data["payload"])
                return cmd
            if ev.kind == "wait_timeout":
                self._done(cmd, None, WaitTimeout(self.run_id, name, timeout or 0.0))
                return cmd
            cmd.due = ev.data
        self.pending[cmd.pos] = cmd
        self.waits.setdefault(name, []).append(cmd)
        if self.inbox.get(name):
            self._try_deliver(name)
            return cmd
        if timeout is not None and not evs:
            cmd.due = self.env.now() + timeout
            self._append("wait_started", name, cmd.pos, cmd.due)
            self.ops.append((PUT_TIMER, cmd.due, cmd.pos, "wait"))
        if cmd.due is not None:
            self._arm(cmd.due, cmd.pos, "wait", durable=True, cmd=cmd)
        return cmd

    def on_signal(self, name: str, seq: int, payload: Any) -> None:
        """A signal reached the inbox (each inbox seq is taken once)."""
        if seq in self.seen_signals:
            return
        self.seen_signals.add(seq)
        bisect.insort(self.inbox.setdefault(name, []), (seq, payload), key=lambda s: s[0])
        self._try_deliver(name)

    def _try_deliver(self, name: str) -> None:
        """Hand inbox entries to waits in order: journal the receipt, drop the inbox entry and timeout."""
        waits = self.waits.get(name)
        box = self.inbox.get(name)
        while waits and box:
            cmd = waits.pop(0)
            seq, payload = box.pop(0)
            self._append("signal_received", name, cmd.pos, {"payload": payload, "seq": seq})
            self.ops.append((DEL_SIGNAL, name, seq))
            if cmd.due is not None:
                self.ops.append((DEL_TIMER, cmd.due, cmd.pos))
                self.ops.append((DISARM, DisarmTimer(cmd.due, self.run_id, cmd.pos, "wait")))
            self._resolve(cmd, payload)

    def cmd_child(self, wf: Any, args: tuple[Any, ...], run_id: str | None) -> Command:
        """Start (or, on replay, re-attach to) a child run and wait for its outcome."""
        name = self.env.workflow_name(wf)
        cmd, evs = self._next("child", name)
        if evs:
            child_id = evs[0].data["run_id"]
            for ev in evs[1:]:
                self._child_outcome(cmd, ev.kind, ev.data, resolve=False)
                return cmd
        else:
            child_id = run_id if run_id is not None else f"{self.run_id}/{cmd.pos}"
            check_run_id(child_id)
            # refused here, in the parent's code, before anything is journaled: a child whose arguments
            # do not load back could never start
            copy = self.env.codec.roundtrip(args, f"arguments of child workflow {name!r}")
            elsewhere = self.env.elsewhere
            if elsewhere is not None and elsewhere(child_id):
                # its owner journals it: asked to create it first, child_started once it answered
                # (on_child_created); a replay before that asks again, and finds "that run"
                cmd.spec = child_id
                cmd.inflight = True
                self.pending[cmd.pos] = cmd
                self.ops.append((CREATE_ELSEWHERE, CreateChild(child_id, name, tuple(copy), self.run_id, cmd.pos)))
                return cmd
            self._append("child_started", name, cmd.pos, {"run_id": child_id})
            self.ops.append((CREATE_CHILD, child_id, name, args, tuple(copy), cmd.pos))
        cmd.spec = child_id
        self.pending[cmd.pos] = cmd
        self.ops.append((SEND, WatchChild(child_id, self.run_id, cmd.pos)))
        return cmd

    def on_child_created(self, pos: int, child_id: str, conflict: str | None) -> None:
        """The owner of a child journaled elsewhere created it (or found it): journal child_started
        now, and watch it (or fail the command: its id belongs to another workflow)."""
        cmd = self.pending.get(pos)
        if cmd is None or cmd.kind != "child" or not cmd.inflight or cmd.spec != child_id:
            if cmd is None and self.cancelled:  # cancelled while it was being created: its CancelRun
                self.ops.append((SEND, CancelRun(child_id)))  # may have overtaken the creation
            return  # answered already (a repeated request's answer), or no longer waited on
        cmd.inflight = False
        self._append("child_started", cmd.name, pos, {"run_id": child_id})
        if conflict is not None:
            error = f"run id {child_id!r} belongs to workflow {conflict!r}"
            self.on_child_done(pos, "child_failed", {"run_id": child_id, "conflict": conflict, "error": error})
        else:
            self.ops.append((SEND, WatchChild(child_id, self.run_id, pos)))
        self._update_state()

    def on_child_done(self, pos: int, kind: str, data: Any) -> None:
        """A child finished: journal its outcome at the waiting position."""
        cmd = self.pending.get(pos)
        if cmd is None or cmd.kind != "child" or cmd.inflight:
            return  # (inflight: child_started is not journaled yet; its outcome comes again, watched)
        self._append(kind, cmd.name, pos, data)
        self._child_outcome(cmd, kind, data, resolve=True)

    def _child_outcome(self, cmd: Command, kind: str, data: Any, resolve: bool) -> None:
        """Resolve the child command with the child's result or the matching error."""
        done = self._resolve if resolve else self._done
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
