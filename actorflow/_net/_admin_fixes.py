"""Two defects of Thespian's admin, worked around where actorflow's transport runs in the admin process.

When a creation the admin was asked for fails (no member of the convention has the capabilities a
step worker or a node-owned shard requires: the shard asks again every second while its step
waits), Thespian's admin appends a ChildActorExited from the would-be child's local address to its
receive queue. Only actors ever drain that queue, never the admin, so:
- the queue grew by one entry per failed creation for the admin's whole life, and
- every status reply lists that queue, and a local address cannot be pickled, so the admin dropped
  every status reply from the first failed creation on: the convention's members, `engine.workers()`
  and `actorflow admin status` timed out, and a lost node's rejoin went unnoticed.

`forget_failed_creations` (installed in the admin process only) drops what such a failure queued;
`portable_status` sends a status reply with any address that cannot cross a process as its name
(the transport's fallback, should anything else leave one there).
"""

from __future__ import annotations

from typing import Any

from thespian.actors import ActorAddress
from thespian.system.addressManager import CannotPickleAddress
from thespian.system.messages.status import Thespian_ActorStatus, Thespian_SystemStatus

__all__ = ["STATUS_TYPES", "forget_failed_creations", "portable_status"]


def forget_failed_creations(admin_class: type) -> None:
    """Make `admin_class` drop what a failed creation appends to its never-read receive queue."""
    original = getattr(admin_class, "_retryPendingChildOperations")  # noqa: B009 - a Thespian private
    if getattr(original, "_actorflow_fix", False):
        return

    def retry(self: Any, childInstance: Any, actualAddress: Any) -> None:  # noqa: N803 - Thespian's names
        queued = len(self._receiveQueue)
        original(self, childInstance, actualAddress)
        if not actualAddress:  # a failure: its notices would sit in the queue forever
            del self._receiveQueue[queued:]

    retry._actorflow_fix = True  # type: ignore[attr-defined]
    setattr(admin_class, "_retryPendingChildOperations", retry)  # noqa: B010 - a Thespian private


STATUS_TYPES = (Thespian_SystemStatus, Thespian_ActorStatus)


def portable_status(status: Any) -> Any:
    """A copy of a Thespian status reply whose addresses that cannot cross a process are their names."""
    copy = object.__new__(type(status))
    for name, value in vars(status).items():
        if isinstance(value, list):
            value = [_portable(item) for item in value]
        setattr(copy, name, _portable(value))
    return copy


def _portable(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_portable(v) for v in value)
    if isinstance(value, ActorAddress):
        try:
            value.__getstate__()
        except CannotPickleAddress:
            return str(value)
    return value
