"""`actorflow graph validate FILE` and `actorflow graph run FILE --input JSON`.

Executors are code: `--app MODULE` (a dotted module, `MODULE:ATTR`, or a path to a .py file) is
imported first; it registers its executors in `default_registry`, or exposes an `ExecutorRegistry`
as `registry` (or as ATTR). The current directory is importable, as with `python -m`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from .._app import import_app
from .._engine import Engine
from .._types import RunState
from ..errors import ConfigError, WorkflowFailed
from ._errors import GraphValidationError
from ._executor import ExecutorRegistry, default_registry
from ._load import load_definition
from ._runner import GraphRunner

__all__ = ["add_graph_parser", "load_app"]


def load_app(spec: str | None) -> ExecutorRegistry | None:
    """The registry an `--app` spec names (None without one)."""
    if spec is None:
        return None
    module, attr = import_app(spec)
    found = getattr(module, attr or "registry", None)
    if attr and not isinstance(found, ExecutorRegistry):
        raise ConfigError(f"--app {spec!r}: {attr!r} is not an ExecutorRegistry")
    return found if isinstance(found, ExecutorRegistry) else default_registry


def _print_problems(exc: GraphValidationError) -> None:
    print(f"{exc.source}: invalid ({len(exc.problems)} problem(s))", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    registry = load_app(args.app)
    try:
        graph = load_definition(args.file, registry)
    except GraphValidationError as exc:
        _print_problems(exc)
        return 1
    checked = "" if registry is not None else " (node types not checked: pass --app MODULE)"
    print(f"{args.file}: ok, graph {graph.name or '(unnamed)'!r}: {len(graph.nodes)} nodes, "
          f"{len(graph.edges)} edges, start {graph.start!r}{checked}")
    return 0


def _signals(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--signal {item!r}: expected NAME=JSON")
        try:
            out.append((name, json.loads(raw)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--signal {name}: payload is not JSON ({exc.msg})") from None
    return out


def _run(args: argparse.Namespace) -> int:
    registry = load_app(args.app)
    if registry is None:
        raise ConfigError("graph run needs --app MODULE: the module that registers the graph's executors")
    try:
        workflow_input = json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--input is not JSON: {exc.msg} at column {exc.colno}") from None
    signals = _signals(args.signal)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="actorflow-graph-")
    engine = Engine(data_dir)
    runner = GraphRunner(engine, registry)
    try:
        graph = runner.load(args.file)
    except GraphValidationError as exc:
        _print_problems(exc)
        return 1
    with engine:
        handle = runner.start(graph, workflow_input, run_id=args.run_id)
        for name, payload in signals:
            handle.signal(name, payload)
        wanted = len(signals)
        for st in engine.monitor(handle.run_id, timeout=args.timeout):
            if st.state == RunState.WAITING:
                received = sum(1 for ev in engine.history(handle.run_id) if ev.kind == "signal_received")
                if received >= wanted:  # every signal given was taken: only a new one can move it on
                    print(json.dumps({"run_id": handle.run_id, "state": "waiting", "data_dir": data_dir}))
                    print(f"run {handle.run_id!r} waits for a user task; send the decision with: actorflow graph run "
                          f"{args.file} --app {args.app} --data-dir {data_dir} --run-id {handle.run_id} "
                          "--signal NAME=JSON", file=sys.stderr)
                    return 3
        try:
            result = handle.result(timeout=0.1 if args.timeout is not None else None)
        except TimeoutError:
            print(json.dumps({"run_id": handle.run_id, "state": handle.status().state.value, "data_dir": data_dir}))
            return 4
        except WorkflowFailed as exc:
            print(json.dumps({"run_id": handle.run_id, "state": "failed", "error": str(exc.evidence.get("error", exc))}))
            return 1
    print(json.dumps({"run_id": handle.run_id, "state": "completed", "result": result}))
    return 0


def add_graph_parser(sub: Any) -> None:
    """Add the `graph` subcommand to the `actorflow` CLI's subparsers."""
    graph = sub.add_parser("graph", help="validate and run graph workflows defined as data (JSON/YAML/ASL)")
    gsub = graph.add_subparsers(dest="graph_cmd", required=True)
    val = gsub.add_parser("validate", help="check a definition; every problem is listed")
    val.add_argument("file")
    val.add_argument("--app", default=None, help="module registering the executors (checks node types and configs)")
    val.set_defaults(fn=_validate)
    run = gsub.add_parser("run", help="run a graph durably and print its result as JSON")
    run.add_argument("file")
    run.add_argument("--input", default="{}", help="the workflow input, a JSON object")
    run.add_argument("--app", default=None, help="module registering the executors (MODULE, MODULE:ATTR or file.py)")
    run.add_argument("--data-dir", default=None, help="journal directory (default: a new temp dir)")
    run.add_argument("--run-id", default=None, help="run id (an existing run is resumed)")
    run.add_argument("--signal", action="append", default=[], metavar="NAME=JSON",
                     help="deliver a signal (user-task decision) to the run; repeatable")
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait for the result")
    run.set_defaults(fn=_run)
