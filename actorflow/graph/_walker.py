"""The coroutine of a graph run: walks the graph with tokens, each node execution a journaled step.

Waves: every token ready to run starts at once (task nodes as `ctx.step`s, waits as `ctx.sleep`s,
gathered); their outcomes are then routed in token order, so the walk is a pure function of the
journal and replays exactly. User tasks are parked when reached and awaited (`ctx.wait_signal`) only
once nothing else can run: a task node that runs meanwhile can still cancel them (`CancelUserTasks`),
and signals sent early wait durably in the run's inbox. Joins fire when every incoming edge has
delivered, or when nothing still running could reach them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .._context import Command, WorkflowContext
from .._types import current_step
from ..errors import ActorflowError, StepFailed, StepTimeout, WaitTimeout
from ._checks import reachable_from
from ._context import ExecutionContext, TokenInfo
from ._definition import GraphDefinition, NodeDef, error_matches, parse_definition
from ._errors import GraphRunError, GraphTaskFailed
from ._executor import FAIL, PASS, SUCCEED, USER_TASK, WAIT, ExecutorRegistry, TaskExecutor, _internal
from ._expr import ExpressionError, evaluate
from ._paths import MISSING, lookup, to_json
from ._results import ErrorType, TaskFailure, TaskSuccess

__all__ = ["run_graph"]


class _RetryTask(ActorflowError):
    """Raised by a node's step for a retryable failure with attempts left: the engine's retry policy
    (backoff, journaled attempts) runs it again."""


@dataclass
class _Token:
    node: str
    input: dict[str, Any]
    branches: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Parked:
    token: _Token
    signal: str
    deadline: float | None


@dataclass
class _Outcome:
    ok: bool
    output: dict[str, Any] = field(default_factory=dict)
    port: str | None = None
    effects: list[dict[str, Any]] = field(default_factory=list)
    failure: dict[str, Any] | None = None


def _failure(f: TaskFailure) -> _Outcome:
    return _Outcome(False, failure=f.to_dict())


async def run_graph(ctx: WorkflowContext, registry: ExecutorRegistry, definition: dict[str, Any], workflow_input: dict[str, Any]) -> dict[str, Any]:
    """The `actorflow.graph` workflow body: the definition and input come from the run's journaled start.

    The definition was fully validated when the run started; here only its structure is rebuilt, so
    a stricter `validate_config` in newer code does not fail runs started under the old one."""
    graph = parse_definition(definition, None, source=f"graph of run {ctx.run_id!r}")
    return await _Walk(ctx, graph, registry, workflow_input).run()


class _Walk:
    def __init__(self, ctx: WorkflowContext, graph: GraphDefinition, registry: ExecutorRegistry, workflow_input: dict[str, Any]) -> None:
        self.ctx = ctx
        self.graph = graph
        self.registry = registry
        self.workflow_input = workflow_input
        self.accumulated: dict[str, Any] = copy.deepcopy(workflow_input)
        self.ready: list[_Token] = [_Token(graph.start, copy.deepcopy(workflow_input))]
        self.parked: list[_Parked] = []
        self.joins: dict[str, dict[str, list[tuple[str, dict[str, Any]]]]] = {}
        self.visited: list[str] = []
        self.ends: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.steps = 0
        self._reach: dict[str, set[str]] = {}

    async def run(self) -> dict[str, Any]:
        while True:
            if self.ready:
                await self._wave()
            elif self._fire_joins():
                continue
            elif self.parked:
                await self._wait_user_tasks()
            else:
                return {"output": self.accumulated, "ends": self.ends, "visited": self.visited, "events": self.events}

    # --- running nodes --------------------------------------------------------------------------
    async def _wave(self) -> None:
        wave, self.ready = self.ready, []
        tokens = self._token_infos(wave)
        started: list[tuple[_Token, NodeDef, Command | _Outcome | None]] = []
        for tok in wave:
            self.steps += 1
            if self.steps > self.graph.max_steps:
                raise GraphRunError(tok.node, f"the run exceeded max_steps={self.graph.max_steps} node executions")
            node = self.graph.node(tok.node)
            self.visited.append(node.id)
            started.append((tok, node, self._start(tok, node, tokens)))
        cmds = [c for _, _, c in started if isinstance(c, Command)]
        if len(cmds) > 1:
            try:
                await self.ctx.gather(*cmds)
            except Exception:  # noqa: BLE001, S110 - every command's own outcome is read below
                pass
        for tok, node, started_as in started:
            if started_as is None:
                continue  # a parked user task
            outcome = started_as if isinstance(started_as, _Outcome) else await self._outcome(node, started_as, tok)
            self._settle(tok, node, outcome)

    def _start(self, tok: _Token, node: NodeDef, tokens: tuple[TokenInfo, ...]) -> Command | _Outcome | None:
        cfg = node.config
        if node.type == PASS:
            return _Outcome(True, copy.deepcopy(dict(cfg["result"])) if "result" in cfg else tok.input)
        if node.type == SUCCEED:
            return _Outcome(True, tok.input)
        if node.type == FAIL:
            err = str(cfg.get("error", "graph.fail"))
            return _failure(TaskFailure.permanent(str(cfg.get("cause", f"the graph reached fail node {node.id!r}")), error_type=err))
        if node.type == WAIT:
            return self.ctx.sleep(node.id, self._wait_seconds(node))
        if node.type == USER_TASK:
            timeout = cfg.get("timeout")
            deadline = None if timeout is None else self.ctx.time() + float(timeout)
            self.parked.append(_Parked(tok, str(cfg.get("signal") or node.id), deadline))
            return None
        try:
            executor = self.registry.get(node.type)
        except ActorflowError as exc:
            raise GraphRunError(node.id, f"{exc} in this process: register it before engine.open()") from None
        spec = node.retry
        return self.ctx.step(
            node.id,
            self._step_fn(node, tok, executor, tokens),
            retry=None if spec is None else spec.policy(),
            timeout=node.timeout,
        )

    def _wait_seconds(self, node: NodeDef) -> float:
        if "seconds" in node.config:
            return float(node.config["seconds"])
        value = lookup(self.accumulated, node.config["seconds_var"])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise GraphRunError(node.id, f"seconds_var {node.config['seconds_var']!r} is {value!r}, not a number >= 0")
        return float(value)

    def _step_fn(self, node: NodeDef, tok: _Token, executor: TaskExecutor, tokens: tuple[TokenInfo, ...]) -> Any:
        # a snapshot now: the walk moves on (and other branches merge outputs) while the step runs
        snap = (copy.deepcopy(tok.input), copy.deepcopy(self.accumulated), copy.deepcopy(tok.branches))
        graph, run_id, winput = self.graph, self.ctx.run_id, self.workflow_input
        max_attempts = 1 if node.retry is None else node.retry.max_attempts

        def context() -> tuple[ExecutionContext, int]:
            attempt = current_step().attempt
            inp, acc, branches = copy.deepcopy(snap)
            ectx = ExecutionContext(graph, node, run_id, inp, copy.deepcopy(winput), acc, attempt, branches, tokens)
            return ectx, attempt

        def finish(result: Any, attempt: int) -> dict[str, Any]:
            if isinstance(result, TaskSuccess):
                try:
                    return result.to_dict()
                except (TypeError, ValueError) as exc:
                    return {"ok": False, "failure": TaskFailure.validation(f"output rejected: {exc}").to_dict()}
            if isinstance(result, TaskFailure):
                spec = node.retry
                if result.retryable and spec is not None and spec.covers(result.error_type) and attempt < max_attempts:
                    raise _RetryTask(f"{result.error_type}: {result.message}")
                return {"ok": False, "failure": result.to_dict()}
            bad = TaskFailure.internal(
                f"{executor.schema_type}.execute returned {type(result).__name__}, not TaskSuccess or TaskFailure",
                retryable=False,
            )
            return {"ok": False, "failure": bad.to_dict()}

        if executor.is_async():

            async def run_async() -> dict[str, Any]:
                ectx, attempt = context()
                try:
                    result = await executor.execute(ectx)  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - an executor error is a (retryable) failure
                    result = _internal(executor, exc)
                return finish(result, attempt)

            return run_async

        def run() -> dict[str, Any]:
            ectx, attempt = context()
            try:
                result = executor.execute(ectx)
            except Exception as exc:  # noqa: BLE001
                result = _internal(executor, exc)
            return finish(result, attempt)

        return run

    async def _outcome(self, node: NodeDef, cmd: Command, tok: _Token) -> _Outcome:
        try:
            value = await cmd
        except StepTimeout as exc:
            attempts = exc.evidence.get("attempts")
            return _failure(TaskFailure.timeout(f"node {node.id!r} timed out: {exc.evidence.get('error')}", details={"attempts": attempts}))
        except StepFailed as exc:
            details = {"attempts": exc.evidence.get("attempts")}
            return _failure(TaskFailure.internal(str(exc.evidence.get("error", exc)), retryable=False, details=details))
        if node.type == WAIT:
            return _Outcome(True, tok.input)
        if value.get("ok"):
            return _Outcome(True, value["output"], value.get("port"), list(value.get("effects") or ()))
        return _Outcome(False, failure=value["failure"])

    # --- after a node -----------------------------------------------------------------------------
    def _settle(self, tok: _Token, node: NodeDef, outcome: _Outcome) -> None:
        if not outcome.ok:
            self._failed(node, outcome.failure or {})
            return
        output = dict(outcome.output)
        for eff in outcome.effects:
            kind = eff.get("kind")
            if kind == "set_output":
                output.update(eff["values"])
            elif kind == "record_event":
                self.events.append({"node": node.id, "event_type": eff["event_type"], "data": eff.get("data") or {}})
        self.accumulated.update(output)
        for eff in outcome.effects:  # after the output is merged: a cancelled task's edge sees it
            if eff.get("kind") == "cancel_user_tasks":
                self._cancel(eff.get("nodes"), node.id, str(eff.get("reason", "")))
        self._route(node, output, outcome.port)

    def _failed(self, node: NodeDef, failure: dict[str, Any]) -> None:
        etype = str(failure.get("error_type", ErrorType.INTERNAL))
        for e in self.graph.outgoing(node.id):
            if e.on_error is not None and error_matches(e.on_error, etype):
                out = {"error": dict(failure, node=node.id)}
                self.accumulated.update(out)
                self._arrive(e.id, e.target, node.id, out)
                return
        raise GraphTaskFailed(node.id, etype, str(failure.get("message", "")), failure.get("details"))

    def _route(self, node: NodeDef, output: dict[str, Any], port: str | None) -> None:
        edges = [e for e in self.graph.outgoing(node.id) if e.on_error is None]
        if not edges:
            self.ends.append(node.id)
            return
        cands = [e for e in edges if e.port == port]
        if not cands:
            ports = sorted({repr(e.port) for e in edges})
            said = f"chose port {port!r}" if port is not None else "chose no output port"
            raise GraphRunError(node.id, f"{said}, but no edge leaves it that way (edge ports: {', '.join(ports)})")
        if any(e.condition is not None for e in cands):
            chosen = None
            for e in cands:
                if e.condition is None:
                    continue
                try:
                    held = evaluate(e.condition, self.accumulated)
                except ExpressionError as exc:
                    raise GraphRunError(node.id, f"condition of edge {e.id!r}: {exc}") from None
                if held:
                    chosen = e
                    break
            if chosen is None:
                defaults = [e for e in cands if e.condition is None]
                if not defaults:
                    raise GraphRunError(node.id, "no edge condition held and there is no default (unconditional) edge")
                chosen = defaults[0]
            cands = [chosen]
        for e in cands:
            self._arrive(e.id, e.target, node.id, output)

    def _arrive(self, edge_id: str, target: str, source: str, output: dict[str, Any]) -> None:
        if self.graph.node(target).join:
            self.joins.setdefault(target, {}).setdefault(edge_id, []).append((source, output))
        else:
            self.ready.append(_Token(target, copy.deepcopy(output)))

    def _reachable(self, node: str) -> set[str]:
        got = self._reach.get(node)
        if got is None:
            got = self._reach[node] = reachable_from(self.graph, node)
        return got

    def _fire_joins(self) -> bool:
        waiting = [j for j in (n.id for n in self.graph.nodes) if any(self.joins.get(j, {}).values())]
        if not waiting:
            return False
        live = [p.token.node for p in self.parked] + waiting
        fired = False
        for jid in waiting:
            arrived = self.joins[jid]
            complete = all(arrived.get(e.id) for e in self.graph.incoming(jid))
            blocked = any(jid in self._reachable(x) for x in live if x != jid)
            if complete or not blocked:
                self._fire(jid)
                fired = True
        if not fired and not self.parked:  # joins waiting on each other: the first goes with what it has
            self._fire(waiting[0])
            fired = True
        return fired

    def _fire(self, jid: str) -> None:
        arrived = self.joins[jid]
        branches: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for e in self.graph.incoming(jid):
            queue = arrived.get(e.id)
            if queue:
                source, out = queue.pop(0)
                branches[source] = out
                merged.update(out)
        self.ready.append(_Token(jid, copy.deepcopy(merged), branches))

    # --- user tasks -----------------------------------------------------------------------------
    async def _wait_user_tasks(self) -> None:
        batch, self.parked = self.parked, []
        now = self.ctx.time() if any(p.deadline is not None for p in batch) else 0.0
        cmds = [
            self.ctx.wait_signal(p.signal, timeout=None if p.deadline is None else max(0.0, p.deadline - now))
            for p in batch
        ]
        if len(cmds) > 1:
            try:
                await self.ctx.gather(*cmds)
            except Exception:  # noqa: BLE001, S110 - each wait's own outcome is read below
                pass
        for p, cmd in zip(batch, cmds):
            node = self.graph.node(p.token.node)
            try:
                payload = await cmd
            except WaitTimeout:
                if any(e.port == "timeout" for e in self.graph.outgoing(node.id)):
                    self._settle(p.token, node, _Outcome(True, {"timed_out": True, "user_task": node.id}, "timeout"))
                else:
                    self._failed(node, TaskFailure.timeout(f"user task {node.id!r} got no {p.signal!r} signal in time").to_dict())
                continue
            port, problem = self._decision(node, payload)
            if problem is not None:  # a bad decision is refused (and recorded); the task keeps waiting
                self.events.append({"node": node.id, "event_type": "user_task_decision_rejected", "data": {"reason": problem}})
                self.parked.append(p)
                continue
            self._settle(p.token, node, _Outcome(True, to_json(payload), port))

    def _decision(self, node: NodeDef, payload: Any) -> tuple[str | None, str | None]:
        if not isinstance(payload, dict):
            return None, f"a decision must be a JSON object, got {type(payload).__name__}"
        try:
            to_json(payload)
        except ValueError as exc:
            return None, str(exc)
        field_path = node.config.get("port_from")
        if field_path is None:
            return None, None
        value = lookup(payload, field_path)
        if value is MISSING or not isinstance(value, str):
            return None, f"a decision needs a string at {field_path!r}, got {None if value is MISSING else value!r}"
        ports = {e.port for e in self.graph.outgoing(node.id) if e.port is not None}
        if value not in ports:
            return None, f"decision {value!r} has no edge (expected one of: {', '.join(sorted(ports - {'timeout', 'cancelled'}))})"
        return value, None

    def _cancel(self, nodes: list[str] | None, by: str, reason: str) -> None:
        keep: list[_Parked] = []
        for p in self.parked:
            if nodes is not None and p.token.node not in nodes:
                keep.append(p)
                continue
            node = self.graph.node(p.token.node)
            self.events.append({"node": node.id, "event_type": "user_task_cancelled", "data": {"by": by, "reason": reason}})
            if any(e.port == "cancelled" for e in self.graph.outgoing(node.id)):
                self._route(node, {"cancelled": True, "by": by, "reason": reason}, "cancelled")
        self.parked = keep

    def _token_infos(self, wave: list[_Token]) -> tuple[TokenInfo, ...]:
        infos = [TokenInfo(t.node, "running") for t in wave]
        infos += [TokenInfo(p.token.node, "user_task") for p in self.parked]
        infos += [TokenInfo(j, "join") for j, arr in self.joins.items() if any(arr.values())]
        return tuple(infos)
