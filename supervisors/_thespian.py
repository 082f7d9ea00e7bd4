"""Supervision on Thespian: the only module here that speaks Thespian's camelCase actor API."""

from __future__ import annotations

import time
import traceback
from datetime import timedelta
from typing import Any

import structlog
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
)

from ._core import Decision, SupervisorCore
from ._messages import (
    REPLY_TO,
    ChildExited,
    ChildFailed,
    ChildRestarted,
    Escalated,
    GetChildren,
    Respawn,
    Supervise,
    Supervising,
    _Init,
    _RestartDue,
    _SpawnFailed,
)
from ._strategy import SupervisorSpec

__all__ = ["SupervisedActor", "SupervisorActor"]

_log = structlog.get_logger("supervisors")

# messages that receiveMessage does not pass straight to handle()
_LIFECYCLE = (ActorExitRequest, _Init, WakeupMessage)

# A wakeup may fire a hair early on some bases; restarts due within this slack go now.
_DUE_SLACK = 0.002


class SupervisedActor(Actor):  # type: ignore[misc]
    """Base for supervised actors: turns any exception into a ChildFailed report instead of Thespian's retry+poison."""

    # Thespian sets `_myRef` and `_receive` on every actor instance: subclasses must not use those names.

    def __init__(self) -> None:
        super().__init__()
        self.name: str = type(self).__name__
        self.supervisor: ActorAddress | None = None
        self._dead = False
        self._started = False
        # Multiproc bases do not order messages across senders: work may overtake the supervisor's init.
        self._early: list[tuple[Any, ActorAddress]] = []
        self.sends = 0  # messages this actor has sent (a direct caller of deliver() flushes them)

    # -- to override ---------------------------------------------------------------------------

    def on_start(self, init: Any) -> None:
        """Called with ChildSpec.init after every (re)creation; raise to report a failed start."""

    def handle(self, message: Any, sender: ActorAddress) -> None:
        """Called for every ordinary message; raise to report a failure to the supervisor."""

    def on_wakeup(self, payload: Any) -> None:
        """Called when a `wakeup_after` timer fires."""

    def on_stop(self) -> None:
        """Called when the actor is asked to exit (by its supervisor or anyone); release resources here."""

    # -- helpers -------------------------------------------------------------------------------

    def create_actor(self, cls: Any) -> ActorAddress:
        """Create a child actor of this actor (not supervised by the supervisor)."""
        return self.createActor(cls)

    def wakeup_after(self, seconds: float, payload: Any = None) -> None:
        """Have `on_wakeup(payload)` called after `seconds` (cannot be cancelled; lives only in memory)."""
        self.wakeupAfter(timedelta(seconds=seconds), payload)

    def exit_normally(self, reason: str = "normal") -> None:
        """Finish on purpose: the supervisor stops this actor and restarts it only if it is permanent."""
        self._dead = True
        if self.supervisor is not None:
            self.send(self.supervisor, ChildExited(self.name, reason))
        else:
            self.send(self.myAddress, ActorExitRequest())

    def send(self, targetAddr: Any, msg: Any) -> None:  # noqa: N803 - Thespian's signature
        self.sends += 1
        super().send(targetAddr, msg)

    def deliver(self, message: Any) -> bool:
        """Handle `message` by a direct call, bypassing the actor system's dispatch (embedded use).

        Only for a caller that alone drives a simpleSystemBase and has no message for this actor
        pending in it (so arrival order holds). Failures are reported as for any message. Returns
        whether the actor sent anything meanwhile: the caller must then let the system run (any
        tell) so those messages, a failure report included, are delivered."""
        before = self.sends
        if self._started and not self._dead and not isinstance(message, _LIFECYCLE):
            # what receiveMessage would do for it, without its dispatch (a step's result arrives here)
            try:
                self.handle(message, None)
            except Exception as exc:
                self._fail(exc)
        else:
            self.receiveMessage(message, None)
        return self.sends != before

    @property
    def accepting(self) -> bool:
        """Started and not failed: messages are handled (else queued or dropped, see receiveMessage)."""
        return self._started and not self._dead

    @property
    def failed(self) -> bool:
        """True after a failure or exit_normally: further messages are dropped until the supervisor replaces us."""
        return self._dead

    # -- Thespian entry point ------------------------------------------------------------------

    def watch_fds(self) -> list[int]:
        """File descriptors whose readiness should reach `handle` as a WatchMessage (multiproc bases:
        how a thread of the actor's process wakes it without a message)."""
        return []

    def receiveMessage(self, message: Any, sender: ActorAddress) -> Any:
        """Dispatch to the snake_case hooks, catching every failure so the supervisor hears about it."""
        self._on_message(message, sender)
        fds = self.watch_fds()
        return ThespianWatch(fds) if fds else None

    def _on_message(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ActorExitRequest):
            try:
                self.on_stop()
            except Exception:
                _log.exception("supervised_actor_stop_failed", actor=self.name)
            return
        if self._dead:
            _log.debug("supervised_actor_dropped_message", actor=self.name, message=repr(message)[:200])
            return
        if isinstance(message, _Init):
            if self._started:
                _log.warning("supervised_actor_duplicate_init", actor=self.name)
            else:
                self._start(message, sender)
        elif not self._started:
            self._early.append((message, sender))
        else:
            self._deliver(message, sender)

    def _start(self, init: _Init, sender: ActorAddress) -> None:
        """Run on_start, then the messages that overtook the init, in arrival order."""
        self.name = init.name
        self.supervisor = sender
        self._started = True
        try:
            self.on_start(init.init)
        except Exception as exc:
            self._early.clear()
            self._fail(exc)
            return
        early, self._early = self._early, []
        for message, origin in early:
            if self._dead:
                break
            self._deliver(message, origin)

    def _deliver(self, message: Any, sender: ActorAddress) -> None:
        """Call the hook for one message; any exception becomes a ChildFailed report."""
        try:
            if isinstance(message, WakeupMessage):
                self.on_wakeup(message.payload)
            else:
                self.handle(message, sender)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """Stop processing and report the failure to the supervisor (Thespian would only poison the sender)."""
        self._dead = True
        error = repr(exc)
        trace = traceback.format_exc()
        _log.error("supervised_actor_failed", actor=self.name, error=error, traceback=trace)
        if self.supervisor is None:
            return
        try:
            self.send(self.supervisor, ChildFailed(self.name, error, trace))
        except Exception:
            _log.exception("supervised_actor_report_failed", actor=self.name)


