"""Chain, group and chord members go to their queue and requirements (the member's own queue or
routing, or the chain's `queue=`/`requires=`), gated like a plain enqueue when no consumer takes them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actorflow import ConfigError, Engine
from actorflow.tasks import TaskQueued

from . import _qhandlers as q
from ._handlers import lines

T = 30.0


def _engine(path: Path, system: str = "embedded", **kw: object) -> Engine:
    e = Engine(path, system=system, sync=False, shards=2, **kw)  # type: ignore[arg-type]
    e.task()(q.where)
    e.task(name="mail.digest", queue="bulk")(q.where)
    return e


@pytest.mark.parametrize("system", ["embedded", "multiproc"])
def test_chain_members_take_their_queue_and_wait_for_a_consumer_that_takes_it(tmp_path: Path, system: str) -> None:
    data = tmp_path / "d"
    log = str(tmp_path / "where.log")
    e = _engine(data, system, queues=["default", "bulk"], capabilities={"region": "eu"})
    with e:
        cid = (e.chain("c").then("where", queue="bulk")
               .then_all([("mail.digest", {"path": log}), ("where", {"path": log})], requires={"region": "eu"})
               .then("where", queue="reports").enqueue({"path": log}))
        # stage 3 is on "reports", which this engine does not consume: queued, visible, not lost
        gated = f"{cid}/m2.0"
        deadline = time.monotonic() + T
        while gated not in {t.execution_id for t in e.tasks(state="queued")} and time.monotonic() < deadline:
            time.sleep(0.02)  # polls for a condition, bounded
        st = e.task_status(gated)
        assert isinstance(st, TaskQueued) and "queue 'reports'" in st.waiting_for, st
        with pytest.raises(TimeoutError):
            e.result(cid, 0.3)
    ran = sorted(ln.split()[1] for ln in lines(log))
    assert ran == ["bulk", "bulk", "default"]  # stage 1 on bulk; the group: digest's own queue, default
    e2 = _engine(data, system)  # every queue: the gated member runs now
    with e2:
        assert e2.result(cid, T)["queue"] == "reports"
    assert len(lines(log)) == 3  # nothing ran twice


def test_chain_member_options_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    e = _engine(tmp_path / "d")
    with e:
        with pytest.raises(ConfigError, match="member 'where'.*queue name"):
            e.chain("c").then("where", queue="bad queue!")
        with pytest.raises(ConfigError, match="member 'where'"):
            e.chain("c").then_all(["where"], requires={"gpu": [1]})
        assert e.tasks() == []
