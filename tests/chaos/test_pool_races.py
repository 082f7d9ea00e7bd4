"""Two races of Python's process pool with a worker's death, as ProcessSteps meets them (issue 18: a
multiproc campaign's run stuck for good after a step worker was killed - its next step had been
submitted while the pool broke, and its future was never settled).

Each race is set up deterministically with a stand-in for the broken pool: the step must run again
on a new pool and return, not wait forever or fail."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Any

from actorflow._procsteps import ProcessSteps
from actorflow._types import StepInfo

DEADLINE = 30.0


class _BrokeAfterSubmit:
    """A pool that took the step and then broke without settling its future (the submit landed
    while the manager thread was failing the futures it knew of)."""

    _broken = "A child process terminated abruptly"
    _shutdown_thread = True

    def submit(self, *args: Any) -> Future[Any]:
        return Future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _ReplacedMeanwhile:
    """A pool another step's thread shut down (replacing it after a death) just before this submit."""

    _broken: str | None = None
    _shutdown_thread = True

    def submit(self, *args: Any) -> Future[Any]:
        raise RuntimeError("cannot schedule new futures after shutdown")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _run_with(stand_in: Any) -> tuple[list[Any], ProcessSteps]:
    steps = ProcessSteps(1)
    steps._pool = stand_in
    out: list[Any] = []

    def call() -> None:
        try:
            out.append(steps.run(lambda: 6 * 7, StepInfo("run-1", "s", 1, 1, "k")))
        except BaseException as exc:  # noqa: BLE001 - the test's verdict
            out.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(DEADLINE)
    assert not t.is_alive(), "the step waited forever on a future its broken pool never settles"
    return out, steps


def test_a_step_submitted_as_its_pool_broke_runs_again() -> None:
    out, steps = _run_with(_BrokeAfterSubmit())
    try:
        assert out == [42]
        assert steps.replaced == 1
    finally:
        steps.close()


def test_a_step_submitted_to_a_pool_replaced_meanwhile_runs_on_the_new_one() -> None:
    out, steps = _run_with(_ReplacedMeanwhile())
    try:
        assert out == [42], out
    finally:
        steps.close()


def test_a_step_on_a_healthy_pool_is_not_hurried() -> None:
    """The pending-future check does not fire on a pool that is not broken (a long step waits)."""
    steps = ProcessSteps(1)
    try:
        assert steps.run(lambda: __import__("time").sleep(1.5) or "slow", StepInfo("run-2", "s", 1, 1, "k")) == "slow"
        assert steps.replaced == 0
    finally:
        steps.close()


def test_close_returns_when_a_dead_worker_holds_the_channel_lock() -> None:
    """A worker SIGKILLed in the middle of a put leaves the host's channel write lock held for good
    (seen: the chaos suite's close() hung). close() must still return, and leave no worker."""
    steps = ProcessSteps(1)
    assert steps.run(os.getpid, StepInfo("run-3", "s", 1, 1, "k")) != os.getpid()  # the pool and channel exist
    workers = list(steps._pool._processes.values())  # type: ignore[union-attr]
    assert steps._channel._wlock.acquire(timeout=5)  # as a worker killed mid-put would hold it
    t0 = time.monotonic()
    closer = threading.Thread(target=steps.close, daemon=True)
    closer.start()
    closer.join(DEADLINE)
    assert not closer.is_alive(), "close() hung on the channel's write lock"
    assert time.monotonic() - t0 < 10
    assert not any(p.is_alive() for p in workers)
