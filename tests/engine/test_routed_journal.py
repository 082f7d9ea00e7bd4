"""RoutedJournal (actorflow/_multiproc/_routed.py) without processes: the facade's journal when a
member node owns shard 1. Ops and reads of shard 1's runs go to its journal (here a MemoryJournal
served by `serve_call`, as the node's shard serves it), everything else stays in the engine's."""

from __future__ import annotations

import zlib
from concurrent.futures import Future
from typing import Any

import pytest

from actorflow._multiproc._routed import JournalCall, RoutedJournal, serve_call
from actorflow.errors import ActorflowError
from storage import Event, MemoryJournal, RunRecord, SignalResult


def _shard_of(run_id: str) -> int:
    return zlib.crc32(run_id.encode()) % 2


def _ids(prefix: str, shard: int, n: int) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        rid = f"{prefix}-{k}"
        if _shard_of(rid) == shard:
            out.append(rid)
        k += 1
    return out


class Owner:
    """Shard 1's journal behind `serve_call`; `hold` keeps its answers back (a slow or lost reply)."""

    def __init__(self) -> None:
        self.journal = MemoryJournal()
        self.calls: list[str] = []
        self.hold = False
        self.held: list[tuple[Future[Any], Any, BaseException | None]] = []

    def call(self, shard: int, method: str, args: tuple[Any, ...]) -> Future[Any]:
        assert shard == 1
        self.calls.append(method)
        fut: Future[Any] = Future()

        def reply(_: int, value: Any, error: BaseException | None) -> None:
            if self.hold:
                self.held.append((fut, value, error))
            elif error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

        serve_call(self.journal, JournalCall(shard, 1, method, args), reply)
        return fut

    def release(self) -> None:
        self.hold = False
        for fut, value, error in self.held:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)


def _routed() -> tuple[RoutedJournal, MemoryJournal, Owner]:
    local, owner = MemoryJournal(), Owner()
    return RoutedJournal(local, frozenset({1}), _shard_of, owner.call, lambda: False), local, owner


def _create(batch: Any, rid: str) -> int:
    return int(batch.create_run(RunRecord(rid, "wf", "pending", 1.0, 1.0), Event(0, "run_started", "wf", {"args": ()}, 1.0)))


def test_a_batch_is_committed_by_each_runs_owner_in_order() -> None:
    j, local, owner = _routed()
    there, here = _ids("a", 1, 3), _ids("a", 0, 3)
    batch = j.batch()
    for rid in [*there, *here]:
        _create(batch, rid)
    batch.kv_put("cmd", "k", 1)
    assert j.commit(batch) == [None] * 7
    for rid in there:
        assert owner.journal.get_run(rid) is not None and local.get_run(rid) is None
    for rid in here:
        assert local.get_run(rid) is not None and owner.journal.get_run(rid) is None
    assert local.kv_get("cmd", "k") == 1 and owner.journal.kv_get("cmd", "k") is None
    again = j.batch()  # a second create of each: the owner's dedup answers, in the batch's order
    for rid in [here[0], there[0]]:
        _create(again, rid)
    assert [r.run_id for r in j.commit(again)] == [here[0], there[0]]


def test_the_engines_ops_wait_for_the_owner_and_are_not_written_if_it_fails() -> None:
    j, local, owner = _routed()
    rid = _ids("s", 1, 1)[0]
    b = j.batch()
    _create(b, rid)
    j.commit(b)
    owner.hold = True
    sig = j.batch()
    sig.put_signal(rid, "go", 1)
    sig.kv_del("control", "c1")
    sig.kv_put("control-outcome", "c1", "delivered")
    fut = j.submit(sig)
    assert not fut.done() and local.kv_get("control-outcome", "c1") is None  # not before the owner's commit
    owner.release()
    assert fut.result(5)[0] not in (SignalResult.NOT_FOUND, None)
    assert local.kv_get("control-outcome", "c1") == "delivered"
    assert [s[0] for s in owner.journal.signals(rid)] == ["go"]
    bad = j.batch()
    bad.append(rid, Event(5, "x", "x", None, 1.0))  # a gap in the run's events: the owner refuses
    bad.kv_put("control-outcome", "c2", "delivered")
    with pytest.raises(Exception):  # noqa: B017 - whatever the owner's journal raises, the caller gets
        j.commit(bad)
    assert local.kv_get("control-outcome", "c2") is None


def test_reads_of_a_run_go_to_its_owner_and_lists_merge() -> None:
    j, local, owner = _routed()
    there, here = _ids("r", 1, 2), _ids("r", 0, 2)
    batch = j.batch()
    for rid in [*there, *here]:
        _create(batch, rid)
    j.commit(batch)
    rec = j.get_run(there[0])
    assert rec is not None and rec.run_id == there[0]
    assert [e.kind for e in j.events(there[0])] == ["run_started"] and j.last_seq(there[0]) == 0
    assert [r.run_id if r else None for r in j.get_runs([here[0], there[1], "nope"])] == [here[0], there[1], None]
    assert [r.run_id for r in j.runs()] == sorted([*there, *here])
    assert [r.run_id for r in j.iter_runs()] == sorted([*there, *here])
    assert j.active_run_ids() == sorted([*there, *here])
    assert "get_run" in owner.calls and "runs" in owner.calls


