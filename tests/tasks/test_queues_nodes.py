"""Tasks across nodes (issue 19): worker nodes (`actorflow worker --join --queues --capability`)
consume their queues; an engine with `remote_tasks=True` places every execution its own consumer does
not take on a matching node, seen by PID; an execution no node can run waits for placement (queued,
visible) and runs when such a node joins; kill -9 of a node's step actor mid-task: the task runs again
on another node of its queue, one success recorded."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from _node_cluster import SECRET, TIMEOUT, Nodes, until

from actorflow import ConfigError, Engine
from actorflow._multiproc._remote_steps import capabilities_match
from actorflow.tasks import TaskCancelled, TaskSucceeded

from . import _qhandlers as q
from ._handlers import lines
from .test_queues_control import _cli


def test_queue_requirement_matches_a_nodes_queues() -> None:
    req = {"actorflow.worker": True, "actorflow.queue": "emails"}
    assert capabilities_match({"actorflow.worker": True, "actorflow.queues": ["emails", "x"]}, req)
    assert not capabilities_match({"actorflow.worker": True, "actorflow.queues": ["reports"]}, req)
    assert capabilities_match({"actorflow.worker": True}, req)  # a node that names no queues takes all
    assert not capabilities_match({"actorflow.queues": ["emails"]}, req)  # not a worker node
    gpu = {**req, "gpu": True}
    assert not capabilities_match({"actorflow.worker": True, "actorflow.queues": ["emails"]}, gpu)
    assert capabilities_match({"actorflow.worker": True, "actorflow.queues": ["emails"], "gpu": True}, gpu)


def test_remote_tasks_needs_a_multiprocess_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="remote_tasks"):
        Engine(tmp_path / "d", remote_tasks=True)
    with pytest.raises(ConfigError, match="remote_tasks must be a bool"):
        Engine(tmp_path / "d", system="multiproc", remote_tasks="yes")  # type: ignore[arg-type]


def _where(rows: list[str], eid: str) -> int:
    (pid,) = [int(r.split()[2]) for r in rows if r.split()[0] == eid]
    return pid


def test_tasks_route_to_the_nodes_of_their_queue_and_capabilities(tmp_path: Path, leader_port: int,
                                                                   nodes: Nodes) -> None:
    log = str(tmp_path / "where.log")
    gate = tmp_path / "gate"
    gate.mkdir()
    e = Engine(tmp_path / "d", system="multiproc", admin_port=leader_port, secret=SECRET, sync=False,
               queues=[], remote_tasks=True)  # this engine consumes no queue itself: every handler on a node
    e.task(queue="emails")(q.where)
    e.task(name="report", queue="reports")(q.where)
    e.task(name="held", queue="emails")(q.hold)
    with e:
        emails_a = nodes.start(args=("--queues", "emails"))
        reports = nodes.start("gpu=true", args=("--queues", "reports", "--concurrency", "4"))
        ids = [e.enqueue("where", {"path": log}) for _ in range(3)]
        rep = e.enqueue("report", {"path": log})
        gpu = e.enqueue("report", {"path": log}, requires={"gpu": True})
        tpu = e.enqueue("where", {"path": log}, requires={"tpu": True})  # no node has one yet
        for eid in [*ids, rep, gpu]:
            assert isinstance(e.result(eid, TIMEOUT), dict)
        rows = lines(log)
        a_pids = Nodes.pids(os.getsid(next(iter(emails_a))))
        r_pids = Nodes.pids(os.getsid(next(iter(reports))))
        assert all(_where(rows, eid) in a_pids for eid in ids)  # emails ran on the emails node
        assert _where(rows, rep) in r_pids and _where(rows, gpu) in r_pids  # reports (and the gpu one) on its node
        # the tpu one waits for placement, queued and visible, and nothing ran it
        waits = until(lambda: [w for w in e.waiting_for_placement() if any(s[0] == tpu for s in w.steps)],
                       "tpu waits for placement")
        assert waits[0].requires.get("tpu") is True
        assert not [r for r in lines(log) if r.split()[0] == tpu]
        # a node with a tpu (every queue) joins: it runs there
        tpu_node = nodes.start("tpu=true")
        assert isinstance(e.result(tpu, TIMEOUT), dict)
        assert _where(lines(log), tpu) in Nodes.pids(os.getsid(next(iter(tpu_node))))

        # kill -9 of the emails node's step actor mid-task: a second emails node runs it, one success
        emails_b = nodes.start(args=("--queues", "emails"))
        release = gate / "go"
        held = e.enqueue("held", {"release": str(release), "path": str(tmp_path / "held.log")})
        first = until(lambda: lines(str(tmp_path / "held.log")), "the held task to start")
        victim = int(first[0].split()[1])
        assert victim in Nodes.pids(os.getsid(next(iter(emails_a)))) | Nodes.pids(os.getsid(next(iter(emails_b))))
        os.kill(victim, signal.SIGKILL)
        until(lambda: len(lines(str(tmp_path / "held.log"))) >= 2, "the held task to start again")
        release.touch()
        assert e.result(held, TIMEOUT) == "released"
        assert isinstance(e.task_status(held), TaskSucceeded)
        done = [ev for ev in e.history(held) if ev.kind == "step_completed" and ev.name == "handler"]
        assert len(done) == 1
        second = int(lines(str(tmp_path / "held.log"))[-1].split()[1])
        assert second != victim



def test_chain_members_are_placed_on_the_nodes_of_their_queue(tmp_path: Path, leader_port: int, nodes: Nodes) -> None:
    """A chain's members go where a plain enqueue of them would: their queue's node, with `requires`."""
    log = str(tmp_path / "where.log")
    e = Engine(tmp_path / "d", system="multiproc", admin_port=leader_port, secret=SECRET, sync=False,
               queues=[], remote_tasks=True)
    e.task(queue="emails")(q.where)
    e.task(name="report")(q.where)
    with e:
        emails = nodes.start(args=("--queues", "emails"))
        gpu = nodes.start("gpu=true", args=("--queues", "reports"))
        cid = (e.chain("c").then("where")  # the task's own queue: emails
               .then_all([("report", {"path": log})], queue="reports", requires={"gpu": True})
               .enqueue({"path": log}))
        out = e.result(cid, TIMEOUT)
        assert out["report"]["queue"] == "reports"
        rows = lines(log)
        assert _where(rows, f"{cid}/m0.0") in Nodes.pids(os.getsid(next(iter(emails))))
        assert _where(rows, f"{cid}/m1.0") in Nodes.pids(os.getsid(next(iter(gpu))))


def test_workers_lists_the_worker_nodes_of_the_convention(tmp_path: Path, leader_port: int, nodes: Nodes) -> None:
    """engine.workers() under multiproc: the `actorflow worker` nodes, as Thespian knows them (the
    admin's convention members, each asked for its own capabilities), with their queues and PIDs."""
    e = Engine(tmp_path / "d", system="multiproc", admin_port=leader_port, secret=SECRET, sync=False, remote_tasks=True)
    e.task(queue="emails")(q.where)
    with e:
        assert [w.system for w in e.workers()] == ["multiproc"]  # no node yet: this engine only
        emails = nodes.start(args=("--queues", "emails"))
        gpu = nodes.start("gpu=true", args=("--queues", "reports,emails", "--concurrency", "2"))
        found = until(lambda: [w for w in e.workers() if w.system == "node"] if len(e.workers()) == 3 else None,
                       "both nodes listed")
        by_queues = {w.queues: w for w in found}
        assert set(by_queues) == {("emails",), ("reports", "emails")}
        a, b = by_queues[("emails",)], by_queues[("reports", "emails")]
        assert [a.pid, b.pid] == [proc.pid for proc, _ in nodes.procs]  # the `actorflow worker` processes
        assert emails and gpu
        assert a.capabilities == {} and b.capabilities == {"gpu": True}
        assert all(w.alive and w.started_at > 0 and w.worker_id.startswith("node ") for w in found)


def _handler_events(e: Engine, eid: str) -> list[tuple[str, str]]:
    return [(ev.kind, str((ev.data or {}).get("error", "")) if isinstance(ev.data, dict) else "")
            for ev in e.history(eid) if ev.name == "handler"]


def test_a_node_reports_its_in_flight_to_workers_queue_stats_and_the_cli(tmp_path: Path, leader_port: int,
                                                                          nodes: Nodes) -> None:
    """A handler running on a node is counted on that node (engine.workers(), through the shard that
    placed it), in its queue's in-flight (queue_stats), and `actorflow workers` beside the engine lists
    the node too (from the engine's worker entry, which names the nodes it saw at its last heartbeat)."""
    data = tmp_path / "d"
    e = Engine(data, system="multiproc", admin_port=leader_port, secret=SECRET, sync=False, queues=[], remote_tasks=True)
    e.task(name="held", queue="emails", lease=30)(q.hold)
    release, log = tmp_path / "go", str(tmp_path / "held.log")
    with e:
        nodes.start(args=("--queues", "emails"))
        node_pid = nodes.procs[0][0].pid
        eid = e.enqueue("held", {"release": str(release), "path": log})
        until(lambda: lines(log), "the held task to start on the node")
        node = until(lambda: [w for w in e.workers() if w.system == "node" and w.in_flight == {"emails": 1}],
                     "the node's in-flight count")[0]
        assert node.pid == node_pid and node.alive
        assert e.workers()[0].in_flight == {}  # this engine runs none of it
        assert {s.queue: s.in_flight for s in e.queue_stats()}["emails"] == 1
        # the CLI in another process: the node as the engine's last heartbeat saw it
        listed = until(lambda: [w for w in map(json.loads, _cli(data, "workers+json")[0].splitlines())
                                if w["system"] == "node" and w["in_flight"] == {"emails": 1}], "the CLI to list the node")
        assert listed[0]["pid"] == node_pid and listed[0]["alive"] is True
        release.touch()
        assert e.result(eid, TIMEOUT) == "released"
        until(lambda: [w for w in e.workers() if w.system == "node" and w.in_flight == {}], "the node's count to drop")


def test_a_stalled_handler_on_a_node_loses_its_lease_and_runs_again_once(tmp_path: Path, leader_port: int,
                                                                         nodes: Nodes) -> None:
    """The node is alive, its handler stops heartbeating: the shard that placed it holds its lease,
    journals LeaseLost when it runs out, tells the node (the handler sees ctx.cancelled) and a new
    attempt runs; exactly one success is journaled."""
    e = Engine(tmp_path / "d", system="multiproc", admin_port=leader_port, secret=SECRET, sync=False,
               queues=[], remote_tasks=True)
    e.task(queue="emails", lease=2.0)(q.stall_first)
    log = str(tmp_path / "run.log")
    with e:
        nodes.start(args=("--queues", "emails"))
        eid = e.enqueue("stall_first", {"path": log, "stall": 40})
        assert e.result(eid, TIMEOUT) == "done"
        node_pids = Nodes.pids(nodes.procs[0][1])  # its admin's processes, the step actor's among them
        events = _handler_events(e, eid)
        assert [k for k, _ in events] == ["step_failed", "step_completed"]
        assert events[0][1].startswith("LeaseLost") and "2s lease in node" in events[0][1], events
        assert [w for w in (ln.split()[0] for ln in lines(log)) if w != "stalled-ended"] == ["stall", "ok"]
        assert all(int(ln.split()[2]) in node_pids for ln in lines(log) if not ln.startswith("stalled"))
        until(lambda: "stalled-ended cancelled=True" in lines(log), "the lost handler on the node to be told")
        assert sum(1 for k, _ in _handler_events(e, eid) if k == "step_completed") == 1


def test_a_revoke_reaches_a_handler_on_a_node_and_a_queued_one_never_runs_after_a_restart(
        tmp_path: Path, leader_port: int, nodes: Nodes) -> None:
    from ._handlers import record

    data = tmp_path / "d"
    log = str(tmp_path / "rec.log")

    def engine() -> Engine:
        e = Engine(data, system="multiproc", admin_port=leader_port, secret=SECRET, sync=False, queues=[], remote_tasks=True)
        e.task(queue="emails")(record)
        e.task(name="report", queue="reports")(record)
        return e

    with engine() as e:
        nodes.start(args=("--queues", "emails"))
        running = e.enqueue("record", {"path": log, "hold": 40})
        until(lambda: lines(log), "the handler to start on the node")
        queued = e.enqueue("report", {"path": log, "label": "revoked"})  # no node takes reports yet
        assert e.cancel_by_name("report") == 1
        assert e.cancel_execution(running)
        until(lambda: lines(log + ".cancelled") == [running], "the handler on the node to see ctx.cancelled")
        assert e.task_status(running) == TaskCancelled(running) and e.task_status(queued) == TaskCancelled(queued)
    with engine() as e:  # after a restart a reports node joins: the revoked one never runs, a new one does
        nodes.start(args=("--queues", "reports"))
        after = e.enqueue("report", {"path": log, "label": "after"})
        assert e.result(after, TIMEOUT) == "after"
        assert e.task_status(queued) == TaskCancelled(queued)
        assert "revoked" not in lines(log)


def _most_at_once(rows: list[str]) -> int:
    """The largest number of (began, ended) intervals open at one moment."""
    marks = sorted([(float(r.split()[0]), 1) for r in rows] + [(float(r.split()[1]), -1) for r in rows],
                   key=lambda m: (m[0], m[1]))  # an end before a start at the same instant
    most = now = 0
    for _t, step in marks:
        now += step
        most = max(most, now)
    return most


def test_a_node_runs_at_most_its_concurrency_handlers_at_once(tmp_path: Path, leader_port: int,
                                                              nodes: Nodes) -> None:
    log = str(tmp_path / "spans.log")
    e = Engine(tmp_path / "d", system="multiproc", admin_port=leader_port, secret=SECRET, sync=False,
               queues=[], remote_tasks=True)
    e.task(name="span", queue="reports")(q.span)
    with e:
        node = nodes.start(args=("--queues", "reports", "--concurrency", "2"))
        ids = [e.enqueue("span", {"path": log, "seconds": 0.4}) for _ in range(6)]
        assert [e.result(eid, TIMEOUT) for eid in ids] == ["spanned"] * 6
        rows = lines(log)
        assert len(rows) == 6 and {int(r.split()[2]) for r in rows} <= Nodes.pids(os.getsid(next(iter(node))))
        assert _most_at_once(rows) == 2  # in parallel, and never more than --concurrency
