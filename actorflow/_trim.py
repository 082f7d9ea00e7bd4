"""Give freed memory back to the OS after a passivation wave (glibc `malloc_trim`).

After a burst - one `start_many` of a million sleepers, a crowd of timers firing at once - the run
machines of each cohort are freed when their runs passivate, but glibc keeps the freed chunks in
its malloc arenas (one per thread that allocated: the caller's thread that built the batch, the
hosts' threads that built the run machines), so process RSS stays at the burst's level. Measured
at 200,000 runs (benchmarks/results/burst-gap.md): most of the one-call vs waves gap in anonymous
memory was such freed memory. `malloc_trim(0)` returns the free top of every arena and the free
whole pages inside them.

It is called when runs left memory in a wave (a housekeeping round or a make-room eviction that
passivated at least `WAVE` runs, not a trickle), at most once per `MIN_INTERVAL` seconds per
process; a wave that came too soon after the last trim is trimmed at a later housekeeping round
(so the burst's last wave, the one that sets the settled RSS, is never skipped) (it walks every arena under their locks: a few
ms per hundred MB). Where the C library is not glibc (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
import time
from collections.abc import Callable

__all__ = ["MIN_INTERVAL", "WAVE", "MemoryTrimmer", "glibc_trim", "trimmer"]

MIN_INTERVAL = 1.0  # seconds between two trims in one process (one costs ~5 ms at 300 MB: <= 0.5% CPU)
WAVE = 2_000  # runs passivated in one round that count as a wave (a trickle is not worth a trim)


def glibc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)` as a callable, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


class MemoryTrimmer:
    """Decides when a passivation wave is big enough, and late enough after the last, to trim."""

    def __init__(
        self,
        trim: Callable[[], object] | None,
        *,
        wave: int = WAVE,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if wave < 1:
            raise ValueError(f"wave must be >= 1, got {wave!r}")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval!r}")
        self._trim = trim
        self.wave = wave
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last = float("-inf")
        self.pending = False  # a wave came within min_interval of the last trim: trim later
        self.trims = 0  # how many times memory was trimmed (Engine hosts share one process-wide trimmer)
        self.seconds = 0.0  # CPU-wall time spent in trim calls (its cost; benchmarks report it)

    def passivated(self, n: int) -> bool:
        """`n` runs just left memory in one round (0: a housekeeping round with none, which still
        trims a wave held back by the rate limit): trim if due; True if trimmed."""
        if self._trim is None or (n < self.wave and not self.pending):
            return False
        with self._lock:  # hosts run on their own threads: one trim at a time, rate-limited
            now = self._clock()
            if now - self._last < self.min_interval:
                self.pending = True
                return False
            self._last = now
            self.pending = False
            t0 = time.perf_counter()
            self._trim()
            self.seconds += time.perf_counter() - t0
            self.trims += 1
        return True


trimmer = MemoryTrimmer(glibc_trim())  # process-wide: malloc arenas are per process, not per host
