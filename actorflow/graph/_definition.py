"""Graph definitions as data: parsing plain dicts (from JSON/YAML) into a validated `GraphDefinition`.

Validation collects every problem before raising, each naming its node, edge or field: a designer
shows them all at once, and nothing is started with a definition that has one."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._retry import RetryPolicy
from ..errors import StepTimeout
from ._checks import check_graph
from ._errors import GraphValidationError, Problem
from ._executor import BUILTIN_TYPES, FAIL, PASS, USER_TASK, WAIT, ExecutorRegistry
from ._expr import check_expression
from ._paths import json_problems, to_json
from ._results import ErrorType

__all__ = ["GraphDefinition", "NodeDef", "EdgeDef", "RetrySpec", "parse_definition", "error_matches"]

_TOP_KEYS = {"name", "version", "description", "start", "nodes", "edges", "max_steps", "meta"}
_NODE_KEYS = {"id", "type", "config", "retry", "timeout", "join", "name", "description", "meta"}
_EDGE_KEYS = {"id", "from", "to", "port", "condition", "on_error", "meta"}
_RETRY_KEYS = {"max_attempts", "backoff", "initial_delay", "max_delay", "multiplier", "jitter", "errors"}
DEFAULT_MAX_STEPS = 10_000


def error_matches(patterns: tuple[str, ...], error_type: str) -> bool:
    """`*` matches every error type, `task_failed` every one but `timeout`, anything else itself."""
    for p in patterns:
        if p == "*" or p == error_type or (p == "task_failed" and error_type != ErrorType.TIMEOUT):
            return True
    return False


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """A node's retry policy as data; `errors` limits which error types are retried (None: all)."""

    max_attempts: int = 3
    backoff: str = "exponential"  # exponential | linear | none
    initial_delay: float = 1.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: bool = False
    errors: tuple[str, ...] | None = None

    def covers(self, error_type: str) -> bool:
        return self.errors is None or error_matches(self.errors, error_type)

    def policy(self) -> RetryPolicy:
        """The engine policy for the node's step (timeouts are retried only if `errors` covers them)."""
        non_retryable: tuple[type[BaseException], ...] = () if self.covers(ErrorType.TIMEOUT) else (StepTimeout,)
        if self.backoff == "none" or self.max_attempts == 1:
            return RetryPolicy(max_attempts=self.max_attempts, non_retryable=non_retryable)
        if self.backoff == "linear":
            return RetryPolicy.linear(self.max_attempts, self.initial_delay, self.jitter, self.max_delay, non_retryable)
        return RetryPolicy.exponential(
            self.max_attempts, self.initial_delay, self.max_delay, self.multiplier, self.jitter, non_retryable
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
            "errors": None if self.errors is None else list(self.errors),
        }


