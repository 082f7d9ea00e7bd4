"""Named queues and routing: which queue an execution goes to, and which consumer may take it.

An execution's queue is decided once, at enqueue, and journaled with it (its options), so a
restart or a changed routing table never moves an execution already queued. Precedence, as in
Celery: `enqueue(queue=)`, then the task's `@engine.task(queue=)`, then the first routing rule that
matches (task-name glob and headers), then the default queue."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["QueueSpec", "Route", "Router", "Consumer", "check_queue_name", "check_requires", "DEFAULT_QUEUE"]

DEFAULT_QUEUE = "default"
_NAME = re.compile(r"^[A-Za-z0-9_.:@/-]{1,200}$")
_SCALAR = (bool, int, float, str)


def check_queue_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what}: a queue name is 1-200 of A-Z a-z 0-9 _ . : @ / -, got {name!r}", queue=repr(name))
    return name


def check_requires(requires: Any, what: str) -> dict[str, Any]:
    """Placement requirements: capability name -> the value a consumer must have (bool/int/float/str)."""
    if requires is None:
        return {}
    if not isinstance(requires, Mapping):
        raise ConfigError(f"{what}: requires must be a dict of capability -> value, got {requires!r:.80}")
    out: dict[str, Any] = {}
    for key, value in requires.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{what}: a capability name must be a non-empty str, got {key!r}")
        if not isinstance(value, _SCALAR):
            raise ConfigError(f"{what}: capability {key!r} must be a bool, int, float or str, got {value!r:.80}")
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A declared queue; `priority`: the inclusive (low, high) range its executions may use."""

    name: str
    priority: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Executions of tasks whose name matches `task` (an fnmatch glob) and whose headers include
    every pair of `headers` (values are globs too) go to `queue`."""

    queue: str
    task: str = "*"
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, task: str, headers: Mapping[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(task, self.task):
            return False
        return all(k in headers and fnmatch.fnmatchcase(str(headers[k]), v) for k, v in self.headers)


def _priority_range(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value[0] <= value[1]):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{what}: priority must be a [low, high] pair of ints with low <= high, got {value!r}")


@dataclass
class Router:
    """The routing table of one engine: declared queues, rules in order, the default queue."""

    default_queue: str = DEFAULT_QUEUE
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    def declare(self, name: str, *, priority: tuple[int, int] | list[int] | None = None) -> QueueSpec:
        check_queue_name(name, "declare_queue")
        spec = QueueSpec(name, _priority_range(priority, f"queue {name!r}"))
        self.queues[name] = spec
        return spec

    def add(self, queue: str, *, task: str = "*", headers: Mapping[str, Any] | None = None) -> Route:
        return self._rule({"queue": queue, "task": task, "headers": dict(headers or {})}, "route")

    def _rule(self, raw: Any, what: str) -> Route:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{what}: a rule is a mapping with 'queue' and optional 'task', 'headers'; got {raw!r:.120}")
        unknown = sorted(set(raw) - {"queue", "task", "headers"})
        if unknown:
            raise ConfigError(f"{what}: unknown key(s) {', '.join(map(repr, unknown))} in rule {dict(raw)!r:.160}; "
                              "use 'queue', 'task' (a glob), 'headers' (name -> glob)")
        if "queue" not in raw:
            raise ConfigError(f"{what}: rule {dict(raw)!r:.160} names no 'queue'")
        queue = check_queue_name(raw["queue"], what)
        task = raw.get("task", "*")
        if not isinstance(task, str) or not task:
            raise ConfigError(f"{what}: 'task' must be a non-empty glob string, got {task!r}")
        headers = raw.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) and k and isinstance(v, (str, int, float, bool))
                                                      for k, v in headers.items()):
            raise ConfigError(f"{what}: 'headers' must map header names to values (globs), got {headers!r:.120}")
        route = Route(queue, task, tuple(sorted((k, str(v)) for k, v in headers.items())))
        self.routes.append(route)
        return route

    def load(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Load `{default_queue, queues: {name: {priority: [lo, hi]}}, routes: [{task, headers, queue}]}`
        from a dict or a .json/.yaml/.yml file. All or nothing: a bad entry raises and changes nothing."""
        where = "routing"
        if isinstance(source, Mapping):
            doc: Any = source
        else:
            path = os.fspath(source)
            where = f"routing file {path!r}"
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot be read ({exc.strerror})", path=path) from None
            doc = _parse(text, path, where)
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where}: the top level must be a mapping, got {type(doc).__name__}")
        unknown = sorted(set(doc) - {"default_queue", "queues", "routes"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; use default_queue, queues, routes")
        trial = Router(self.default_queue, dict(self.queues), list(self.routes))
        if "default_queue" in doc:
            trial.default_queue = check_queue_name(doc["default_queue"], f"{where} default_queue")
        queues = doc.get("queues") or {}
        if not isinstance(queues, Mapping):
            raise ConfigError(f"{where}: 'queues' must map queue names to {{priority: [low, high]}}, got {queues!r:.120}")
        for name, qdoc in queues.items():
            qdoc = qdoc or {}
            if not isinstance(qdoc, Mapping) or set(qdoc) - {"priority"}:
                raise ConfigError(f"{where}: queue {name!r} takes only 'priority: [low, high]', got {qdoc!r:.120}")
            try:
                trial.declare(name, priority=qdoc.get("priority"))
            except ConfigError as exc:
                raise ConfigError(f"{where}: queue {name!r}: {exc}") from None
        routes = doc.get("routes") or []
        if not isinstance(routes, list):
            raise ConfigError(f"{where}: 'routes' must be a list of rules, got {routes!r:.120}")
        for i, raw in enumerate(routes):
            trial._rule(raw, f"{where}, rule #{i + 1}")
        self.default_queue, self.queues, self.routes = trial.default_queue, trial.queues, trial.routes

    def resolve(self, task: str, task_queue: str | None, queue: str | None, headers: Mapping[str, Any]) -> str:
        if queue is not None:
            return queue
        if task_queue is not None:
            return task_queue
        for route in self.routes:
            if route.matches(task, headers):
                return route.queue
        return self.default_queue

    def check_priority(self, queue: str, priority: int, what: str) -> None:
        spec = self.queues.get(queue)
        if spec is not None and spec.priority is not None and not spec.priority[0] <= priority <= spec.priority[1]:
            lo, hi = spec.priority
            raise ConfigError(f"{what}: priority {priority} is outside queue {queue!r}'s range [{lo}, {hi}]",
                              queue=queue, priority=priority)


def _parse(text: str, path: str, where: str) -> Any:
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{where}: YAML needs the 'yaml' extra: pip install 'actorflow[yaml]'") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML ({exc})", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})", path=path) from None


