"""Retry policies for steps and tasks: how many attempts, how long between them, what not to retry."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

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
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigError("retry delays must not be negative")
        if self.multiplier < 1:
            raise ConfigError(f"multiplier must be >= 1, got {self.multiplier}")

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
        return cls(max_attempts, "exponential", initial_delay, max_delay, multiplier, jitter, tuple(non_retryable))

    @classmethod
    def linear(
        cls,
        max_attempts: int,
        delay: float,
        jitter: bool = True,
        max_delay: float = 300.0,
        non_retryable: tuple[type[BaseException], ...] = (),
    ) -> RetryPolicy:
        return cls(max_attempts, "linear", delay, max_delay, 1.0, jitter, tuple(non_retryable))

    @classmethod
    def custom(
        cls,
        max_attempts: int,
        delay_for_attempt: Callable[[int], float],
        non_retryable: tuple[type[BaseException], ...] = (),
        max_delay: float = 300.0,
    ) -> RetryPolicy:
        return cls(max_attempts, "custom", 0.0, max_delay, 1.0, False, tuple(non_retryable), delay_for_attempt)

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
            base = float(self.delay_for_attempt(n))
            if base < 0:
                raise ConfigError(f"custom retry delay for attempt {n} is negative ({base})")
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


_NONE = RetryPolicy()
