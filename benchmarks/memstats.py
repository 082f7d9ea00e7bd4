"""Where a process's anonymous memory is: pymalloc's arenas, glibc's malloc, thread stacks, the rest.

RssAnon alone cannot tell a leak in Python objects from pymalloc's arena fragmentation, from memory a
C extension (py-lmdb, LMDB) allocates with malloc, or from glibc keeping freed memory. These three
counters can, sampled twice in one run:

- `pymalloc`: `sys._debugmallocstats()` (arenas allocated now / high-water, bytes in live blocks).
  Arenas growing with live bytes flat is fragmentation; both growing is live Python objects.
- `malloc`: glibc's `mallinfo2()` over all arenas: bytes handed out (`in_use`, which includes
  Python objects over 512 bytes, that pymalloc passes to malloc) and bytes free but kept (`free`).
- `smaps`: /proc/self/smaps's anonymous pages by mapping kind: the main heap (brk), glibc's
  per-thread arena heaps (mapped at 64 MiB alignment), thread stacks (8 MiB mappings), the rest
  (pymalloc arenas, large malloc blocks, mmaps by extensions).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from typing import Any

_MIB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_stats() -> dict[str, float]:
    """glibc's counters (MB): `in_use` = allocated blocks (sbrk/arena heaps + mmapped), `free` = kept
    free in the arenas, `mmapped` = blocks served by their own mmap."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"in_use_mb": round((m.uordblks + m.hblkhd) / _MIB, 2), "free_mb": round(m.fordblks / _MIB, 2),
            "mmapped_mb": round(m.hblkhd / _MIB, 2), "arena_mb": round(m.arena / _MIB, 2)}


def malloc_free_sizes() -> dict[str, float]:
    """glibc's free chunks (MB) by size, summed over its arenas (`malloc_info`): free memory in
    chunks under a page cannot go back to the kernel (`malloc_trim` returns whole free pages only)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        fp = libc.fopen(tmp.name.encode(), b"w")
        if not fp:
            return {}
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        text = open(tmp.name).read()
    buckets = {"lt_1k": 0, "1k_4k": 0, "4k_64k": 0, "ge_64k": 0}
    # per-heap <size from= to= total= count=/> lines; the totals at the end repeat them: stop there
    body = text.split("<total type=")[0]
    for m in re.finditer(r'<size from="(\d+)" to="(\d+)" total="(\d+)" count="(\d+)"/>', body):
        lo, total = int(m.group(1)), int(m.group(3))
        key = "lt_1k" if lo < 1024 else "1k_4k" if lo < 4096 else "4k_64k" if lo < 65536 else "ge_64k"
        buckets[key] += total
    return {k: round(v / _MIB, 2) for k, v in buckets.items()}


def pymalloc_stats() -> dict[str, float]:
    """pymalloc's arenas (count, high-water) and the bytes in live blocks (MB), from
    `sys._debugmallocstats()`, which writes to fd 2: captured by redirecting that fd for the call."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")

    def num(label: str) -> int:
        m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else -1

    return {"arenas": num("# arenas allocated current"), "arenas_highwater": num("# arenas highwater mark"),
            "live_mb": round(num("# bytes in allocated blocks") / _MIB, 2),
            "free_blocks_mb": round(num("# bytes in available blocks") / _MIB, 2),
            "unused_pools_mb": round(int(m.group(1)) * 16384 / _MIB, 2)
            if (m := re.search(r"(\d+) unused pools \* 16384", text)) else 0.0}


def smaps_anon() -> dict[str, float]:
    """Anonymous pages (MB) by mapping kind: `heap` (brk), `malloc_arenas` (glibc's per-thread arena
    heaps, 64 MiB-aligned), `stacks` (8 MiB mappings: thread stacks), `other_anon`."""
    out = {"heap": 0, "malloc_arenas": 0, "stacks": 0, "other_anon": 0}
    kind = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start_s, end_s = head[0].split("-")
                start, end = int(start_s, 16), int(end_s, 16)
                name = head[5].strip() if len(head) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name:
                    kind = None
                elif start % (64 * _MIB) == 0:
                    kind = "malloc_arenas"
                elif end - start == 8 * _MIB:
                    kind = "stacks"
                else:
                    kind = "other_anon"
            elif head[0] == "Anonymous:" and kind is not None:
                out[kind] += int(head[1])
    return {k: round(v / 1024, 2) for k, v in out.items()}


def sample() -> dict[str, Any]:
    return {"pymalloc": pymalloc_stats(), "malloc": malloc_stats(), "free_sizes": malloc_free_sizes(),
            "smaps": smaps_anon()}


def line(s: dict[str, Any]) -> str:
    p, m, a = s["pymalloc"], s["malloc"], s["smaps"]
    return (f"  pymalloc arenas {p['arenas']} (hw {p['arenas_highwater']}) live {p['live_mb']} MB "
            f"free-blocks {p['free_blocks_mb']} MB unused-pools {p['unused_pools_mb']} MB | "
            f"malloc in-use {m.get('in_use_mb')} MB free {m.get('free_mb')} MB mmapped {m.get('mmapped_mb')} MB | "
            f"free by size {s['free_sizes']} | anon heap {a['heap']} arenas {a['malloc_arenas']} stacks {a['stacks']} other {a['other_anon']} MB")