@dataclass(frozen=True, slots=True)
class Consumer:
    """What an engine takes: its queues (None: every queue) and its capabilities."""

    queues: frozenset[str] | None = None
    capabilities: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, queues: Any, capabilities: Any) -> Consumer:
        if queues is not None:
            if isinstance(queues, str) or not hasattr(queues, "__iter__"):
                raise ConfigError(f"Engine(queues=...) takes a list of queue names or None (every queue), got {queues!r}")
            queues = frozenset(check_queue_name(q, "Engine(queues=...)") for q in queues)
        caps = check_requires(capabilities, "Engine(capabilities=...)")
        return cls(queues, dict(caps))

    def takes(self, queue: str, requires: Mapping[str, Any]) -> bool:
        if self.queues is not None and queue not in self.queues:
            return False
        return all(k in self.capabilities and self.capabilities[k] == v for k, v in requires.items())

    def why_not(self, queue: str, requires: Mapping[str, Any]) -> str:
        if self.queues is not None and queue not in self.queues:
            return f"queue {queue!r} is not consumed (this engine takes {sorted(self.queues)})"
        missing = {k: v for k, v in requires.items() if self.capabilities.get(k, _MISSING) != v}
        return f"requires {missing} (this engine has {dict(self.capabilities)})" if missing else ""


_MISSING = object()
