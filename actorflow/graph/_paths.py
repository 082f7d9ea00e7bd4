"""Dot/index paths into JSON values (`approval.levels.0.level`) and the JSON-only rule for graph data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "lookup", "to_json", "json_problems", "NotJson"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(data: Any, path: str) -> Any:
    """The value at `path` (keys and list indexes separated by dots), or MISSING; '' is `data` itself."""
    if not isinstance(path, str):
        raise TypeError(f"a path must be a string, got {type(path).__name__}")
    if path == "":
        return data
    cur = data
    for part in path.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return MISSING
            cur = cur[part]
        elif isinstance(cur, Sequence) and not isinstance(cur, (str, bytes)):
            try:
                index = int(part)
            except ValueError:
                return MISSING
            if not -len(cur) <= index < len(cur):
                return MISSING
            cur = cur[index]
        else:
            return MISSING
    return cur


class NotJson(ValueError):
    """A value that is not plain JSON; `path` says where inside it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def to_json(value: Any, path: str = "$") -> Any:
    """A copy of `value` made only of dict/list/str/int/float/bool/None (tuples become lists).

    Graph data is journaled and handed to executors in other threads (and later processes): copying
    keeps an executor that mutates its output afterwards from changing what was journaled."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson(path, f"{value!r} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJson(path, f"key {key!r} is a {type(key).__name__}; JSON object keys are strings")
            out[key] = to_json(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{path}.{i}") for i, item in enumerate(value)]
    raise NotJson(path, f"value of type {type(value).__name__} is not JSON (use dict, list, str, number, bool, None)")


def json_problems(value: Any, path: str) -> list[str]:
    """[] if `value` is plain JSON, else one message naming where it is not."""
    try:
        to_json(value, path)
    except NotJson as exc:
        return [str(exc)]
    return []
