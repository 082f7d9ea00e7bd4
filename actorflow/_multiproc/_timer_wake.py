"""A shard's timers fire through its actor's Thespian `wakeupAfter`: one wakeup, for the earliest due time.

In a shard process the timer actor (`TimerActor`, the same wheel as the embedded engine's) runs in
the shard's in-process actor system, on whichever thread holds the pump lock. The embedded pump
reads the wheel's next due time from a shared variable and ticks the wheel itself; a shard instead
hands that time to its Thespian actor, which asks Thespian to wake it then and posts the tick. So the
timer is a message from the actor system, as the design card says, and a shard's pump thread only
moves work that other threads hand over.

Thespian's `wakeupAfter` may only be called on the actor's own thread and cannot be cancelled.
`TimerWakeups` keeps at most one wakeup *current*:

- `due(when)`, from any thread: the wheel's next due time changed; says whether the actor must be
  woken to arm an earlier wakeup than the one pending (the caller writes the shard's wake pipe);
- `arm(now)`, on the actor's thread: the wakeup to request, unless the current one is due at that
  time or earlier (many arms and disarms of later timers cost nothing);
- `fired(wake)`, on the actor's thread: whether this wakeup is the current one. A superseded one (it
  was pending for a later time when an earlier timer came) is ignored; the current one is cleared,
  so the next `arm` requests a wakeup for whatever is due next - also when the tick found nothing
  due (a wakeup a hair early, a disarmed timer): that tick publishes the same due time again.
"""

from __future__ import annotations

import math
import threading

from .._messages import message

__all__ = ["TimerWake", "TimerWakeups"]


@message
class TimerWake:
    """The payload of a shard's timer wakeup: which arming it is (only the latest counts)."""

    seq: int


class TimerWakeups:
    """The shard actor's timer wakeup state (see the module docstring); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = math.inf  # the wheel's next due time, as last published
        self._armed = math.inf  # the due time of the current pending wakeup (inf: none pending)
        self._seq = 0

    def due(self, when: float) -> bool:
        """Record the wheel's next due time; True if an earlier wakeup than the pending one is needed."""
        with self._lock:
            self._due = when
            return when < self._armed

    def arm(self, now: float) -> tuple[float, TimerWake] | None:
        """(delay in seconds, payload) of the wakeup to request now, or None if none is needed."""
        with self._lock:
            due = self._due
            if due >= self._armed:  # also when nothing is due (inf)
                return None
            self._armed = due
            self._seq += 1
            return max(0.0, due - now), TimerWake(self._seq)

    def fired(self, wake: TimerWake) -> bool:
        """Whether `wake` is the current wakeup (the actor then ticks the wheel); clears it if so."""
        with self._lock:
            if wake.seq != self._seq or self._armed == math.inf:
                return False
            self._armed = math.inf
            return True

    @property
    def armed(self) -> float:
        """The due time of the current pending wakeup (inf: none)."""
        return self._armed