class SupervisorActor(Actor):  # type: ignore[misc]
    """Starts children from a SupervisorSpec and restarts them by strategy, backoff and intensity (OTP-style)."""

    def __init__(self) -> None:
        super().__init__()
        self._core: SupervisorCore | None = None
        self._name = "supervisor"
        self._listener: ActorAddress | None = None
        self._parent: ActorAddress | None = None
        self._addresses: dict[str, ActorAddress] = {}
        self._stopping: list[ActorAddress] = []
        # name -> (due monotonic time, error, failed child)
        self._pending: dict[str, tuple[float, str, str]] = {}
        self._escalated = False
        self._exiting = False

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        """Route one message; a bug in here escalates instead of letting Thespian retry and poison."""
        if self._exiting:
            return
        try:
            self._dispatch(message, sender)
        except Exception as exc:
            _log.exception("supervisor_internal_error", supervisor=self._name)
            if not self._escalated:
                self._escalate("<supervisor>", f"supervisor internal error: {exc!r}")

    def _dispatch(self, message: Any, sender: ActorAddress) -> None:
        """The message dispatch proper."""
        if isinstance(message, ActorExitRequest):
            self._exiting = True  # Thespian stops the children with us (recursive exit)
        elif isinstance(message, _Init):
            self._parent = sender
            self._name = message.name
            if not isinstance(message.init, Supervise):
                raise TypeError(f"nested SupervisorActor {message.name!r} needs a Supervise init, got {message.init!r}")
            self._start(message.init, reply_to=None)
        elif isinstance(message, Supervise):
            self._start(message, reply_to=sender)
        elif isinstance(message, GetChildren):
            self.send(sender, Supervising(self._snapshot()))
        elif isinstance(message, ChildFailed):
            self._from_child(sender, message.error, normal_exit=False)
        elif isinstance(message, ChildExited):
            self._from_child(sender, message.reason, normal_exit=True)
        elif isinstance(message, Escalated):
            error = f"supervisor {message.supervisor_name!r} escalated ({message.child!r} failed: {message.error})"
            self._from_child(sender, error, normal_exit=False)
        elif isinstance(message, ChildActorExited):
            self._child_exited(message.childAddress)
        elif isinstance(message, Respawn):
            self._respawn(message)
        elif isinstance(message, WakeupMessage):
            if isinstance(message.payload, _RestartDue):
                self._restart_due()
        elif isinstance(message, _SpawnFailed):
            if sender == self.myAddress and message.name not in self._addresses:
                self._on_failure(message.name, message.error, normal_exit=False)
        elif isinstance(message, PoisonMessage):
            _log.warning("supervisor_message_poisoned", supervisor=self._name, message=str(message)[:500])
        elif isinstance(message, Supervising):
            pass  # a nested supervisor's reply; nothing to do
        else:
            _log.warning("supervisor_unknown_message", supervisor=self._name, message=repr(message)[:200])

    # -- start ---------------------------------------------------------------------------------

    def _start(self, request: Supervise, reply_to: ActorAddress | None) -> None:
        """Create every child in spec order, then answer with their addresses."""
        if self._core is not None:
            _log.warning("supervisor_already_started", supervisor=self._name)
        else:
            if not isinstance(request.spec, SupervisorSpec):
                raise TypeError(f"Supervise.spec must be a SupervisorSpec, got {request.spec!r}")
            if self._parent is None:
                self._name = request.spec.name
            self._listener = reply_to if request.listener == REPLY_TO else request.listener
            self._core = SupervisorCore(request.spec, time.monotonic)
            for child in request.spec.children:
                self._spawn(child.name)
        if reply_to is not None:
            self.send(reply_to, Supervising(self._snapshot()))

    def _spawn(self, name: str) -> ActorAddress | None:
        """Create one child and send it its init; a createActor error comes back as a budgeted failure."""
        assert self._core is not None
        child = self._core.spec.child(name)
        try:
            if child.requirements is None:
                address = self.createActor(child.factory)
            else:
                address = self.createActor(child.factory, targetActorRequirements=child.requirements)
        except Exception as exc:
            _log.error("supervisor_spawn_failed", supervisor=self._name, child=name, error=repr(exc))
            self.send(self.myAddress, _SpawnFailed(name, f"could not create child: {exc!r}"))
            return None
        self._addresses[name] = address
        self.send(address, _Init(name, child.init))
        return address

    def _snapshot(self) -> dict[str, ActorAddress]:
        """Live children's addresses in start order (restarts must not reorder what callers see)."""
        order = self._core.children if self._core is not None else ()
        return {name: self._addresses[name] for name in order if name in self._addresses}

    # -- failures ------------------------------------------------------------------------------

    def _name_of(self, address: ActorAddress) -> str | None:
        """Which current child lives at `address` (None for strangers and stale incarnations)."""
        for name, current in self._addresses.items():
            if current == address:
                return name
        return None

    def _from_child(self, sender: ActorAddress, error: str, normal_exit: bool) -> None:
        """A report from a child: act only if it comes from a current incarnation."""
        name = self._name_of(sender)
        if name is None:
            _log.debug("supervisor_ignored_stale_report", supervisor=self._name, sender=str(sender))
            return
        self._on_failure(name, error, normal_exit)

    def _child_exited(self, address: ActorAddress) -> None:
        """Thespian says a child is gone: expected if we stopped it, a crash (dead process) otherwise."""
        for index, stopped in enumerate(self._stopping):
            if stopped == address:
                del self._stopping[index]
                return
        name = self._name_of(address)
        if name is not None:
            del self._addresses[name]  # already gone: nothing to stop
            self._on_failure(name, "child actor exited unexpectedly (process died or creation failed)", False)

    def _on_failure(self, name: str, error: str, normal_exit: bool) -> None:
        """Ask the core what to do and carry it out."""
        core = self._core
        if core is None or self._escalated or not core.is_active(name):
            return
        decision = core.on_failure(name, error, normal_exit)
        _log.warning(
            "supervisor_child_failed",
            supervisor=self._name,
            child=name,
            error=error,
            normal_exit=normal_exit,
            stop=list(decision.stop),
            restart=list(decision.restart),
            delay=decision.delay,
            escalate=decision.escalate,
        )
        if decision.escalate:
            self._escalate(name, error)
            return
        self._apply(decision)

    def _apply(self, decision: Decision) -> None:
        """Stop the chosen children now; restart them now or after the backoff delay."""
        for name in decision.stop:
            self._stop_child(name)
        for name in decision.removed:
            self._pending.pop(name, None)
        due = time.monotonic() + decision.delay
        for name in decision.restart:
            self._pending[name] = (due, decision.error, decision.child)
        if not decision.restart:
            return
        if decision.delay <= 0:
            self._restart_due()
        else:
            self.wakeupAfter(timedelta(seconds=decision.delay), _RestartDue())

    def _stop_child(self, name: str) -> None:
        """Ask a child to exit and remember that its ChildActorExited is expected."""
        address = self._addresses.pop(name, None)
        if address is not None:
            self._stopping.append(address)
            self.send(address, ActorExitRequest())

    def _respawn(self, request: Respawn) -> None:
        """Create `request.name` again now (see Respawn); a bad name or an escalated supervisor: logged."""
        if self._core is None or self._escalated:
            _log.warning("supervisor_respawn_ignored", supervisor=self._name, child=request.name)
            return
        try:
            self._core.respawn(request.name)
        except ValueError as exc:
            _log.warning("supervisor_respawn_refused", supervisor=self._name, child=request.name, error=str(exc))
            return
        self._pending.pop(request.name, None)
        self._stop_child(request.name)  # its ChildActorExited, if it ever comes, is expected
        address = self._spawn(request.name)
        if address is not None and self._listener is not None:
            restarts = self._core.restart_count(request.name)
            self.send(self._listener, ChildRestarted(request.name, address, restarts, request.reason, request.name))

    def _restart_due(self) -> None:
        """Recreate, in start order, every pending child whose backoff has elapsed; re-arm for the rest."""
        if self._core is None or self._escalated:
            return
        now = time.monotonic()
        for name in self._core.children:
            entry = self._pending.get(name)
            if entry is None or entry[0] > now + _DUE_SLACK:
                continue
            del self._pending[name]
            _, error, failed_child = entry
            address = self._spawn(name)
            if address is not None and self._listener is not None:
                restarts = self._core.restart_count(name)
                self.send(self._listener, ChildRestarted(name, address, restarts, error, failed_child))
        if self._pending:
            wait = max(0.0, min(due for due, _, _ in self._pending.values()) - now)
            self.wakeupAfter(timedelta(seconds=wait), _RestartDue())

    def _escalate(self, child: str, error: str) -> None:
        """Stop every child and pass the failure to the listener and to a supervising parent."""
        self._escalated = True
        self._pending.clear()
        start_order = [c.name for c in self._core.spec.children] if self._core is not None else []
        for name in reversed(start_order + [n for n in self._addresses if n not in start_order]):
            self._stop_child(name)
        _log.error("supervisor_escalated", supervisor=self._name, child=child, error=error)
        notice = Escalated(self._name, child, error)
        if self._listener is not None:
            self.send(self._listener, notice)
        if self._parent is not None and self._parent != self._listener:
            self.send(self._parent, notice)
