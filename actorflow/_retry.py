"""Retry policies for steps and tasks: how many attempts, how long between them, what not to retry."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try; `delay(n)` is the wait before retry number n (n >= 1)."""

    max_attempts: int = 1
    kind: str = "none"
    initial_delay: float = 0.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: bool = False
    non_retryable: tuple[type[BaseException], ...] = ()
    delay_for_attempt: Callable[[int], float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # checked here, not when a step fails: a policy that only breaks on its first use would
        # surface far from the code that made it
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy max_attempts must be an int >= 1, got {self.max_attempts!r}", argument="max_attempts")
        delay_name = "delay" if self.kind == "linear" else "initial_delay"
        _check_seconds(self.initial_delay, delay_name)
        _check_seconds(self.max_delay, "max_delay")
        if not _is_number(self.multiplier) or not math.isfinite(self.multiplier) or self.multiplier < 1:
            raise ConfigError(f"RetryPolicy multiplier must be a finite number >= 1, got {self.multiplier!r}", argument="multiplier")
        if not isinstance(self.jitter, bool):
            raise ConfigError(f"RetryPolicy jitter must be True or False, got {self.jitter!r}", argument="jitter")
        if self.kind not in ("none", "exponential", "linear", "custom"):
            raise ConfigError(f"RetryPolicy kind must be none/exponential/linear/custom, got {self.kind!r}", argument="kind")
        if self.kind == "custom" and not callable(self.delay_for_attempt):
            raise ConfigError(
                "RetryPolicy.custom delay_for_attempt must be a callable taking the retry number and "
                f"returning seconds, got {self.delay_for_attempt!r}",
                argument="delay_for_attempt",
            )
        nr = self.non_retryable
        if isinstance(nr, type):  # one exception class where a tuple was meant
            object.__setattr__(self, "non_retryable", nr := (nr,))
        if not isinstance(nr, tuple) or not all(isinstance(t, type) and issubclass(t, BaseException) for t in nr):
            raise ConfigError(
                f"RetryPolicy non_retryable must be a tuple of exception classes, got {nr!r}",
                argument="non_retryable",
            )

    @classmethod
    def exponential(
        cls,
        max_attempts: int = 3,
        initial_delay: float = 1.0,
        max_delay: float = 300.0,
        multiplier: float = 2.0,
        jitter: bool = True,
        non_retryable: tuple[type[BaseException], ...] = (),
    ) -> RetryPolicy:
        return cls(max_attempts, "exponential", initial_delay, max_delay, multiplier, jitter, _as_tuple(non_retryable))

    @classmethod
    def linear(
        cls,
        max_attempts: int,
        delay: float,
        jitter: bool = True,
        max_delay: float = 300.0,
        non_retryable: tuple[type[BaseException], ...] = (),
    ) -> RetryPolicy:
        return cls(max_attempts, "linear", delay, max_delay, 1.0, jitter, _as_tuple(non_retryable))

    @classmethod
    def custom(
        cls,
        max_attempts: int,
        delay_for_attempt: Callable[[int], float],
        non_retryable: tuple[type[BaseException], ...] = (),
        max_delay: float = 300.0,
    ) -> RetryPolicy:
        return cls(max_attempts, "custom", 0.0, max_delay, 1.0, False, _as_tuple(non_retryable), delay_for_attempt)

    @classmethod
    def none(cls) -> RetryPolicy:
        return _NONE

    def delay(self, n: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `n` (1 = the first retry)."""
        if n < 1:
            raise ValueError("retry numbers start at 1")
        if self.kind == "exponential":
            base = self.initial_delay * self.multiplier ** (n - 1)
        elif self.kind == "custom" and self.delay_for_attempt is not None:
            got = self.delay_for_attempt(n)
            if not _is_number(got) or not math.isfinite(got) or got < 0:
                raise ConfigError(
                    f"retry policy's delay_for_attempt({n}) returned {got!r}; it must return seconds as a "
                    "finite number >= 0",
                    argument="delay_for_attempt",
                )
            base = float(got)
        else:
            base = self.initial_delay
        base = min(base, self.max_delay)
        if self.jitter:
            base *= 0.5 + 0.5 * rng()
        return base

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """After failed attempt number `attempt` (1-based): is another one allowed?"""
        if attempt >= self.max_attempts:
            return False
        return not (self.non_retryable and isinstance(error, self.non_retryable))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_seconds(value: Any, name: str) -> None:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"RetryPolicy {name} must be finite seconds >= 0, got {value!r}", argument=name)


def _as_tuple(value: Any) -> Any:
    """A tuple of the given exception classes; anything else is left for __post_init__ to refuse."""
    if isinstance(value, (list, set, frozenset)):
        return tuple(value)
    return value


_NONE = RetryPolicy()
