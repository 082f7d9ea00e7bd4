"""RunHandle: a cheap reference to one run, and the ids of runs started without one."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._types import Event, RunStatus

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import Facade

__all__ = ["RunHandle", "new_run_id"]


_ids = random.Random()  # seeded once from os.urandom; a urandom call per start costs a GIL round trip
_ids_lock = threading.Lock()
_last = [0, 0]  # [unix ms, counter] of the last id: ids of one process are strictly increasing


def new_run_id() -> str:
    """A time-ordered (version 7, RFC 9562) UUID for a run started without an explicit id.

    Runs started together sit side by side in every journal index, so a commit touches few B-tree
    pages and the pages fill up (a third less journal than random ids), and listings come out in
    start order. Layout: 48-bit unix ms, version, 12-bit counter within the ms, variant, 62 random bits.
    """
    ms = time.time_ns() // 1_000_000  # wall time only orders ids; it is never replayed
    with _ids_lock:
        last_ms, counter = _last
        if ms <= last_ms:  # same millisecond, or the wall clock stepped back: keep counting up
            ms, counter = (last_ms, counter + 1) if counter < 0xFFF else (last_ms + 1, 0)
        else:
            counter = 0
        _last[0], _last[1] = ms, counter
        rand = _ids.getrandbits(62)
    h = f"{(ms << 80) | (0x7 << 76) | (counter << 64) | (0x2 << 62) | rand:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # str(uuid.UUID(int=...)), minus its checks


class RunHandle:
    """A reference to one run; cheap to create, valid across engine restarts."""

    __slots__ = ("engine", "run_id", "_fresh")

    def __init__(self, engine: Engine, run_id: str, _fresh: tuple[Facade, int] | None = None) -> None:
        self.engine = engine
        self.run_id = run_id
        self._fresh = _fresh  # set by the start that created the run: result() may skip a journal read

    def result(self, timeout: float | None = None) -> Any:
        return self.engine._result(self.run_id, timeout, self._fresh)

    async def aresult(self, timeout: float | None = None) -> Any:
        return await self.engine._aresult(self.run_id, timeout, self._fresh)

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
