"""A failed attempt leaves no reference cycle behind (its frame holding its own exception, whose
traceback holds the frame): with the engine's raised GC thresholds such garbage waits for a rare full
collection, and a soak's memory grew by every failed attempt's handler frame and TaskContext."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine, RetryPolicy
from actorflow.tasks import TaskContext

PROBES: list[weakref.ref[Any]] = []


class _Probe:
    """A local of the handler's frame: alive as long as that frame is."""


def flaky(ctx: TaskContext, input: dict[str, Any]) -> str:
    probe = _Probe()
    PROBES.append(weakref.ref(probe))
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


async def aflaky(ctx: TaskContext, input: dict[str, Any]) -> str:
    return flaky(ctx, input)


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("handler", [flaky, aflaky], ids=["sync", "async"])
def test_a_failed_attempt_is_freed_without_the_cycle_collector(tmp_path: Path, no_gc: None, handler: Any) -> None:
    PROBES.clear()
    e = Engine(tmp_path / "d", gc_threshold=None)
    e.task(name="flaky", retry=RetryPolicy.linear(max_attempts=2, delay=0.01))(handler)
    with e:
        assert e.result(e.enqueue("flaky", {}), 30) == "ok"
        assert len(PROBES) == 2
        assert gc.isenabled() is False
        alive = [r for r in PROBES if r() is not None]
        assert not alive, "the failed attempt's frame is kept alive by a reference cycle"


def _step_fails_once(calls: list[int]) -> str:
    probe = _Probe()
    PROBES.append(weakref.ref(probe))
    calls.append(1)
    if len(calls) == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


async def _astep_fails_once(calls: list[int]) -> str:
    return _step_fails_once(calls)


@pytest.mark.parametrize("fn", [_step_fails_once, _astep_fails_once], ids=["sync", "async"])
def test_a_failed_workflow_step_attempt_is_freed_without_the_cycle_collector(tmp_path: Path, no_gc: None,
                                                                          fn: Any) -> None:
    PROBES.clear()
    e = Engine(tmp_path / "d", gc_threshold=None)
    calls: list[int] = []

    @e.workflow(name="wf")
    async def wf(ctx: Any) -> Any:
        return await ctx.step("s", lambda: fn(calls), retry=RetryPolicy.linear(max_attempts=2, delay=0.01))

    with e:
        assert e.run("wf", timeout=30) == "ok"
        assert len(PROBES) == 2 and gc.isenabled() is False
        assert not [r for r in PROBES if r() is not None], "a failed step attempt's frame is kept alive (a cycle, or a worker thread's stale local)"
