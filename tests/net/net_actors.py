"""Actors for the secured-transport tests (a module of its own so spawned processes can import it)."""

from __future__ import annotations

import os
from typing import Any

from thespian.actors import Actor


class Echo(Actor):  # type: ignore[misc]
    """Answers ("echo", msg); "pid" -> its process id; ("batch", n) -> a list of n tuples."""

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        if message == "pid":
            self.send(sender, os.getpid())
        elif isinstance(message, tuple) and message[:1] == ("batch",):
            self.send(sender, [(i, "x") for i in range(message[1])])
        elif isinstance(message, tuple) and message[:1] == ("relay",):
            # actor -> actor across processes: ask a child of ours and pass its answer back
            child = self.createActor(Echo)
            self.send(child, ("reply-to", sender, message[1]))
        elif isinstance(message, tuple) and message[:1] == ("reply-to",):
            self.send(message[1], ("relayed", message[2], os.getpid()))
        elif isinstance(message, str | int | bytes):
            self.send(sender, ("echo", message))
