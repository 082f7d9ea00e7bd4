"""A node's `--concurrency N`: at most N handlers at once across every step actor of the node.

Thespian gives a node one step actor per shard that places work on it, each in its own process, so
a per-actor thread cap would let a node run shards × N handlers. The `actorflow worker` process
makes N slot files in a directory of its own and names it (and N) in the environment its actors
inherit; a step holds an exclusive `flock` on one slot file while it runs. The kernel releases a
lock when its process dies (kill -9 included), so a crashed actor never keeps a slot.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["SLOTS_ENV", "make_slots", "node_slot", "slots_limit"]

SLOTS_ENV = "ACTORFLOW_WORKER_SLOTS"  # "N:DIRECTORY", set by `actorflow worker --concurrency N`
_POLL = 0.005  # seconds between looks for a free slot while all N are taken (first wait)
_POLL_MAX = 0.05


def make_slots(directory: str, n: int) -> str:
    """Create the N slot files in `directory`; the value for SLOTS_ENV."""
    for i in range(n):
        with open(os.path.join(directory, f"slot-{i}"), "a"):
            pass
    return f"{n}:{directory}"


def _parse() -> tuple[int, str] | None:
    value = os.environ.get(SLOTS_ENV, "")
    n, _, directory = value.partition(":")
    if not n.isdigit() or int(n) < 1 or not directory:
        return None
    return int(n), directory


def slots_limit() -> int | None:
    """N, when this process belongs to a node started with --concurrency N."""
    parsed = _parse()
    return None if parsed is None else parsed[0]


@contextmanager
def node_slot(stop: threading.Event | None = None) -> Iterator[int | None]:
    """Hold one of the node's N slots while the body runs (None: no limit on this node)."""
    parsed = _parse()
    if parsed is None:
        yield None
        return
    n, directory = parsed
    fd, slot = _acquire(n, directory, stop)
    try:
        yield slot
    finally:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(n: int, directory: str, stop: threading.Event | None) -> tuple[int, int]:
    delay = _POLL
    first = os.getpid() % n  # processes start their scans at different slots
    while True:
        for k in range(n):
            slot = (first + k) % n
            fd = os.open(os.path.join(directory, f"slot-{slot}"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd, slot
        if stop is not None and stop.is_set():
            return -1, -1  # the actor is exiting: run nothing more under a slot
        time.sleep(delay)  # every slot is taken: flock cannot wait for "any of N"
        delay = min(delay * 2, _POLL_MAX)
