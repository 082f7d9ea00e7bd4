"""The timer wheel behind durable sleeps, signal timeouts, step retries and step timeouts."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._messages import ArmTimer, DisarmTimer

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["TimerService"]


class TimerService:
    """A heap of the timers due within `horizon`; durable ones beyond it stay only in the journal.

    Durable timers (sleeps, wait timeouts) live in the journal's timers index; this service loads
    the window [now, now + horizon) and refills it as time passes, so a million far-off sleepers
    cost no memory here. In-memory timers (retry delays, step timeouts) are always kept.
    """

    def __init__(self, rt: Runtime, horizon: float = 30.0, owns: Callable[[str], bool] | None = None) -> None:
        self.rt = rt
        self.horizon = horizon
        self._owns = owns  # durable timers of the journal's index that are this process's (None: all)
        self._heap: list[tuple[float, str, int, Any]] = []
        self._keys: set[tuple[float, str, int, Any]] = set()
        self._disarmed: set[tuple[float, str, int, Any]] = set()
        self.loaded_until = 0.0

    def start(self, now: float) -> None:
        # from the start of the index: timers that fell due while the engine was down fire late, never lost
        self.loaded_until = 0.0
        self._refill(now)

    def _refill(self, now: float) -> None:
        until = now + self.horizon
        owns = self._owns
        for due, run_id, pos, _data in self.rt.journal.timers(until, start=self.loaded_until):
            if owns is None or owns(run_id):
                self._push((due, run_id, pos, _durable_tag(_data)))
        self.loaded_until = until

    def _push(self, key: tuple[float, str, int, Any]) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        heapq.heappush(self._heap, key)

    def handle(self, msg: ArmTimer | DisarmTimer) -> None:
        key = (msg.due, msg.run_id, msg.pos, msg.tag)
        if type(msg) is ArmTimer:
            if msg.durable and msg.due >= self.loaded_until:
                return  # still in the journal index; loaded when the window reaches it
            self._disarmed.discard(key)
            self._push(key)
        elif key in self._keys:
            self._disarmed.add(key)

    def tick(self, now: float, limit: int = 2000) -> list[tuple[str, int, Any]]:
        """Pop up to `limit` timers due at `now` (a crowd is fired in chunks that commit as they go)."""
        if now + self.horizon / 2 >= self.loaded_until:
            self._refill(now)
        fired: list[tuple[str, int, Any]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(fired) < limit:
            key = heapq.heappop(heap)
            self._keys.discard(key)
            if key in self._disarmed:
                self._disarmed.discard(key)
                continue
            fired.append((key[1], key[2], key[3]))
        return fired

    def next_due(self) -> float:
        """When the actor must be ticked next: the earliest timer, or the next window refill."""
        refill_at = self.loaded_until - self.horizon / 2
        return min(self._heap[0][0], refill_at) if self._heap else refill_at

    def earliest(self) -> float | None:
        """The earliest timer anywhere (heap or journal): where a mock clock may jump when idle."""
        if self._heap:
            return self._heap[0][0]
        ahead = self.rt.journal.timers(float("inf"), start=self.loaded_until, limit=1)
        return ahead[0][0] if ahead else None

    def __len__(self) -> int:
        return len(self._heap)


def _durable_tag(data: Any) -> str:
    # journaled timers carry their kind ("sleep" or "wait"); the default is a sleep
    return data if isinstance(data, str) else "sleep"
