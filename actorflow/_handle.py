"""RunHandle: a cheap reference to one run, and the ids of runs started without one."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from ._types import Event, RunStatus

if TYPE_CHECKING:
    from ._engine import Engine
    from ._runtime import Facade

__all__ = ["RunHandle", "RunHandles", "new_run_id"]


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

    def __eq__(self, other: object) -> bool:
        """Two handles of one run in one engine are equal (start_many builds its handles on access)."""
        if not isinstance(other, RunHandle):
            return NotImplemented
        return self.run_id == other.run_id and self.engine is other.engine

    def __hash__(self) -> int:
        return hash(self.run_id)

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"


class RunHandles(Sequence[RunHandle]):
    """What `start_many` returns: a read-only list of handles, one per argument tuple, in order.

    A handle is built on access from its run id, kept packed: a million RunHandle objects and run
    id strings (~150 B a run) held by the caller while its burst runs are long-lived small blocks
    scattered through the pymalloc arenas of the burst's transient peak, and they keep those arenas
    (1 MiB each, freed only when wholly empty) after every run was passivated (issue 17). Ids of one
    commit group that are ASCII of one length (the generated ones) are one bytes object.
    """

    __slots__ = ("_engine", "_groups", "_starts", "_len")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # per commit group: (ids: packed bytes + width, or a tuple of str; the start's `fresh` or None;
        # indexes within the group of runs that already existed: their handle has no `fresh`)
        self._groups: list[tuple[bytes | tuple[str, ...], int, tuple[Facade, int] | None, frozenset[int]]] = []
        self._starts: list[int] = []
        self._len = 0

    def _add(self, ids: list[str], fresh: tuple[Facade, int] | None, existed: frozenset[int]) -> None:
        if not ids:
            return
        width = len(ids[0])
        packed: bytes | tuple[str, ...]
        if all(len(i) == width and i.isascii() for i in ids):
            packed, width = "".join(ids).encode("ascii"), width
        else:
            packed, width = tuple(ids), 0
        self._groups.append((packed, width, fresh, existed))
        self._starts.append(self._len)
        self._len += len(ids)

    def __len__(self) -> int:
        return self._len

    def _at(self, i: int) -> RunHandle:
        lo, hi = 0, len(self._starts)
        while hi - lo > 1:  # the group holding run i
            mid = (lo + hi) // 2
            if self._starts[mid] <= i:
                lo = mid
            else:
                hi = mid
        packed, width, fresh, existed = self._groups[lo]
        k = i - self._starts[lo]
        rid = packed[k] if isinstance(packed, tuple) else packed[k * width : (k + 1) * width].decode("ascii")
        return RunHandle(self._engine, rid, None if k in existed else fresh)

    @overload
    def __getitem__(self, index: int) -> RunHandle: ...

    @overload
    def __getitem__(self, index: slice) -> list[RunHandle]: ...

    def __getitem__(self, index: int | slice) -> RunHandle | list[RunHandle]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(self._len))]
        i = index.__index__()
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("start_many handle index out of range")
        return self._at(i)

    def __iter__(self) -> Iterator[RunHandle]:
        for (packed, width, fresh, existed) in self._groups:
            if isinstance(packed, tuple):
                for k, rid in enumerate(packed):
                    yield RunHandle(self._engine, rid, None if k in existed else fresh)
            else:
                for k in range(len(packed) // width):
                    rid = packed[k * width : (k + 1) * width].decode("ascii")
                    yield RunHandle(self._engine, rid, None if k in existed else fresh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (RunHandles, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __repr__(self) -> str:
        return f"RunHandles({len(self)} runs)"
