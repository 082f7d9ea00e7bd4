"""Mixed load on the real clock and an LMDB journal: nothing lost between the threads that run the actors.

Step workers, callers of start() and the pump thread all take turns running the actors (the pump
lock); this drives every kind of item through them at once - step results, short real sleeps,
signals sent from another thread, child runs, gathers, passivation and reloading - from several
starting threads, and checks every run's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from typing import Any

import pytest

from actorflow import Engine
from storage import LmdbJournal

from .conftest import TIMEOUT, alive, engine_pids


def _expected(i: int) -> int:
    value = i
    if i % 5 == 0:
        value += 100  # the signal's payload
    if i % 7 == 0:
        value += 3 * i  # the child's result
    return value + 3  # the gathered steps


@pytest.mark.parametrize(
    "step_threads,shards,overlap",
    [(32, 2, True), (1, 1, True), (4, 3, True), (32, 2, "always"), (8, 2, "multiproc")],
)
def test_mixed_load_loses_nothing(tmp_path: Any, step_threads: int, shards: int, overlap: bool | str) -> None:
    # "always": every commit's callbacks run on the journal's completer thread, as they do when they
    # outlast a sync (the engine's own rarely do): the engine must not depend on which thread runs them
    # "multiproc": the same load through shard processes (their hosts passivate and reload runs)
    journal: Any
    if overlap == "multiproc":
        journal = contextlib.nullcontext()
        engine = Engine(
            tmp_path / "af", system="multiproc", sync=False, passivate_after=0.05, step_threads=step_threads, shards=shards
        )
    else:
        journal = LmdbJournal(tmp_path / "af", commit_overlap=overlap)
        engine = Engine(None, journal=journal, passivate_after=0.05, step_threads=step_threads, shards=shards)

    @engine.workflow()
    async def kid(ctx: Any, x: int) -> int:
        return await ctx.step("k", lambda: x * 3)  # type: ignore[no-any-return]

    @engine.workflow()
    async def mixed(ctx: Any, i: int) -> int:
        a = await ctx.step("a", lambda: i)
        if i % 3 == 0:
            await ctx.sleep("s", random.Random(i).random() * 0.2)
        if i % 5 == 0:
            a += await ctx.wait_signal("go", timeout=TIMEOUT)
        if i % 7 == 0:
            a += await ctx.child(kid, i)
        parts = await ctx.gather(ctx.step("p1", lambda: 1), ctx.step("p2", lambda: 2))
        return a + sum(parts)  # type: ignore[no-any-return]

    n = 600
    handles: dict[int, Any] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def starter(lo: int, hi: int) -> None:
        try:
            for i in range(lo, hi):
                h = engine.start(mixed, i)
                with lock:
                    handles[i] = h
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    def signaller(done: threading.Event) -> None:
        sent: set[int] = set()
        try:
            while len(sent) < n // 5 and not done.is_set():
                with lock:
                    todo = [(i, h) for i, h in handles.items() if i % 5 == 0 and i not in sent]
                for i, h in todo:
                    engine.signal(h.run_id, "go", 100)
                    sent.add(i)
                done.wait(0.005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with journal, engine:  # the engine leaves a journal it was given open: closed after it
        stop = threading.Event()
        threads = [threading.Thread(target=starter, args=(k * n // 4, (k + 1) * n // 4)) for k in range(4)]
        sig = threading.Thread(target=signaller, args=(stop,))
        for t in [*threads, sig]:
            t.start()
        try:
            for t in threads:
                t.join(TIMEOUT)
            sig.join(TIMEOUT)
        finally:
            stop.set()
        assert not errors, errors
        keys = sorted(handles)
        assert keys == list(range(n))

        async def collect(hs: list[Any]) -> list[Any]:
            return await asyncio.gather(*(h.aresult(TIMEOUT) for h in hs))

        results = asyncio.run(collect([handles[i] for i in keys[: n // 2]]))
        results += [handles[i].result(TIMEOUT) for i in keys[n // 2 :]]
        if overlap == "always":  # the callbacks did go over to the completer
            assert engine.journal._committer._c_handed > 0  # type: ignore[union-attr]
        pids = engine_pids(engine)
    assert results == [_expected(i) for i in keys]
    assert [p for p in pids if alive(p)] == []  # a multiproc engine's processes are gone after close
