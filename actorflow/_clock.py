"""The clock every time-dependent part of actorflow reads, so tests can inject a MockClock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Clock", "SystemClock", "MockClock"]


class Clock:
    """Wall-clock seconds since the epoch, plus a way to wait that a mock clock can short-circuit."""

    jumps = False  # True for clocks that may jump ahead when the runtime idles

    def now(self) -> float:
        raise NotImplementedError

    def real_timeout(self, deadline: float | None) -> float | None:
        """How long (real seconds) to block before `deadline` (clock seconds) may have passed."""
        if deadline is None:
            return None
        return max(0.0, deadline - self.now())

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Ask to be woken when the clock jumps (only mock clocks jump)."""

    def idle(self, next_deadline: float | None) -> bool:
        """The runtime has nothing to do before `next_deadline`; a mock clock may jump there."""
        return False


class SystemClock(Clock):
    """The real wall clock."""

    now = staticmethod(time.time)  # read ~17 times per workflow: no Python frame in between


class MockClock(Clock):
    """A clock that moves only when told (`advance`, `jump_to`) or, with `autojump`, when the runtime idles."""

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = False) -> None:
        self._now = float(start)
        self.autojump = autojump
        self.jumps = autojump
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("cannot move a clock backwards")
        self.jump_to(self._now + seconds)

    def jump_to(self, when: float) -> None:
        with self._lock:
            if when > self._now:
                self._now = when
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def real_timeout(self, deadline: float | None) -> float | None:
        if deadline is not None and deadline <= self._now:
            return 0.0
        return None  # block until woken: time only moves by advance() or autojump

    def subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.append(wake)

    def idle(self, next_deadline: float | None) -> bool:
        if self.autojump and next_deadline is not None and next_deadline > self._now:
            with self._lock:
                self._now = next_deadline
            return True
        return False
