"""RunHandle: a cheap reference to one run, and the ids of runs started without one."""

from __future__ import annotations

import random
import threading
import uuid
from typing import TYPE_CHECKING, Any, Iterator

from ._types import Event, RunStatus

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["RunHandle", "new_run_id"]


_ids = random.Random()  # seeded once from os.urandom; a urandom call per start costs a GIL round trip
_ids_lock = threading.Lock()


def new_run_id() -> str:
    """A random (version 4) UUID for a run started without an explicit id."""
    with _ids_lock:
        bits = _ids.getrandbits(128)
    return str(uuid.UUID(int=bits, version=4))


class RunHandle:
    """A reference to one run; cheap to create, valid across engine restarts."""

    __slots__ = ("engine", "run_id")

    def __init__(self, engine: "Engine", run_id: str) -> None:
        self.engine = engine
        self.run_id = run_id

    def result(self, timeout: float | None = None) -> Any:
        return self.engine.result(self.run_id, timeout)

    async def aresult(self, timeout: float | None = None) -> Any:
        return await self.engine.aresult(self.run_id, timeout)

    def status(self) -> RunStatus:
        return self.engine.status(self.run_id)

    def signal(self, name: str, payload: Any = None) -> None:
        self.engine.signal(self.run_id, name, payload)

    def cancel(self) -> bool:
        return self.engine.cancel(self.run_id)

    def monitor(self) -> Iterator[RunStatus]:
        return self.engine.monitor(self.run_id)

    def history(self) -> list[Event]:
        return self.engine.history(self.run_id)

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"
