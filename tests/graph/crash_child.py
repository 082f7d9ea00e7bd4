"""A process that test_crash.py kills with SIGKILL in the middle of a graph run.

    python crash_child.py DATA_DIR LEDGER

The graph is a -> b -> c -> d. Every node appends its id to LEDGER (fsync'd) when it runs; while
the file LEDGER.block exists, `c` then blocks until the process is killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actorflow.graph import ExecutionContext, ExecutorRegistry, TaskExecutor, TaskResult, TaskSuccess  # noqa: E402

GRAPH: dict[str, Any] = {
    "name": "crashy",
    "nodes": [
        {"id": "a", "type": "test.crash.count"},
        {"id": "b", "type": "test.crash.count"},
        {"id": "c", "type": "test.crash.block"},
        {"id": "d", "type": "test.crash.count"},
    ],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}],
}


def _note(context: ExecutionContext) -> None:
    with open(context.get_initial_required("ledger"), "a") as f:
        f.write(f"{context.node_id} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


class Count(TaskExecutor):
    schema_type = "test.crash.count"
    name = "Count"

    def execute(self, context: ExecutionContext) -> TaskResult:
        _note(context)
        return TaskSuccess({context.node_id: os.getpid()})


class Block(TaskExecutor):
    schema_type = "test.crash.block"
    name = "Block while LEDGER.block exists"

    def execute(self, context: ExecutionContext) -> TaskResult:
        _note(context)
        while os.path.exists(context.get_initial_required("ledger") + ".block"):
            time.sleep(0.01)
        return TaskSuccess({context.node_id: os.getpid()})


def registry() -> ExecutorRegistry:
    reg = ExecutorRegistry()
    reg.register(Count())
    reg.register(Block())
    return reg


def main() -> None:
    from actorflow import Engine
    from actorflow.graph import GraphRunner

    data_dir, ledger = sys.argv[1], sys.argv[2]
    engine = Engine(data_dir)
    runner = GraphRunner(engine, registry())
    with engine:
        runner.start(GRAPH, {"ledger": ledger}, run_id="graph-1")
        time.sleep(120)  # killed long before this ends


if __name__ == "__main__":
    main()
