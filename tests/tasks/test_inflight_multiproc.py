"""Under system='multiproc' a shard tells the engine facade at once when a handler begins and ends,
so task_status, queue_stats() and workers() show it running without waiting for the run's status
record (which a shard writes later, with its next commit of the run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actorflow import Engine
from actorflow.tasks import TaskRunning, TaskSucceeded
from actorflow.tasks._leases import INFLIGHT

from . import _qhandlers as q

T = 30.0


def _wait_for(cond: Any) -> None:
    deadline = time.monotonic() + T
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_shards_running_handler_is_in_flight_in_the_facade_from_its_start(tmp_path: Path) -> None:
    e = Engine(tmp_path / "d", system="multiproc", sync=False, shards=2)
    e.task(queue="reports")(q.hold)
    release = tmp_path / "release"
    with e:
        eid = e.enqueue("hold", {"path": str(tmp_path / "log"), "release": str(release)})
        _wait_for(lambda: eid in INFLIGHT)  # the shard's notice (this is the facade's process)
        assert INFLIGHT[eid] == "reports"
        assert isinstance(e.task_status(eid), TaskRunning)
        assert {s.queue: s.in_flight for s in e.queue_stats()}["reports"] == 1
        assert e.workers()[0].in_flight == {"reports": 1}
        assert [t.state for t in e.tasks(state="running")] == ["running"]
        release.touch()
        assert e.result(eid, T) == "released"
        _wait_for(lambda: eid not in INFLIGHT)  # the end is told too
        assert e.task_status(eid) == TaskSucceeded(eid, "released")
        assert {s.queue: s.in_flight for s in e.queue_stats()}["reports"] == 0
