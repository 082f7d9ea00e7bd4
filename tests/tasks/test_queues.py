"""Named queues, routing, consumers and placement gating, on the embedded and multiprocess system."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from actorflow import ConfigError, Engine
from actorflow.tasks import TaskQueued, TaskSucceeded

from . import _qhandlers as q
from ._handlers import lines

T = 30.0


def _engine(path: Path, system: str = "embedded", **kw: object) -> Engine:
    e = Engine(path, system=system, sync=False, shards=2, **kw)  # type: ignore[arg-type]
    e.task()(q.where)
    e.task(queue="reports")(q.hold)
    e.task(name="mail.welcome")(q.where)
    e.task(name="mail.digest", queue="bulk")(q.where)
    e.task()(q.picky)
    return e


@pytest.mark.parametrize("system", ["embedded", "multiproc"])
def test_routing_precedence_is_journaled_and_seen_by_the_handler(tmp_path: Path, system: str) -> None:
    e = _engine(tmp_path / "d", system)
    e.route("emails", task="mail.*")
    e.route("vip", headers={"tier": "gold*"})
    log = str(tmp_path / "where.log")
    with e:
        ids = {
            "default": e.enqueue("where", {"path": log}),
            "rule": e.enqueue("mail.welcome", {"path": log}),
            "task": e.enqueue("mail.digest", {"path": log}),  # the task's queue beats the rule
            "header": e.enqueue("where", {"path": log}, headers={"tier": "golden"}),
            "explicit": e.enqueue("mail.digest", {"path": log}, queue="urgent"),  # enqueue(queue=) beats all
        }
        got = {k: e.result(v, T)["queue"] for k, v in ids.items()}
        assert got == {"default": "default", "rule": "emails", "task": "bulk", "header": "vip", "explicit": "urgent"}
        listed = {t.execution_id: t.queue for t in e.tasks()}
        assert {k: listed[v] for k, v in ids.items()} == got
        # a changed routing table never moves what is already journaled
        e.route("moved", task="*")
        assert {t.execution_id: t.queue for t in e.tasks()}[ids["default"]] == "default"


def test_routes_from_yaml_and_json_files_and_priority_ranges(tmp_path: Path) -> None:
    e = _engine(tmp_path / "d")
    (tmp_path / "routes.yaml").write_text(
        "default_queue: main\nqueues:\n  bulk: {priority: [0, 3]}\n  emails: {}\n"
        "routes:\n  - {task: 'mail.*', queue: emails}\n  - {headers: {tenant: acme}, queue: acme}\n"
    )
    e.load_routes(tmp_path / "routes.yaml")
    (tmp_path / "more.json").write_text(json.dumps({"routes": [{"task": "picky", "queue": "picky-q"}]}))
    e.load_routes(str(tmp_path / "more.json"))
    with e:
        assert e.default_queue == "main"
        assert e.result(e.enqueue("where", {}), T)["queue"] == "main"
        assert e.result(e.enqueue("where", {}, headers={"tenant": "acme"}), T)["queue"] == "acme"
        assert e.result(e.enqueue("mail.welcome", {}), T)["queue"] == "emails"
        before = len(e.runs())
        with pytest.raises(ConfigError, match=r"priority 5 is outside queue 'bulk'.s range \[0, 3\]"):
            e.enqueue("mail.digest", {}, priority=5)
        assert len(e.runs()) == before  # refused before anything was written
        assert e.result(e.enqueue("mail.digest", {}, priority=3), T)["queue"] == "bulk"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"routes": [{"task": "a", "queue": "x"}, {"task": "b"}]}, r"rule #2: rule .*names no 'queue'"),
        ({"routes": [{"task": "a", "queue": "x", "prio": 1}]}, r"rule #1: unknown key\(s\) 'prio'"),
        ({"routes": [{"queue": "bad name!"}]}, r"rule #1: a queue name is"),
        ({"queues": {"bulk": {"priority": [5, 1]}}}, r"queue 'bulk'.*low <= high"),
        ({"queues": {"bulk": {"max": 3}}}, r"queue 'bulk' takes only 'priority"),
        ({"route": []}, r"unknown key\(s\) 'route'"),
        ({"routes": {"task": "a"}}, r"'routes' must be a list"),
        ({"routes": [{"queue": "x", "headers": ["a"]}]}, r"'headers' must map"),
    ],
)
def test_bad_routing_is_refused_whole_naming_the_rule(tmp_path: Path, doc: dict[str, object], match: str) -> None:
    e = _engine(tmp_path / "d")
    e.route("first", task="keep.*")
    with pytest.raises(ConfigError, match=match) as info:
        e.load_routes(doc)
    pickle.loads(pickle.dumps(info.value))
    router = e._tasks.router
    assert [r.queue for r in router.routes] == ["first"] and "bulk" not in router.queues  # all or nothing


def test_bad_routing_files_and_arguments(tmp_path: Path) -> None:
    e = _engine(tmp_path / "d")
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"routing file .*r\.json.*not valid JSON"):
        e.load_routes(tmp_path / "r.json")
    (tmp_path / "r.yaml").write_text("routes: [a, : b")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        e.load_routes(tmp_path / "r.yaml")
    with pytest.raises(ConfigError, match=r"cannot be read"):
        e.load_routes(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"queue name"):
        e.task(queue="")(q.where)
    with pytest.raises(ConfigError, match=r"Engine\(queues=...\) takes a list"):
        Engine(tmp_path / "x", queues="emails")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"capability 'gpu' must be a bool"):
        Engine(tmp_path / "x", capabilities={"gpu": [1]})
    with e:
        with pytest.raises(ConfigError, match=r"requires must be a dict"):
            e.enqueue("where", {}, requires=["gpu"])  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"headers must be a dict"):
            e.enqueue("where", {}, headers="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("system", ["embedded", "multiproc"])
def test_unplaceable_execution_stays_queued_then_runs_on_a_matching_consumer(tmp_path: Path, system: str) -> None:
    data = tmp_path / "d"
    log = str(tmp_path / "where.log")
    e = _engine(data, system, queues=["default"], capabilities={"region": "eu"})
    with e:
        gpu = e.enqueue("where", {"path": log}, requires={"gpu": True})
        rep = e.enqueue("where", {"path": log}, queue="reports")
        eu = e.enqueue("where", {"path": log}, requires={"region": "eu"})
        assert e.result(eu, T)["queue"] == "default"  # this consumer takes it: it runs
        for eid, why in ((gpu, "with {'gpu': True}"), (rep, "queue 'reports'")):
            st = e.task_status(eid)
            assert isinstance(st, TaskQueued) and why in st.waiting_for, st
        assert {t.execution_id for t in e.tasks(state="queued")} == {gpu, rep}
        stats = {s.queue: s for s in e.queue_stats()}
        assert stats["default"].unplaceable == 1 and stats["reports"].unplaceable == 1
        with pytest.raises(TimeoutError):
            e.result(gpu, 0.5)  # not run: no consumer has a gpu
    assert lines(log) == [f"{eu} default {ln.split()[-1]}" for ln in lines(log)]  # only `eu` ran
    e2 = _engine(data, system, capabilities={"gpu": True})  # every queue, and a gpu
    with e2:
        assert e2.result(gpu, T)["queue"] == "default"
        assert e2.result(rep, T)["queue"] == "reports"
        assert e2.task_status(gpu) == TaskSucceeded(gpu, e2.result(gpu, T))
        assert not any(s.unplaceable for s in e2.queue_stats())
    assert sorted(ln.split()[0] for ln in lines(log)) == sorted([eu, gpu, rep])  # each ran once


def test_placement_requirement_is_data_on_the_handler_step(tmp_path: Path) -> None:
    """What a remote placer reads: the handler step's callable carries its placement as a dict."""
    e = _engine(tmp_path / "d", capabilities={"gpu": True})
    seen: list[dict[str, object]] = []
    e.task(lease=5)(q.picky)
    with e:
        rt = e._runtime()
        real = rt.steps.submit_many

        def spy(steps: list[tuple[object, ...]]) -> None:
            seen.extend(getattr(s[4], "actorflow_step", None) or {} for s in steps)
            real(steps)

        rt.steps.submit_many = spy  # type: ignore[method-assign]
        eid = e.enqueue("picky", {"value": 1}, requires={"gpu": True}, queue="gpus")
        assert e.result(eid, T) == 1
    assert {"kind": "task", "task": "picky", "execution_id": eid, "queue": "gpus", "requires": {"gpu": True},
            "lease": 5.0, "journal_deaths": True} in seen


def test_engine_is_every_queue_by_default(tmp_path: Path) -> None:
    with _engine(tmp_path / "d") as e:
        ids = [e.enqueue("where", {}, queue=name) for name in ("a", "b", "c")]
        assert [e.result(i, T)["queue"] for i in ids] == ["a", "b", "c"]
        assert os.path.isdir(tmp_path / "d")
