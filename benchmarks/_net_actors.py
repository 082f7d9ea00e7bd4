"""Actors for benchmarks/net_transport.py (a module of their own: actor processes import them by name)."""

from __future__ import annotations

import time
from typing import Any

from thespian.actors import Actor


class Sink(Actor):  # type: ignore[misc]
    """Acknowledges every message with its item count."""

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        if isinstance(message, tuple) and message[:1] == ("item",):
            self.send(sender, ("ack", len(message[1]) if isinstance(message[1], list) else 1))


class Driver(Actor):  # type: ignore[misc]
    """("run", sink, rounds, batch): ping-pongs `rounds` messages of `batch` items (1: a bare tuple) with
    `sink`, actor to actor, then tells the asker the elapsed seconds."""

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        if isinstance(message, tuple) and message[:1] == ("run",):
            _, self.sink, self.rounds, batch = message
            self.asker, self.done, self.started = sender, 0, time.perf_counter()
            self.payload = ("item", [(i, "x" * 8) for i in range(batch)] if batch > 1 else (0, "x" * 8))
            self.send(self.sink, self.payload)
        elif isinstance(message, tuple) and message[:1] == ("ack",):
            self.done += 1
            if self.done < self.rounds:
                self.send(self.sink, self.payload)
            else:
                self.send(self.asker, time.perf_counter() - self.started)
