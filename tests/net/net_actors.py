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


class ConventionWatcher(Actor):  # type: ignore[misc]
    """Subscribes to convention changes; "members" -> [(admin address, capabilities subset, added)]."""

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        from thespian.actors import ActorSystemConventionUpdate

        if message == "watch":
            self.events: list[tuple[str, Any, bool]] = []
            self.notifyOnSystemRegistrationChanges(True)
            self.send(sender, "watching")
        elif isinstance(message, ActorSystemConventionUpdate):
            caps = {k: v for k, v in (message.remoteCapabilities or {}).items() if k.startswith("actorflow")}
            self.events.append((str(message.remoteAdminAddress), caps, bool(message.remoteAdded)))
        elif message == "members":
            self.send(sender, list(getattr(self, "events", [])))


class WhereAmI(Actor):  # type: ignore[misc]
    """Needs the actorflow.worker capability: created on a worker's admin. Answers its pid and admin port."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:  # noqa: N802
        return bool(capabilities.get("actorflow.worker"))

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        if message == "where":
            self.send(sender, (os.getpid(), self.myAddress.addressDetails.sockname[1]))
