"""Import a subset of the Amazon States Language into the graph model (plain definition dicts).

Supported: Task (Resource = executor schema type, static Parameters = config, TimeoutSeconds, one
Retry entry, Catch), Choice (comparison rules, And/Or/Not, Default), Wait (Seconds, SecondsPath),
Parallel (Branches, no Retry/Catch of its own), Pass (Result), Succeed, Fail (Error, Cause).
Anything else (Map, Timestamp comparisons, InputPath/OutputPath/ResultPath, `.$` parameters) is
refused with a problem naming the state, rather than run with different semantics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._errors import GraphValidationError, Problem
from ._executor import FAIL, PASS, SUCCEED, WAIT

__all__ = ["from_asl", "is_asl"]

_ERRORS = {"States.ALL": "*", "States.Timeout": "timeout", "States.TaskFailed": "task_failed"}
_COMPARE = {
    "Equals": "==",
    "LessThan": "<",
    "GreaterThan": ">",
    "LessThanEquals": "<=",
    "GreaterThanEquals": ">=",
}
_KINDS = {"String": "string", "Numeric": "number", "Boolean": "boolean"}
_TYPE_TESTS = {"IsNull": "null", "IsNumeric": "number", "IsString": "string", "IsBoolean": "boolean"}
_COMMON = {"Type", "Comment"}
_ALLOWED = {
    "Task": {"Resource", "Parameters", "TimeoutSeconds", "Retry", "Catch", "Next", "End"},
    "Choice": {"Choices", "Default"},
    "Wait": {"Seconds", "SecondsPath", "Next", "End"},
    "Parallel": {"Branches", "Next", "End"},
    "Pass": {"Result", "Next", "End"},
    "Succeed": set(),
    "Fail": {"Error", "Cause"},
}


def is_asl(data: Any) -> bool:
    return isinstance(data, Mapping) and "StartAt" in data and "States" in data


def _path(p: Any) -> str | None:
    """`$.a.b[0]` -> `a.b.0` (None if not a plain reference path)."""
    if not isinstance(p, str) or not p.startswith("$"):
        return None
    rest = p[1:]
    if rest == "":
        return ""
    if not re.fullmatch(r"(\.[A-Za-z_][\w-]*|\[\d+\])+", rest):
        return None
    return ".".join(re.findall(r"[A-Za-z_][\w-]*|\d+", rest))


class _Importer:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self.catches: list[tuple[str, str, Mapping[str, Any], str]] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def machine(self, data: Mapping[str, Any], prefix: str, where: str) -> tuple[str, list[str]]:
        """Import one state machine; returns its start node id and the ids that end it."""
        states = data.get("States")
        start = data.get("StartAt")
        if not isinstance(states, Mapping) or not states:
            self.bad(where, "States must be a non-empty object")
            return "", []
        if start not in states:
            self.bad(where, f"StartAt {start!r} names no state")
        extra = set(data) - {"StartAt", "States", "Comment", "Version"}
        if extra:
            self.bad(where, f"unsupported field(s) {', '.join(sorted(extra))}")
        ends: list[str] = []
        for name, state in states.items():
            end = self.state(prefix, name, state, states)
            if end is not None:
                ends.append(end)
        return prefix + str(start), ends

    def state(self, prefix: str, name: str, st: Any, states: Mapping[str, Any]) -> str | None:
        """Import one state; returns the node that ends its machine if it does (End, Succeed)."""
        nid = prefix + name
        where = f"state {nid!r}"
        if not isinstance(st, Mapping):
            self.bad(where, "a state must be an object")
            return None
        kind = st.get("Type")
        if kind not in _ALLOWED:
            self.bad(where, f"Type {kind!r} is not supported (supported: {', '.join(_ALLOWED)})")
            return None
        extra = set(st) - _ALLOWED[kind] - _COMMON
        if extra:
            self.bad(where, f"{kind} field(s) {', '.join(sorted(extra))} not supported")
        nxt = st.get("Next")
        if nxt is not None and nxt not in states:
            self.bad(where, f"Next {nxt!r} names no state")
        if kind in ("Task", "Wait", "Pass", "Parallel") and (nxt is None) == (st.get("End") is not True):
            self.bad(where, "needs exactly one of Next or End: true")
        node: dict[str, Any] = {"id": nid, "meta": {"asl_type": kind}}
        if kind == "Task":
            self.task(prefix, node, st, where)
        elif kind == "Choice":
            node["type"] = PASS
            self.choice(prefix, nid, st, states, where)
        elif kind == "Wait":
            node["type"] = WAIT
            if "Seconds" in st:
                node["config"] = {"seconds": st["Seconds"]}
            elif _path(st.get("SecondsPath")) is not None:
                node["config"] = {"seconds_var": _path(st["SecondsPath"])}
            else:
                self.bad(where, "Wait needs Seconds or a SecondsPath like '$.delay' (Timestamp is not supported)")
        elif kind == "Pass":
            node["type"] = PASS
            if "Result" in st:
                if not isinstance(st["Result"], Mapping):
                    self.bad(where, "Pass Result must be an object (graph outputs are objects)")
                else:
                    node["config"] = {"result": st["Result"]}
        elif kind == "Succeed":  # inside a Parallel branch it ends the branch: a pass into the join
            node["type"] = PASS if prefix else SUCCEED
        elif kind == "Fail":
            node["type"] = FAIL
            node["config"] = {k.lower(): st[k] for k in ("Error", "Cause") if k in st}
        elif kind == "Parallel":
            node["type"] = PASS
            self.parallel(nid, st, where)
        self.nodes.append(node)
        if nxt is not None and kind != "Parallel":
            self.edges.append({"from": nid, "to": prefix + nxt})
        elif nxt is not None:
            self.edges.append({"from": f"{nid}.join", "to": prefix + nxt})
        if st.get("End") is True or kind == "Succeed":
            return f"{nid}.join" if kind == "Parallel" else nid
        return None

    def task(self, prefix: str, node: dict[str, Any], st: Mapping[str, Any], where: str) -> None:
        resource = st.get("Resource")
        if not isinstance(resource, str):
            self.bad(where, "Task needs a Resource (the executor schema type, e.g. 'task.email.send')")
        node["type"] = resource
        params = st.get("Parameters", {})
        if not isinstance(params, Mapping):
            self.bad(where, "Parameters must be an object")
        elif any(str(k).endswith(".$") for k in params):
            self.bad(where, "Parameters with '.$' paths are not supported (static values become the node config)")
        else:
            node["config"] = dict(params)
        if "TimeoutSeconds" in st:
            node["timeout"] = st["TimeoutSeconds"]
        retry = st.get("Retry")
        if retry is not None:
            if not isinstance(retry, list) or len(retry) != 1 or not isinstance(retry[0], Mapping):
                self.bad(where, "only one Retry entry per state is supported")
            else:
                node["retry"] = self.retrier(retry[0], where)
        for i, c in enumerate(st.get("Catch") or []):
            if not isinstance(c, Mapping) or not isinstance(c.get("Next"), str):
                self.bad(where, f"Catch[{i}] needs ErrorEquals and Next")
                continue
            if c.get("ResultPath", "$") not in ("$", "$.error"):
                self.bad(where, f"Catch[{i}] ResultPath {c['ResultPath']!r} not supported (the error arrives as $.error)")
            self.catches.append((node["id"], prefix, c, where))

    def retrier(self, r: Mapping[str, Any], where: str) -> dict[str, Any]:
        extra = set(r) - {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "JitterStrategy"}
        if extra:
            self.bad(where, f"Retry field(s) {', '.join(sorted(extra))} not supported")
        errors = [_ERRORS.get(e, e) for e in r.get("ErrorEquals", ["States.ALL"])]
        max_attempts = r.get("MaxAttempts", 3)
        out: dict[str, Any] = {
            "max_attempts": max_attempts + 1 if isinstance(max_attempts, int) else max_attempts,
            "backoff": "exponential",
            "initial_delay": r.get("IntervalSeconds", 1),
            "multiplier": r.get("BackoffRate", 2.0),
            "jitter": r.get("JitterStrategy", "NONE") == "FULL",
            "errors": errors,
        }
        if "MaxDelaySeconds" in r:
            out["max_delay"] = r["MaxDelaySeconds"]
        return out

    def choice(self, prefix: str, nid: str, st: Mapping[str, Any], states: Mapping[str, Any], where: str) -> None:
        choices = st.get("Choices")
        if not isinstance(choices, list) or not choices:
            self.bad(where, "Choice needs a non-empty Choices list")
            return
        for i, rule in enumerate(choices):
            cond = self.rule(rule, f"{where} Choices[{i}]")
            target = rule.get("Next") if isinstance(rule, Mapping) else None
            if not isinstance(target, str) or target not in states:
                self.bad(f"{where} Choices[{i}]", f"Next {target!r} names no state")
                continue
            if cond is not None:
                self.edges.append({"id": f"{nid}[{i}]", "from": nid, "to": prefix + target, "condition": cond})
        default = st.get("Default")
        if default is not None:
            if default not in states:
                self.bad(where, f"Default {default!r} names no state")
            else:
                self.edges.append({"id": f"{nid}[default]", "from": nid, "to": prefix + default})

    def rule(self, rule: Any, where: str) -> Any:
        if not isinstance(rule, Mapping):
            self.bad(where, "a choice rule must be an object")
            return None
        keys = set(rule) - {"Next", "Comment"}
        for op in ("And", "Or"):
            if op in keys:
                parts = [self.rule(r, f"{where}.{op}[{i}]") for i, r in enumerate(rule[op] or [])]
                return {op.lower(): parts} if parts and None not in parts else None
        if "Not" in keys:
            inner = self.rule(rule["Not"], f"{where}.Not")
            return None if inner is None else {"not": inner}
        path = _path(rule.get("Variable"))
        if path is None:
            self.bad(where, f"Variable must be a path like '$.amount', got {rule.get('Variable')!r}")
            return None
        var = {"var": path}
        tests = keys - {"Variable"}
        if len(tests) != 1:
            self.bad(where, f"a rule needs exactly one comparison, got {sorted(tests)}")
            return None
        op = tests.pop()
        value = rule[op]
        if op == "IsPresent":
            return {"exists": path} if value else {"not": {"exists": path}}
        if op in _TYPE_TESTS:
            test = {"and": [{"exists": path}, {"==": [{"type": var}, _TYPE_TESTS[op]]}]}
            return test if value else {"not": test}
        if op == "StringMatches":
            return {"matches": [var, value]}
        m = re.fullmatch(r"(String|Numeric|Boolean)(Equals|LessThan|GreaterThan|LessThanEquals|GreaterThanEquals)(Path)?", op)
        if m is None or (m.group(1) == "Boolean" and m.group(2) != "Equals"):
            self.bad(where, f"comparison {op!r} is not supported")
            return None
        if m.group(3):
            other = _path(value)
            if other is None:
                self.bad(where, f"{op} needs a path like '$.limit', got {value!r}")
                return None
            operand: Any = {"var": other}
        else:
            operand = value
        return {"and": [{"==": [{"type": var}, _KINDS[m.group(1)]]}, {_COMPARE[m.group(2)]: [var, operand]}]}

    def parallel(self, nid: str, st: Mapping[str, Any], where: str) -> None:
        branches = st.get("Branches")
        if not isinstance(branches, list) or len(branches) < 2:
            self.bad(where, "Parallel needs at least two Branches")
            return
        join = f"{nid}.join"
        self.nodes.append({"id": join, "type": PASS, "join": True, "meta": {"asl_type": "Parallel.join"}})
        for i, branch in enumerate(branches):
            if not isinstance(branch, Mapping):
                self.bad(f"{where} Branches[{i}]", "a branch must be a state machine object")
                continue
            start, ends = self.machine(branch, f"{nid}[{i}].", f"{where} Branches[{i}]")
            self.edges.append({"from": nid, "to": start})
            for end in ends:
                self.edges.append({"from": end, "to": join})


def from_asl(data: Mapping[str, Any], source: str = "state machine") -> dict[str, Any]:
    """A graph definition dict from an ASL document (validate it with `parse_definition` next)."""
    imp = _Importer()
    start, _ends = imp.machine(data, "", "state machine")
    ids = {n["id"] for n in imp.nodes}
    for nid, prefix, c, where in imp.catches:
        target = prefix + str(c["Next"])
        if target not in ids:
            imp.bad(where, f"Catch Next {c['Next']!r} names no state")
            continue
        errors = [_ERRORS.get(e, e) for e in c.get("ErrorEquals", ["States.ALL"])]
        imp.edges.append({"from": nid, "to": target, "on_error": errors})
    if imp.problems:
        raise GraphValidationError(imp.problems, source)
    out: dict[str, Any] = {"name": str(data.get("Comment", "")), "start": start, "nodes": imp.nodes, "edges": imp.edges}
    return out
