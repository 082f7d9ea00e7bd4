"""Edge conditions: a small JSON-logic style expression language, checked on load, never `eval`'d.

An expression is a JSON literal, a list (of expressions), or an object with exactly one operator key:

    {"var": "amount"}                     the variable at a dot/index path (missing: null)
    {"var": ["approval.level", 1]}        ... with a default
    {"exists": "approval.decision"}       true if the path is present
    {"==": [a, b]}  {"!=": [a, b]}        strict equality (true is not 1)
    {"<": [a, b]}  {"<=": ...} {">": ...} {">=": ...}   numbers with numbers, strings with strings;
                                          any other pair is false
    {"and": [...]}  {"or": [...]}  {"not": x}  {"!": x}  truthiness as in Python/JSON
    {"in": [x, list_or_string]}
    {"matches": [string, "INV-*"]}        glob with `*` (`\\*` for a literal star)
    {"type": x}                           "null" | "boolean" | "number" | "string" | "array" | "object"
    {"+": [..]} {"-": [a, b]} {"*": [..]} {"/": [a, b]}   numbers only

Variables are the workflow variables: the workflow input merged with every node output so far,
including the output of the node the edge leaves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._paths import MISSING, lookup

__all__ = ["check_expression", "evaluate", "ExpressionError", "OPERATORS"]

_ARITY: dict[str, tuple[int, int | None]] = {
    "var": (1, 2),
    "exists": (1, 1),
    "==": (2, 2),
    "!=": (2, 2),
    "<": (2, 2),
    "<=": (2, 2),
    ">": (2, 2),
    ">=": (2, 2),
    "and": (1, None),
    "or": (1, None),
    "not": (1, 1),
    "!": (1, 1),
    "in": (2, 2),
    "matches": (2, 2),
    "type": (1, 1),
    "+": (1, None),
    "-": (1, 2),
    "*": (1, None),
    "/": (2, 2),
}
OPERATORS = tuple(_ARITY)


class ExpressionError(ValueError):
    """An expression that cannot be evaluated on these variables (arithmetic on a string, / by zero)."""


def _args(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def check_expression(expr: Any, path: str = "condition") -> list[str]:
    """Every problem in `expr` (unknown operator, wrong number of arguments, a path that is not a string)."""
    if isinstance(expr, list):
        return [p for i, item in enumerate(expr) for p in check_expression(item, f"{path}.{i}")]
    if not isinstance(expr, Mapping):
        if expr is None or isinstance(expr, (str, bool, int, float)):
            return []
        return [f"{path}: {type(expr).__name__} is not a JSON value"]
    if len(expr) != 1:
        return [f"{path}: an operator object has exactly one key, got {sorted(expr)}"]
    op, raw = next(iter(expr.items()))
    if op not in _ARITY:
        return [f"{path}: unknown operator {op!r} (known: {', '.join(OPERATORS)})"]
    args = _args(raw)
    low, high = _ARITY[op]
    if len(args) < low or (high is not None and len(args) > high):
        want = f"{low}" if low == high else f"{low} to {high}" if high else f"at least {low}"
        return [f"{path}: {op!r} takes {want} argument(s), got {len(args)}"]
    if op in ("var", "exists"):
        if not isinstance(args[0], str):
            return [f"{path}: {op!r} needs a path string, got {args[0]!r}"]
        return []
    if op == "matches" and not isinstance(args[1], str):
        return [f"{path}: 'matches' needs a literal pattern string, got {args[1]!r}"]
    return [p for i, a in enumerate(args) for p in check_expression(a, f"{path}.{op}.{i}")]


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\\\*|\*)", pattern)
    body = "".join(".*" if p == "*" else re.escape("*") if p == "\\*" else re.escape(p) for p in parts)
    return re.compile(body + r"\Z", re.DOTALL)


def _type_name(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if _is_num(x):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, list):
        return "array"
    return "object"


def _numbers(op: str, values: list[Any]) -> list[Any]:
    for v in values:
        if not _is_num(v):
            raise ExpressionError(f"{op!r} needs numbers, got {v!r}")
    return values


def evaluate(expr: Any, variables: Mapping[str, Any]) -> Any:
    """The value of a checked expression over `variables`."""
    if isinstance(expr, list):
        return [evaluate(item, variables) for item in expr]
    if not isinstance(expr, Mapping):
        return expr
    op, raw = next(iter(expr.items()))
    args = _args(raw)
    if op == "var":
        value = lookup(variables, args[0])
        return (args[1] if len(args) > 1 else None) if value is MISSING else value
    if op == "exists":
        return lookup(variables, args[0]) is not MISSING
    if op == "and":
        result: Any = True
        for a in args:
            result = evaluate(a, variables)
            if not result:
                return result
        return result
    if op == "or":
        result = False
        for a in args:
            result = evaluate(a, variables)
            if result:
                return result
        return result
    vals = [evaluate(a, variables) for a in args]
    if op in ("not", "!"):
        return not vals[0]
    if op == "==":
        return _equal(vals[0], vals[1])
    if op == "!=":
        return not _equal(vals[0], vals[1])
    if op in ("<", "<=", ">", ">="):
        a, b = vals
        if not _comparable(a, b):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op == "in":
        needle, hay = vals
        if isinstance(hay, str):
            return isinstance(needle, str) and needle in hay
        return isinstance(hay, list) and any(_equal(needle, h) for h in hay)
    if op == "matches":
        return isinstance(vals[0], str) and _glob(args[1]).match(vals[0]) is not None
    if op == "type":
        return _type_name(vals[0])
    nums = _numbers(op, vals)
    if op == "+":
        return sum(nums)
    if op == "*":
        product: Any = 1
        for n in nums:
            product *= n
        return product
    if op == "-":
        return -nums[0] if len(nums) == 1 else nums[0] - nums[1]
    if nums[1] == 0:
        raise ExpressionError("division by zero")
    return nums[0] / nums[1]
