"""An open engine pins glibc's mmap threshold (issue 18's soak: anonymous memory grew in glibc's arenas).

glibc raises its mmap threshold to the size of the first mmapped block freed; from then on blocks of up
to that size come from the per-thread arenas, whose freed memory the soak saw pile up (+64 MB in 25
minutes, bytes in use flat). Each case runs in a fresh interpreter: the threshold is process-wide and
slides only once it has not been set.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc >= 2.33
    GLIBC = True
except (OSError, AttributeError):
    GLIBC = False

pytestmark = pytest.mark.skipif(not GLIBC, reason="glibc's malloc only (mallopt / mallinfo2)")

# Frees a 4 MB mmapped block (what raises glibc's threshold), then asks for 1 MB and prints whether that
# block was mmapped (mallinfo2's hblkhd grew by it) or carved from an arena.
PROBE = r"""
import ctypes, sys
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "engine":
    import actorflow
    with actorflow.Engine(sys.argv[2]):
        pass
big = libc.malloc(4 << 20)
libc.free(big)
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print("mmapped" if libc.mallinfo2().hblkhd - before >= 1 << 20 else "arena")
libc.free(block)
"""


def _probe(mode: str, data_dir: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(data_dir)], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_an_open_engine_keeps_large_blocks_out_of_the_arenas(tmp_path: Path) -> None:
    # the control: glibc's sliding threshold moves a 1 MB block into the arena after a 4 MB free
    assert _probe("plain", tmp_path / "a") == "arena"
    # after an engine opened (and closed: the threshold stays pinned), it is mmapped and given back
    assert _probe("engine", tmp_path / "b") == "mmapped"


def test_a_host_that_tunes_malloc_itself_is_left_alone(tmp_path: Path) -> None:
    # the host set glibc's own tunable (here: a 8 MB threshold, so the 1 MB block is an arena block)
    assert _probe("engine", tmp_path / "c", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=8388608") == "arena"
    assert _probe("engine", tmp_path / "d", MALLOC_MMAP_THRESHOLD_="8388608") == "arena"
    # a tunable about something else does not count as tuning the threshold
    assert _probe("engine", tmp_path / "e", GLIBC_TUNABLES="glibc.malloc.tcache_count=7") == "mmapped"