def test_no_wait_on_the_gateway_thread_and_unknown_calls_refused() -> None:
    local, owner = MemoryJournal(), Owner()
    j = RoutedJournal(local, frozenset({1}), _shard_of, owner.call, lambda: True)
    with pytest.raises(ActorflowError, match="gateway"):
        j.get_run(_ids("g", 1, 1)[0])
    assert j.get_run(_ids("g", 0, 1)[0]) is None  # the engine's own runs: read here as always
    got: list[Any] = []
    serve_call(owner.journal, JournalCall(1, 9, "close", ()), lambda *a: got.append(a))
    assert isinstance(got[0][2], ActorflowError)


def test_calls_in_flight_to_a_replaced_shard_fail_at_once() -> None:
    from actorflow._multiproc._routed import OwnerCalls, ShardUnavailable
    from actorflow._runtime import Notifier

    notifier, posted = Notifier(), []
    calls = OwnerCalls(notifier.request, notifier.reply, posted.append)
    lost, kept = calls.call(1, "get_run", ("a",)), calls.call(0, "get_run", ("b",))
    assert [type(p).__name__ for p in posted] == ["JournalCall", "JournalCall"]
    calls.replaced(1)
    with pytest.raises(ShardUnavailable, match="repeat it with the same run_id"):
        lost.result(1)
    assert not kept.done()
    notifier.reply(posted[1].request_id, "rec")
    assert kept.result(1) == "rec"
    calls.replaced(0)  # nothing in flight any more: nothing to fail


def test_calls_unanswered_too_long_fail_so_async_callers_are_not_left_waiting() -> None:
    import time

    from actorflow._multiproc._routed import OwnerCalls, ShardUnavailable
    from actorflow._runtime import Notifier

    notifier, posted = Notifier(), []
    calls = OwnerCalls(notifier.request, notifier.reply, posted.append)
    slow = calls.call(1, "submit", ([],))
    calls.expire(wait=60.0)
    assert not slow.done()
    time.sleep(0.02)
    calls.expire(wait=0.01)
    with pytest.raises(ShardUnavailable, match="did not answer"):
        slow.result(1)
    calls.expire(wait=0.0)  # settled calls are forgotten: nothing left to fail


def test_a_silent_node_shard_is_down_its_calls_fail_at_once_and_it_is_respawned_when_its_node_rejoins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NodeWatch without processes: a clock by hand, the convention's members by hand, and a probe
    thread joined before each check."""
    import pickle
    import threading

    from actorflow._multiproc import _node_watch
    from actorflow._multiproc._node_watch import NodeWatch
    from actorflow._multiproc._routed import OwnerCalls, ShardUnavailable
    from actorflow._runtime import Notifier

    now = [1000.0]
    monkeypatch.setattr(_node_watch.time, "monotonic", lambda: now[0])
    notifier, posted, respawned = Notifier(), [], []
    members: list[tuple[str, dict[str, Any]]] = [("old", {})]  # the dead registration answers nothing
    calls = OwnerCalls(notifier.request, notifier.reply, posted.append)
    watch = NodeWatch({1: "nodeb"}, 1.0, calls, lambda timeout: list(members), respawned.append)

    def tick() -> None:
        watch.tick()
        for t in threading.enumerate():
            if t.name == "actorflow-node-probe":
                t.join(5)

    watch.alive(1, "hostb:10")
    in_flight = calls.call(1, "get_run", ("a",))
    now[0] += 2.9  # under the 3 s floor of node_timeout: not lost
    tick()
    assert not watch.down and not in_flight.done()
    now[0] += 0.2
    tick()
    assert 1 in watch.down
    with pytest.raises(ShardUnavailable, match="node 'nodeb'") as info:
        in_flight.result(0)
    assert info.value.evidence == {"shard": 1, "node": "nodeb"}
    assert pickle.loads(pickle.dumps(info.value)).evidence == info.value.evidence
    fresh = calls.call(1, "submit", ([],))  # fails at once, nothing sent
    with pytest.raises(ShardUnavailable):
        fresh.result(0)
    assert len(posted) == 1
    # the same worker process still listed (a partition): not yet; another one (a rejoin): respawned
    members.append(("b1", {"actorflow.shard_node": "nodeb", "actorflow.host": "hostb", "actorflow.pid": 10}))
    now[0] += 2.5
    tick()
    tick()
    assert respawned == []
    members.append(("b2", {"actorflow.shard_node": "nodeb", "actorflow.host": "hostb", "actorflow.pid": 11}))
    now[0] += 2.5
    tick()
    tick()
    assert respawned == [1]
    now[0] += 2.5
    tick()
    tick()
    assert respawned == [1]  # asked once, until its ShardReady or a minute later
    watch.alive(1, "hostb:11")
    assert not watch.down
    ok = calls.call(1, "get_run", ("a",))
    notifier.reply(posted[-1].request_id, "rec")
    assert ok.result(1) == "rec"
