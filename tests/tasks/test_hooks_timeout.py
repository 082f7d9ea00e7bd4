"""A handler attempt that runs past its timeout reports the timeout (retry or failure hook) when it
passes, and the thread's later return fires no success."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine, RetryPolicy
from actorflow.tasks import FailedInfo, StartedInfo, SucceededInfo, TaskContext
from actorflow.tasks._execution import _RUNNING

T = 30.0
RELEASE = threading.Event()


def _wait_for(cond: Any) -> None:
    deadline = time.monotonic() + T
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def slow_first(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Attempt 1 blocks until RELEASE (past its timeout); later attempts return at once."""
    if ctx.attempt == 1:
        RELEASE.wait(T)
        return "late"
    return "on time"


@pytest.mark.parametrize("retries", [1, 2])
def test_timeout_fires_the_end_hook_once_and_a_late_return_no_success(tmp_path: Path, retries: int) -> None:
    RELEASE.clear()
    e = Engine(tmp_path / "d", sync=False, shards=2)
    policy = RetryPolicy.none() if retries == 1 else RetryPolicy.linear(retries, 0.01, jitter=False)
    e.task(timeout=0.3, retry=policy)(slow_first)
    seen: list[Any] = []
    for kind in ("start", "success", "failure", "retry"):
        e.add_task_hook(kind, seen.append)
    with e:
        eid = e.enqueue("slow_first", {})
        if retries == 1:
            with pytest.raises(Exception, match="timed out"):
                e.result(eid, T)
            _wait_for(lambda: any(isinstance(s, FailedInfo) for s in seen))
        else:
            assert e.result(eid, T) == "on time"
            _wait_for(lambda: any(isinstance(s, SucceededInfo) for s in seen))
        RELEASE.set()  # attempt 1's thread returns "late" now: discarded, and no hook reports it
        _wait_for(lambda: eid not in _RUNNING)
    kinds = [type(s).__name__ for s in seen]
    ended = [s for s in seen if not isinstance(s, StartedInfo)]
    if retries == 1:
        assert kinds == ["StartedInfo", "FailedInfo"], kinds
    else:
        assert kinds == ["StartedInfo", "RetryInfo", "StartedInfo", "SucceededInfo"], kinds
        assert ended[1].output == "on time"
    assert "StepTimeout" in ended[0].error and "timed out after 0.3s" in ended[0].error
    assert ended[0].attempt == 1 and ended[0].duration >= 0.3
