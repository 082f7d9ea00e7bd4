"""Supervision specs (strategy, intensity, backoff, children): plain validated data, no Thespian."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from actorflow.errors import ConfigError

__all__ = [
    "Strategy",
    "RestartType",
    "Backoff",
    "Intensity",
    "ChildSpec",
    "SupervisorSpec",
]

RestartType = Literal["permanent", "transient", "temporary"]
_RESTART_TYPES: tuple[str, ...] = get_args(RestartType)


def _config_error(message: str, **evidence: Any) -> ConfigError:
    """Build a ConfigError, importing it lazily: actorflow imports supervisors, so a top-level import would cycle."""
    from actorflow.errors import ConfigError

    return ConfigError(message, **evidence)


class Strategy(enum.Enum):
    """Which siblings share a failed child's fate (Erlang/OTP names)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


def _finite_number(value: Any, what: str) -> float:
    """Reject bools, non-numbers, NaN and infinities up front so specs fail where they are written."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _config_error(f"{what} must be a number, not {value!r}", field=what, value=value)
    if not math.isfinite(value):
        raise _config_error(f"{what} must be finite, not {value!r}", field=what, value=value)
    return float(value)


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart, growing geometrically with consecutive restarts so a flapping child cannot spin."""

    initial: float = 0.0
    multiplier: float = 2.0
    max: float = 30.0

    def __post_init__(self) -> None:
        initial = _finite_number(self.initial, "Backoff.initial")
        multiplier = _finite_number(self.multiplier, "Backoff.multiplier")
        maximum = _finite_number(self.max, "Backoff.max")
        if initial < 0:
            raise _config_error(f"Backoff.initial must be >= 0, not {initial}", field="Backoff.initial", value=initial)
        if multiplier < 1:
            raise _config_error(
                f"Backoff.multiplier must be >= 1, not {multiplier}", field="Backoff.multiplier", value=multiplier
            )
        if maximum < initial:
            raise _config_error(
                f"Backoff.max ({maximum}) must be >= Backoff.initial ({initial})", field="Backoff.max", value=maximum
            )

    def delay(self, n: int) -> float:
        """Seconds to wait before consecutive restart number n (n >= 1): initial * multiplier**(n-1), capped at max."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _config_error(f"restart number must be an int >= 1, not {n!r}", field="n", value=n)
        if self.initial == 0:
            return 0.0
        try:
            grown = self.initial * self.multiplier ** (n - 1)
        except OverflowError:
            return float(self.max)
        return float(min(grown, self.max))


@dataclass(frozen=True)
class Intensity:
    """Restart budget: more than max_restarts restarts within `within` seconds is no transient fault; escalate."""

    max_restarts: int = 3
    within: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise _config_error(
                f"Intensity.max_restarts must be an int >= 0, not {self.max_restarts!r}",
                field="Intensity.max_restarts",
                value=self.max_restarts,
            )
        within = _finite_number(self.within, "Intensity.within")
        if within <= 0:
            raise _config_error(f"Intensity.within must be > 0, not {within}", field="Intensity.within", value=within)


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)create one child: factory (an actor class), first message `init`, and restart type."""

    name: str
    factory: Any
    init: Any = None
    restart: RestartType = "permanent"
    # Thespian targetActorRequirements: the child is created in an admin of the convention whose
    # capabilities meet them (the factory's actorSystemCapabilityCheck decides); None: this admin
    requirements: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _config_error(f"child name must be a non-empty str, not {self.name!r}", field="name", value=self.name)
        if self.factory is None:
            raise _config_error(f"child {self.name!r} has no factory", field="factory", child=self.name)
        if self.restart not in _RESTART_TYPES:
            raise _config_error(
                f"child {self.name!r}: restart must be one of {', '.join(_RESTART_TYPES)}, not {self.restart!r}",
                field="restart",
                value=self.restart,
            )


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor's whole configuration; children start in list order and that order drives REST_FOR_ONE."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: Intensity = field(default_factory=Intensity)
    backoff: Backoff = field(default_factory=Backoff)
    children: Sequence[ChildSpec] = ()
    name: str = "supervisor"

    def __post_init__(self) -> None:
        strategy: Any = self.strategy
        if isinstance(strategy, str):
            try:
                strategy = Strategy(strategy.lower())
            except ValueError:
                raise _config_error(f"unknown strategy {strategy!r}", field="strategy", value=strategy) from None
            object.__setattr__(self, "strategy", strategy)
        if not isinstance(strategy, Strategy):
            raise _config_error(f"strategy must be a Strategy, not {strategy!r}", field="strategy", value=strategy)
        if not isinstance(self.intensity, Intensity):
            raise _config_error(f"intensity must be an Intensity, not {self.intensity!r}", field="intensity")
        if not isinstance(self.backoff, Backoff):
            raise _config_error(f"backoff must be a Backoff, not {self.backoff!r}", field="backoff")
        if not isinstance(self.name, str) or not self.name:
            raise _config_error(f"supervisor name must be a non-empty str, not {self.name!r}", field="name")
        if isinstance(self.children, (str, bytes)) or not isinstance(self.children, Sequence):
            raise _config_error("children must be a list of ChildSpec", field="children")
        children = tuple(self.children)
        seen: set[str] = set()
        for child in children:
            if not isinstance(child, ChildSpec):
                raise _config_error(f"children must be ChildSpec instances, not {child!r}", field="children")
            if child.name in seen:
                raise _config_error(f"duplicate child name {child.name!r}", field="children", child=child.name)
            seen.add(child.name)
        object.__setattr__(self, "children", children)

    def child(self, name: str) -> ChildSpec:
        """Look a child up by name, so callers need not scan the list."""
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)