@dataclass(frozen=True)
class NodeDef:
    id: str
    type: str
    config: Mapping[str, Any] = field(default_factory=dict)
    retry: RetrySpec | None = None
    timeout: float | None = None
    join: bool = False
    name: str = ""
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "config": dict(self.config)}
        if self.retry is not None:
            out["retry"] = self.retry.to_dict()
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.join:
            out["join"] = True
        for key in ("name", "description"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class EdgeDef:
    id: str
    source: str
    target: str
    port: str | None = None
    condition: Any = None
    on_error: tuple[str, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "from": self.source, "to": self.target}
        if self.port is not None:
            out["port"] = self.port
        if self.condition is not None:
            out["condition"] = self.condition
        if self.on_error is not None:
            out["on_error"] = list(self.on_error)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class GraphDefinition:
    """A validated graph: build it with `parse_definition` / `load_definition`, not by hand."""

    name: str
    start: str
    nodes: tuple[NodeDef, ...]
    edges: tuple[EdgeDef, ...]
    version: str = ""
    description: str = ""
    max_steps: int = DEFAULT_MAX_STEPS
    meta: Mapping[str, Any] = field(default_factory=dict)
    nodes_by_id: dict[str, NodeDef] = field(init=False, repr=False, compare=False)
    _out: dict[str, tuple[EdgeDef, ...]] = field(init=False, repr=False, compare=False)
    _in: dict[str, tuple[EdgeDef, ...]] = field(init=False, repr=False, compare=False)
    ends: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out: dict[str, list[EdgeDef]] = {n.id: [] for n in self.nodes}
        inc: dict[str, list[EdgeDef]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            out.setdefault(e.source, []).append(e)
            inc.setdefault(e.target, []).append(e)
        object.__setattr__(self, "nodes_by_id", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_out", {k: tuple(v) for k, v in out.items()})
        object.__setattr__(self, "_in", {k: tuple(v) for k, v in inc.items()})
        ends = {n.id for n in self.nodes if not any(e.on_error is None for e in out[n.id])}
        object.__setattr__(self, "ends", frozenset(ends))

    def node(self, node_id: str) -> NodeDef:
        return self.nodes_by_id[node_id]

    def outgoing(self, node_id: str) -> tuple[EdgeDef, ...]:
        return self._out.get(node_id, ())

    def incoming(self, node_id: str) -> tuple[EdgeDef, ...]:
        return self._in.get(node_id, ())

    def to_dict(self) -> dict[str, Any]:
        """The canonical plain-JSON form (what a graph run journals as its input)."""
        out: dict[str, Any] = {
            "name": self.name,
            "start": self.start,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
            "max_steps": self.max_steps,
        }
        for key in ("version", "description"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal for equal graphs, whatever the key order of the source."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Parser:
    def __init__(self, registry: ExecutorRegistry | None) -> None:
        self.registry = registry
        self.problems: list[Problem] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def unknown_keys(self, where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            self.bad(where, f"unknown key(s) {', '.join(map(repr, extra))} (allowed: {', '.join(sorted(allowed))})")

    def retry(self, where: str, data: Any) -> RetrySpec | None:
        if not isinstance(data, Mapping):
            self.bad(where, f"retry must be an object, got {type(data).__name__}")
            return None
        self.unknown_keys(where, data, _RETRY_KEYS)
        spec = RetrySpec()
        ok = True
        attempts = data.get("max_attempts", spec.max_attempts)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            self.bad(where, f"retry.max_attempts must be an integer >= 1, got {attempts!r}")
            ok = False
        backoff = data.get("backoff", spec.backoff)
        if backoff not in ("exponential", "linear", "none"):
            self.bad(where, f"retry.backoff must be 'exponential', 'linear' or 'none', got {backoff!r}")
            ok = False
        nums = {}
        for key in ("initial_delay", "max_delay", "multiplier"):
            value = data.get(key, getattr(spec, key))
            if not _num(value) or value < (1 if key == "multiplier" else 0):
                self.bad(where, f"retry.{key} must be a number >= {1 if key == 'multiplier' else 0}, got {value!r}")
                ok = False
            nums[key] = value
        jitter = data.get("jitter", False)
        if not isinstance(jitter, bool):
            self.bad(where, f"retry.jitter must be true or false, got {jitter!r}")
            ok = False
        errors = data.get("errors")
        if errors is not None and (not isinstance(errors, list) or not all(isinstance(e, str) for e in errors)):
            self.bad(where, f"retry.errors must be a list of error type strings, got {errors!r}")
            ok = False
        if not ok:
            return None
        return RetrySpec(
            attempts, backoff, float(nums["initial_delay"]), float(nums["max_delay"]), float(nums["multiplier"]),
            jitter, None if errors is None else tuple(errors),
        )

    def node(self, i: int, data: Any) -> NodeDef | None:
        if not isinstance(data, Mapping):
            self.bad(f"nodes[{i}]", f"a node must be an object, got {type(data).__name__}")
            return None
        nid = data.get("id")
        if not isinstance(nid, str) or not nid:
            self.bad(f"nodes[{i}]", f"node id must be a non-empty string, got {nid!r}")
            return None
        where = f"node {nid!r}"
        self.unknown_keys(where, data, _NODE_KEYS)
        for p in json_problems(dict(data), "node"):
            self.bad(where, p)
        ntype = data.get("type")
        if not isinstance(ntype, str) or not ntype:
            self.bad(where, f"type must be a non-empty string, got {ntype!r}")
            ntype = ""
        elif self.registry is not None and not self.registry.knows(ntype):
            known = ", ".join(self.registry.types() + list(BUILTIN_TYPES))
            self.bad(where, f"unknown executor type {ntype!r} (registered: {known})")
        config = data.get("config", {})
        if not isinstance(config, Mapping):
            self.bad(where, f"config must be an object, got {type(config).__name__}")
            config = {}
        retry = None if data.get("retry") is None else self.retry(where, data["retry"])
        timeout = data.get("timeout")
        if timeout is not None and (not _num(timeout) or timeout <= 0):
            self.bad(where, f"timeout must be a positive number of seconds, got {timeout!r}")
            timeout = None
        join = data.get("join", False)
        if not isinstance(join, bool):
            self.bad(where, f"join must be true or false, got {join!r}")
            join = False
        meta = data.get("meta", {})
        if not isinstance(meta, Mapping):
            self.bad(where, "meta must be an object")
            meta = {}
        if ntype in BUILTIN_TYPES and (retry is not None or timeout is not None):
            self.bad(where, f"built-in type {ntype!r} takes no retry/timeout (a user task's timeout goes in its config)")
        try:
            config = to_json(config, "config")
        except ValueError:
            config = {}
        self.config(where, ntype, config)
        return NodeDef(nid, ntype, config, retry, None if timeout is None else float(timeout), join,
                       str(data.get("name", "")), str(data.get("description", "")), to_json(meta, "meta") if not json_problems(meta, "meta") else {})

    def config(self, where: str, ntype: str, config: Mapping[str, Any]) -> None:
        msgs: list[str] = []
        if ntype == PASS:
            if "result" in config and not isinstance(config["result"], Mapping):
                msgs.append("config.result must be an object")
            msgs += [f"unknown config key {k!r}" for k in config if k != "result"]
        elif ntype == WAIT:
            has = [k for k in ("seconds", "seconds_var") if k in config]
            if len(has) != 1:
                msgs.append("config needs exactly one of 'seconds' (number) or 'seconds_var' (path)")
            elif has == ["seconds"] and (not _num(config["seconds"]) or config["seconds"] < 0):
                msgs.append(f"config.seconds must be a number >= 0, got {config['seconds']!r}")
            elif has == ["seconds_var"] and not isinstance(config["seconds_var"], str):
                msgs.append("config.seconds_var must be a path string")
        elif ntype == USER_TASK:
            sig = config.get("signal")
            if sig is not None and (not isinstance(sig, str) or not sig):
                msgs.append(f"config.signal must be a non-empty string, got {sig!r}")
            t = config.get("timeout")
            if t is not None and (not _num(t) or t <= 0):
                msgs.append(f"config.timeout must be a positive number of seconds, got {t!r}")
            pf = config.get("port_from")
            if pf is not None and not isinstance(pf, str):
                msgs.append(f"config.port_from must be a path string, got {pf!r}")
        elif ntype == FAIL:
            for k in ("error", "cause"):
                if k in config and not isinstance(config[k], str):
                    msgs.append(f"config.{k} must be a string")
        elif ntype and self.registry is not None and ntype in self.registry:
            try:
                msgs = list(self.registry.get(ntype).validate_config(config))
            except Exception as exc:  # noqa: BLE001 - a validator bug is reported, not raised mid-validation
                msgs = [f"validate_config raised {type(exc).__name__}: {exc}"]
        for m in msgs:
            self.bad(where, f"config rejected by {ntype!r}: {m}")

    def edge(self, i: int, data: Any, node_ids: set[str], seen: set[str]) -> EdgeDef | None:
        if not isinstance(data, Mapping):
            self.bad(f"edges[{i}]", f"an edge must be an object, got {type(data).__name__}")
            return None
        src, dst, port = data.get("from"), data.get("to"), data.get("port")
        eid = data.get("id")
        if eid is None:
            eid = f"{src}->{dst}" + (f":{port}" if port is not None else "")
            if eid in seen:
                eid = f"{eid}#{i}"
        elif not isinstance(eid, str) or not eid:
            self.bad(f"edges[{i}]", f"edge id must be a non-empty string, got {eid!r}")
            return None
        where = f"edge {eid!r}"
        if eid in seen:
            self.bad(where, "duplicate edge id")
        seen.add(eid)
        self.unknown_keys(where, data, _EDGE_KEYS)
        for p in json_problems(dict(data), "edge"):
            self.bad(where, p)
        ok = True
        for key, value in (("from", src), ("to", dst)):
            if not isinstance(value, str):
                self.bad(where, f"'{key}' must be a node id string, got {value!r}")
                ok = False
            elif value not in node_ids:
                self.bad(where, f"dangling edge: '{key}' names no node ({value!r})")
                ok = False
        if port is not None and (not isinstance(port, str) or not port):
            self.bad(where, f"port must be a non-empty string, got {port!r}")
            ok = False
        cond = data.get("condition")
        if cond is not None:
            for p in check_expression(cond):
                self.bad(where, p)
                ok = False
        on_error = data.get("on_error")
        if on_error is not None:
            if isinstance(on_error, str):
                on_error = [on_error]
            if not isinstance(on_error, list) or not on_error or not all(isinstance(x, str) for x in on_error):
                self.bad(where, f"on_error must be an error type or a list of them ('*' for any), got {on_error!r}")
                ok = False
            elif port is not None or cond is not None:
                self.bad(where, "an on_error edge takes no port or condition")
                ok = False
        if not ok:
            return None
        meta = data.get("meta", {})
        return EdgeDef(eid, str(src), str(dst), port, cond, None if on_error is None else tuple(on_error),
                       meta if isinstance(meta, Mapping) else {})


def parse_definition(data: Any, registry: ExecutorRegistry | None = None, source: str = "graph definition") -> GraphDefinition:
    """Validate a definition (plain dict) and build the graph; GraphValidationError lists every problem.

    Without a registry, node types and executor configs are not checked (structure only)."""
    p = _Parser(registry)
    if not isinstance(data, Mapping):
        raise GraphValidationError([Problem("definition", f"must be a JSON object, got {type(data).__name__}")], source)
    p.unknown_keys("definition", data, _TOP_KEYS)
    name = data.get("name", "")
    if not isinstance(name, str):
        p.bad("definition", f"name must be a string, got {name!r}")
    max_steps = data.get("max_steps", DEFAULT_MAX_STEPS)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        p.bad("definition", f"max_steps must be an integer >= 1, got {max_steps!r}")
        max_steps = DEFAULT_MAX_STEPS
    raw_nodes, raw_edges = data.get("nodes"), data.get("edges", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        p.bad("definition", "nodes must be a non-empty list")
        raw_nodes = []
    if not isinstance(raw_edges, list):
        p.bad("definition", "edges must be a list")
        raw_edges = []
    nodes: list[NodeDef] = []
    ids: set[str] = set()
    for i, raw in enumerate(raw_nodes):
        node = p.node(i, raw)
        if node is None:
            continue
        if node.id in ids:
            p.bad(f"node {node.id!r}", "duplicate node id")
            continue
        ids.add(node.id)
        nodes.append(node)
    seen: set[str] = set()
    edges = [e for i, raw in enumerate(raw_edges) if (e := p.edge(i, raw, ids, seen)) is not None]
    start = data.get("start")
    if start is not None and (not isinstance(start, str) or start not in ids):
        p.bad("definition", f"start names no node ({start!r})")
        start = None
    if p.problems:
        raise GraphValidationError(p.problems, source)
    if start is None:
        targets = {e.target for e in edges}
        roots = [n.id for n in nodes if n.id not in targets]
        if len(roots) != 1:
            why = "every node has an incoming edge" if not roots else f"several nodes have none ({', '.join(roots)})"
            p.bad("definition", f"no start node: {why}; set 'start'")
            raise GraphValidationError(p.problems, source)
        start = roots[0]
    graph = GraphDefinition(
        name, start, tuple(nodes), tuple(edges), str(data.get("version", "")), str(data.get("description", "")),
        max_steps, to_json(data.get("meta", {}), "meta") if isinstance(data.get("meta", {}), Mapping) else {},
    )
    check_graph(graph, registry, p.problems)
    if p.problems:
        raise GraphValidationError(p.problems, source)
    return graph
