"""Pin glibc's mmap threshold so a long-running engine's freed memory does not pile up in its arenas.

glibc serves a block of 128 KiB or more with its own mmap, and gives it back to the kernel on free -
until the first such block is freed: then it raises the threshold to that block's size (up to 32 MiB)
and the trim threshold to twice that, so later blocks of up to a few MB (the tables of the engine's
large dicts - outcome cache, journal caches - reallocated as they churn) come from the per-thread
malloc arenas instead. An engine runs its work on dozens of threads, which glibc spreads over up to
8 arenas per core; each of them keeps its share of those blocks' freed memory, fragmented by small
blocks allocated in between. In the soak (issue 18) that free memory grew from 4 MB to 59-67 MB over
25 minutes (750,000 units of work) while the bytes in use stayed at ~20 MB and Python's own heap was
flat: anonymous RSS +64 MB, not returned by `malloc_trim(0)`. With the threshold pinned at its
default (128 KiB), large blocks always go to mmap and back, and glibc's free memory stays ~2 MB.

`mallopt(M_MMAP_THRESHOLD, ...)` is process-wide; a host (or its operator) that tunes these thresholds
itself in the environment (`MALLOC_MMAP_THRESHOLD_` and kin, or in `GLIBC_TUNABLES`) is left alone:
setting any of them already stops glibc's sliding threshold.
"""

from __future__ import annotations

import ctypes
import os
import threading

__all__ = ["pin_mmap_threshold"]

_M_MMAP_THRESHOLD = -3  # <malloc.h>
_THRESHOLD = 128 * 1024  # glibc's default, fixed instead of sliding up
_HOST_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_HOST_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                  "glibc.malloc.mmap_max")
_lock = threading.Lock()
_done: list[bool] = []


def pin_mmap_threshold() -> bool:
    """Pin the threshold once per process (glibc only); True if this process's threshold is pinned."""
    with _lock:
        if _done:
            return _done[0]
        pinned = False
        tunables = os.environ.get("GLIBC_TUNABLES", "")
        if not any(k in os.environ for k in _HOST_ENV) and not any(t in tunables for t in _HOST_TUNABLES):
            try:
                libc = ctypes.CDLL("libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to pin
                mallopt = None
            if mallopt is not None:
                mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                mallopt.restype = ctypes.c_int
                pinned = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
        _done.append(pinned)
        return pinned
