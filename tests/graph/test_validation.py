"""Every validation error is reported on load, naming its node or edge, before anything is written."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from actorflow import Engine
from actorflow.graph import (
    ExecutorRegistry,
    GraphRunner,
    GraphValidationError,
    load_definition,
    parse_definition,
)

from .conftest import chain


def problems(data: Any, registry: ExecutorRegistry | None) -> list[str]:
    with pytest.raises(GraphValidationError) as info:
        parse_definition(data, registry)
    return [str(p) for p in info.value.problems]


def one(data: Any, registry: ExecutorRegistry | None, *fragments: str) -> str:
    found = problems(data, registry)
    hits = [p for p in found if all(f in p for f in fragments)]
    assert hits, f"no problem mentions {fragments}: {found}"
    return hits[0]


def test_a_valid_chain_loads(registry: ExecutorRegistry) -> None:
    graph = parse_definition(chain("a", "b", "c"), registry)
    assert graph.start == "a" and graph.ends == {"c"}
    assert [e.id for e in graph.edges] == ["a->b", "b->c"]
    assert parse_definition(graph.to_dict(), registry).digest() == graph.digest()


def test_unknown_executor_type(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["nodes"][1]["type"] = "task.nope.missing"
    assert one(data, registry, "node 'b'", "unknown executor type 'task.nope.missing'")
    parse_definition(data, None)  # structure alone is fine without a registry


def test_dangling_edge(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["edges"].append({"from": "b", "to": "ghost"})
    assert one(data, registry, "edge 'b->ghost'", "dangling edge", "'to'", "ghost")


def test_no_start_node(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["edges"].append({"from": "b", "to": "a"})
    one(data, registry, "no start node", "every node has an incoming edge")
    data = {"nodes": [{"id": "a", "type": "test.echo"}, {"id": "b", "type": "test.echo"}], "edges": []}
    one(data, registry, "no start node", "several nodes have none (a, b)")
    data["start"] = "zzz"
    one(data, registry, "start names no node")


def test_unreachable_end(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["start"] = "a"
    data["nodes"].append({"id": "lost", "type": "test.echo"})
    one(data, registry, "node 'lost'", "unreachable", "end node")


def test_cycle_without_exit(registry: ExecutorRegistry) -> None:
    data = chain("a", "b", "c")
    data["edges"].append({"from": "c", "to": "b"})
    msg = one(data, registry, "a cycle without an exit")
    assert "b -> c" in msg
    one(data, registry, "no end node")
    # a loop that can leave is fine
    data["edges"].append({"from": "c", "to": "d", "condition": {"==": [{"var": "done"}, True]}})
    data["nodes"].append({"id": "d", "type": "test.echo"})
    parse_definition(data, registry)


def test_duplicate_ids(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["nodes"].append({"id": "b", "type": "test.echo"})
    data["edges"].append({"id": "x", "from": "a", "to": "b", "port": "p"})
    data["edges"].append({"id": "x", "from": "a", "to": "b", "port": "q"})
    found = problems(data, registry)
    assert "node 'b': duplicate node id" in found
    assert "edge 'x': duplicate edge id" in found


def test_config_rejected_by_the_executor(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["nodes"][1]["config"] = {"output": [1, 2]}
    one(data, registry, "node 'b'", "config rejected by 'test.echo'", "output must be an object")
    data["nodes"][1] = {"id": "b", "type": "graph.wait", "config": {}}
    one(data, registry, "node 'b'", "config rejected by 'graph.wait'", "seconds")


def test_non_json_values(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["nodes"][0]["config"] = {"when": {1, 2}}
    one(data, registry, "node 'a'", "set is not JSON")
    data["nodes"][0]["config"] = {"x": float("nan")}
    one(data, registry, "node 'a'", "not a JSON number")
    data["nodes"][0]["config"] = {"x": {3: "three"}}
    one(data, registry, "node 'a'", "key 3 is a int")


def test_bad_fields_conditions_ports_and_retry(registry: ExecutorRegistry) -> None:
    data = chain("a", "b", "c")
    data["nodes"][0]["colour"] = "red"
    data["nodes"][1]["retry"] = {"max_attempts": 0, "backoff": "sometimes"}
    data["nodes"][1]["timeout"] = -1
    data["edges"][1]["condition"] = {"~=": [1, 2]}
    data["edges"].append({"from": "a", "to": "c", "on_error": "*", "port": "x"})
    found = problems(data, registry)
    text = "\n".join(found)
    assert "node 'a': unknown key(s) 'colour'" in text
    assert "retry.max_attempts must be an integer >= 1" in text and "retry.backoff" in text
    assert "node 'b': timeout must be a positive number" in text
    assert "edge 'b->c'" in text and "unknown operator '~='" in text
    assert "an on_error edge takes no port or condition" in text


def test_routing_ambiguity_and_undeclared_ports(registry: ExecutorRegistry) -> None:
    data = {
        "nodes": [{"id": "a", "type": "test.echo"}, {"id": "b", "type": "test.echo"}, {"id": "c", "type": "test.echo"},
                  {"id": "d", "type": "test.echo"}],
        "edges": [{"from": "a", "to": "b", "condition": {"var": "x"}}, {"from": "a", "to": "c"}, {"from": "a", "to": "d"}],
    }
    one(data, registry, "node 'a'", "mix conditions with several unconditional edges")
    ut = {
        "nodes": [{"id": "a", "type": "graph.user_task"}, {"id": "b", "type": "test.echo"}],
        "edges": [{"from": "a", "to": "b", "port": "timeout"}],
    }
    one(ut, registry, "node 'a'", "port 'timeout' but no config.timeout")
    ut["edges"] = [{"from": "a", "to": "b", "port": "approved"}]
    one(ut, registry, "edge 'a->b:approved'", "not an output port")


def test_the_error_lists_every_problem_and_survives_pickling(registry: ExecutorRegistry) -> None:
    data = chain("a", "b")
    data["nodes"][0]["type"] = "nope.one"
    data["nodes"][1]["type"] = "nope.two"
    with pytest.raises(GraphValidationError) as info:
        parse_definition(data, registry)
    err = info.value
    assert len(err.problems) == 2 and "nope.one" in str(err) and "nope.two" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert copy.problems == err.problems and str(copy) == str(err)


def test_invalid_definition_starts_nothing(engine: Engine, runner: GraphRunner) -> None:
    data = chain("a", "b")
    data["edges"].append({"from": "b", "to": "ghost"})
    with pytest.raises(GraphValidationError):
        runner.start(data, {"x": 1}, run_id="never")
    assert engine.runs() == []


def test_bad_files(tmp_path: Any, registry: ExecutorRegistry) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [\n  {"id": "a",, }]}')
    with pytest.raises(GraphValidationError) as info:
        load_definition(bad, registry)
    assert "not valid JSON" in str(info.value) and "line 2" in str(info.value)
    good = tmp_path / "g.yaml"
    good.write_text("nodes:\n  - {id: a, type: test.echo}\n  - {id: b, type: test.echo}\nedges:\n  - {from: a, to: b}\n")
    assert load_definition(good, registry).start == "a"
