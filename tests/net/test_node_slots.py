"""`actorflow worker --concurrency N`: slot files whose flock a handler holds while it runs, shared by
every step actor process of the node (one per shard placing work there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actorflow._multiproc._node_slots import SLOTS_ENV, make_slots, node_slot, slots_limit


@pytest.fixture
def two_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(SLOTS_ENV, make_slots(str(tmp_path), 2))
    return tmp_path


def test_no_limit_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    assert slots_limit() is None
    with node_slot() as slot:
        assert slot is None


def test_a_third_holder_waits_for_one_of_two_slots(two_slots: Path) -> None:
    assert slots_limit() == 2
    release = threading.Event()
    held: list[int | None] = []
    got_third = threading.Event()
    took = threading.Semaphore(0)

    def hold() -> None:
        with node_slot() as slot:
            held.append(slot)
            took.release()
            release.wait(30)

    def third() -> None:
        with node_slot() as slot:
            held.append(slot)
            got_third.set()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    assert took.acquire(timeout=10) and took.acquire(timeout=10)
    waiter = threading.Thread(target=third)
    waiter.start()
    assert not got_third.wait(0.3)  # both slots taken: it waits
    release.set()
    assert got_third.wait(10)
    for t in [*holders, waiter]:
        t.join(10)
    assert sorted(s for s in held[:2] if s is not None) == [0, 1]


def test_a_killed_process_frees_its_slot(two_slots: Path) -> None:
    code = ("import sys, time\nfrom actorflow._multiproc._node_slots import node_slot\n"
            "with node_slot() as s:\n    print(s, flush=True)\n    time.sleep(60)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        slots = sorted(int(p.stdout.readline()) for p in procs if p.stdout is not None)
        assert slots == [0, 1]  # the two processes hold both slots
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        with node_slot() as slot:  # the kernel released the killed holder's lock
            assert slot in (0, 1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
