"""Memory given back after a passivation wave (actorflow/_trim.py): glibc keeps freed chunks in its
arenas, so without a trim a burst's RSS stays after its runs left memory."""

from __future__ import annotations

import platform
from typing import Any

import pytest

import actorflow
from actorflow import _trim

from .conftest import embedded_only, wait_state, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wave_trims_a_trickle_does_not() -> None:
    calls: list[int] = []
    t = _trim.MemoryTrimmer(lambda: calls.append(1), wave=100, min_interval=0.0, clock=Clock())
    assert not t.passivated(99) and calls == []
    assert t.passivated(100) and calls == [1] and t.trims == 1 and t.seconds >= 0.0


def test_trims_are_rate_limited_and_a_held_back_wave_is_trimmed_later() -> None:
    calls: list[int] = []
    clock = Clock()
    t = _trim.MemoryTrimmer(lambda: calls.append(1), wave=10, min_interval=5.0, clock=clock)
    assert t.passivated(50)
    clock.now += 1.0
    assert not t.passivated(50) and t.pending  # too soon: held back, not lost
    assert not t.passivated(0)  # still too soon
    clock.now += 5.0
    assert t.passivated(0) and not t.pending  # the next round with nothing passivated trims it
    assert not t.passivated(0) and len(calls) == 2


def test_no_trim_function_no_trim() -> None:
    t = _trim.MemoryTrimmer(None, wave=1, min_interval=0.0)
    assert not t.passivated(10**6) and t.trims == 0


@pytest.mark.parametrize("kw", [{"wave": 0}, {"min_interval": -1.0}])
def test_options_are_checked(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _trim.MemoryTrimmer(None, **kw)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_trim_is_found_and_runs() -> None:
    fn = _trim.glibc_trim()
    assert fn is not None
    assert fn() in (0, 1)  # malloc_trim returns 1 if memory was released, else 0


@embedded_only("counts trims in this process; a multiprocess engine's hosts trim in their own processes")
def test_a_passivation_wave_of_the_engine_trims(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    fake = _trim.MemoryTrimmer(lambda: calls.append(1), wave=30, min_interval=0.0)
    # the hosts (and the residency cap) use the process-wide trimmer: stand a counting one in
    monkeypatch.setattr("actorflow._host.trimmer", fake)
    monkeypatch.setattr("actorflow._residency.trimmer", fake)
    clock = actorflow.MockClock()
    engine = make_engine(clock=clock, passivate_after=5.0, shards=1, open=False)

    @engine.workflow(name="nap")
    async def nap(ctx: Any) -> None:
        await ctx.sleep("nap", 86400.0)

    engine.open()
    for h in engine.start_many("nap", [()] * 40):
        wait_state(engine, h.run_id, "sleeping")
    assert calls == []  # nothing left memory yet
    clock.advance(10.0)
    wait_until(lambda: engine.residency().resident == 0, what="the wave passivated")
    wait_until(lambda: calls == [1], what="the wave trimmed")


def test_passivated_runs_leave_the_journal_cache(make_engine: Any, tmp_path: Any) -> None:
    """The journal's append cache keeps no entry (run id string) of a passivated run: after a burst
    those long-lived small blocks kept the burst's emptied memory arenas (issue 17)."""
    clock = actorflow.MockClock()
    engine = make_engine(tmp_path / "j", clock=clock, passivate_after=5.0, shards=1, open=False)

    @engine.workflow(name="nap")
    async def nap(ctx: Any) -> None:
        await ctx.sleep("nap", 86400.0)

    engine.open()
    ids = [h.run_id for h in engine.start_many("nap", [()] * 40)]
    for rid in ids:
        wait_state(engine, rid, "sleeping")
    tails = engine.journal._tails  # type: ignore[union-attr]
    assert set(ids) <= set(tails)  # cached while in memory
    clock.advance(10.0)
    wait_until(lambda: engine.residency().resident == 0, what="the wave passivated")
    assert engine.signal(ids[0], "poke") is None and engine.status(ids[0]).state == "sleeping"
    assert not set(ids[1:]) & set(tails)  # dropped by the writer's next transaction (the signal's)
