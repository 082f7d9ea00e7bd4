"""The wake pipe of the facade's gateway and of a shard loses no wakeup.

A lost wakeup does not lose a message (the loop's timeout sends it) but parks every later burst
until that timeout: with the old order (re-arm, then drain) small bursts of workflows took ~1 s
each instead of tens of milliseconds. The engine test here lengthens those timeouts so that a lost
wakeup shows as a result that never comes, instead of as a slow test.
"""

from __future__ import annotations

import asyncio
import os
import select
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine
from actorflow._multiproc import _facade, _shard
from actorflow._multiproc._wakeup import WakePipe


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_wake_during_the_drain_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = WakePipe()
    try:
        pipe.wake()
        assert _readable(pipe.fd)
        real_read = os.read
        woke = []

        def read_with_a_wake_in_between(fd: int, n: int) -> bytes:
            if not woke:  # another thread posts while the loop drains the pipe
                woke.append(True)
                pipe.wake()
            return real_read(fd, n)

        monkeypatch.setattr(os, "read", read_with_a_wake_in_between)
        pipe.consume()
        monkeypatch.setattr(os, "read", real_read)
        assert woke and not pipe.pending
        # what that wake announced is in the caller's queue, looked at after consume(); a later
        # wake must reach the loop again
        pipe.wake()
        assert _readable(pipe.fd)
    finally:
        pipe.close()


def test_a_burst_of_wakes_writes_one_byte() -> None:
    pipe = WakePipe()
    try:
        for _ in range(100):
            pipe.wake()
        assert os.read(pipe.fd, 4096) == b"x"
        pipe.consume()
        pipe.wake()
        assert os.read(pipe.fd, 4096) == b"x"
    finally:
        pipe.close()


async def three(ctx: Any, i: int) -> int:
    a = await ctx.step("a", lambda: i)
    b = await ctx.step("b", lambda: a + 1)
    return await ctx.step("c", lambda: b + 1)  # type: ignore[no-any-return]


def test_bursts_of_starts_are_sent_without_waiting_for_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the loops' timeouts now far beyond each result's: a lost wakeup leaves a burst unsent (with the
    # old order this failed at the 2nd-5th burst; fsync'd commits widen the window, hence sync=True)
    monkeypatch.setattr(_facade, "_LISTEN", 600.0)
    monkeypatch.setattr(_shard, "_CHECK_EVERY", 600.0)  # the shards are forked from this process
    engine = Engine(tmp_path / "data", system="multiproc", shards=2)
    engine.workflow()(three)
    with engine:

        async def burst(k: int) -> list[Any]:
            handles = await asyncio.gather(*(engine.astart(three, i, run_id=f"b{k}-{i}") for i in range(40)))
            return await asyncio.gather(*(h.aresult(30) for h in handles))

        for k in range(30):
            assert asyncio.run(burst(k)) == [i + 2 for i in range(40)]
