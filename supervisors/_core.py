"""Supervision decisions as a pure state machine (clock injected), so strategies are testable without actors."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._strategy import Strategy, SupervisorSpec

__all__ = ["Decision", "SupervisorCore"]


@dataclass(frozen=True)
class Decision:
    """What a supervisor must do about one child failure; the actor layer only carries it out."""

    child: str
    error: str
    stop: tuple[str, ...] = ()
    """Children to stop, in the order to stop them (reverse start order, as OTP does)."""
    restart: tuple[str, ...] = ()
    """Children to recreate after `delay`, in start order."""
    removed: tuple[str, ...] = ()
    """Children dropped for good (temporary ones, or transient ones that exited normally)."""
    delay: float = 0.0
    """Backoff seconds to wait between stopping and restarting."""
    escalate: bool = False
    """True when the restart budget is spent: stop everything and tell the parent."""


class SupervisorCore:
    """Tracks children in start order and restart history, and decides stop/restart/escalate per failure."""

    def __init__(self, spec: SupervisorSpec, clock: Callable[[], float]) -> None:
        self._spec = spec
        self._clock = clock
        self._order: list[str] = [child.name for child in spec.children]
        self._history: deque[float] = deque()
        self._restarts: dict[str, int] = {name: 0 for name in self._order}
        self._streak: dict[str, int] = {}
        self._resumed_at: dict[str, float] = {}
        self._escalated = False

    @property
    def spec(self) -> SupervisorSpec:
        """The spec this core enforces."""
        return self._spec

    @property
    def children(self) -> tuple[str, ...]:
        """Names of the children still supervised, in start order."""
        return tuple(self._order)

    @property
    def escalated(self) -> bool:
        """True once the restart budget was exceeded; the core then decides nothing more."""
        return self._escalated

    def is_active(self, name: str) -> bool:
        """Whether `name` is still supervised (not removed, not escalated away)."""
        return name in self._order

    def restart_count(self, name: str) -> int:
        """How many times `name` has been restarted since the supervisor started."""
        return self._restarts.get(name, 0)

    def recent_restarts(self) -> int:
        """Restarts inside the current intensity window (for introspection and tests)."""
        self._prune(self._clock())
        return len(self._history)

    def on_failure(self, name: str, error: str, normal_exit: bool = False) -> Decision:
        """Decide what to do now that child `name` failed (or exited normally, if `normal_exit`)."""
        if self._escalated:
            return Decision(child=name, error=error, escalate=True)
        if name not in self._order:
            raise ValueError(f"child {name!r} is not supervised (known: {', '.join(self._order) or 'none'})")
        restart_type = self._spec.child(name).restart
        if restart_type == "temporary" or (restart_type == "transient" and normal_exit):
            self._order.remove(name)
            return Decision(child=name, error=error, stop=(name,), removed=(name,))

        now = self._clock()
        self._prune(now)
        if len(self._history) >= self._spec.intensity.max_restarts:
            return self._escalate(name, error)
        self._history.append(now)

        affected = self._affected(name)
        restart = tuple(c for c in affected if self._spec.child(c).restart != "temporary")
        removed = tuple(c for c in affected if c not in restart)
        for child in restart:
            self._restarts[child] += 1
        self._order = [c for c in self._order if c not in removed]

        delay = self._next_delay(name, now)
        return Decision(
            child=name,
            error=error,
            stop=tuple(reversed(affected)),
            restart=restart,
            removed=removed,
            delay=delay,
        )

    def respawn(self, name: str) -> None:
        """Child `name` is to be created again on request (not a failure: no budget spent); a child
        removed after a normal exit is supervised again, in its start-order place."""
        if self._escalated:
            raise ValueError("the supervisor escalated: it supervises nothing")
        names = [child.name for child in self._spec.children]
        if name not in names:
            raise ValueError(f"child {name!r} is not in the spec (known: {', '.join(names) or 'none'})")
        if name not in self._order:
            self._order = [c for c in names if c in self._order or c == name]
        self._restarts[name] += 1

    def _affected(self, name: str) -> tuple[str, ...]:
        """The children a failure of `name` takes down, in start order, per the strategy."""
        strategy = self._spec.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            return (name,)
        if strategy is Strategy.ONE_FOR_ALL:
            return tuple(self._order)
        index = self._order.index(name)
        return tuple(self._order[index:])

    def _next_delay(self, name: str, now: float) -> float:
        """Backoff grows per consecutive restart of `name` and resets once it ran quietly for a whole window."""
        resumed = self._resumed_at.get(name)
        streak = self._streak.get(name, 0)
        if resumed is None or now - resumed > self._spec.intensity.within:
            streak = 0
        streak += 1
        self._streak[name] = streak
        delay = self._spec.backoff.delay(streak)
        self._resumed_at[name] = now + delay
        return delay

    def _escalate(self, name: str, error: str) -> Decision:
        """Give up: everything stops, nothing restarts, and the failure goes up a level."""
        self._escalated = True
        everyone = tuple(self._order)
        self._order = []
        return Decision(
            child=name,
            error=error,
            stop=tuple(reversed(everyone)),
            removed=everyone,
            escalate=True,
        )

    def _prune(self, now: float) -> None:
        """Forget restarts older than the intensity window."""
        within = self._spec.intensity.within
        while self._history and now - self._history[0] >= within:
            self._history.popleft()
