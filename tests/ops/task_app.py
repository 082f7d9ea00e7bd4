"""A data directory with task executions, for the task CLI tests: `python task_app.py DIR [--serve]`.

Enqueues a task that succeeds, one that fails into the dead letters, a delayed one (an hour away)
and a schedule (`tick`, hourly). Prints `ready {"ok": id, "bad": id, "later": id}` once the first
two have ended; without `--serve` it then closes the engine, with it it holds the directory
until stdin closes (a live engine that applies the CLI's cancel and requeue commands)."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from actorflow import Engine  # noqa: E402
from actorflow.tasks import TaskContext, TaskResult  # noqa: E402


def main() -> None:
    engine = Engine(sys.argv[1])

    @engine.task(name="resize")
    def resize(ctx: TaskContext, input: dict[str, Any]) -> Any:
        if input.get("image") == "broken.png":
            return TaskResult.failure("cannot decode broken.png")
        return {"thumb": input["image"] + ".small"}

    @engine.task(name="tick")
    def tick(ctx: TaskContext, input: dict[str, Any]) -> str:
        return "tock"

    with engine:
        ids = {
            "ok": engine.enqueue("resize", {"image": "cat.png"}, tags=["user:7"]),
            "bad": engine.enqueue("resize", {"image": "broken.png"}, tags=["user:8"]),
            "later": engine.enqueue("resize", {"image": "dog.png"}, delay=3600, priority=3),
        }
        engine.schedule("tick", every=3600, input={"ops": 1}, catch_up=False)
        for key in ("ok", "bad"):
            list(engine.monitor_execution(ids[key], timeout=30))
        print("ready " + json.dumps(ids), flush=True)
        if "--serve" in sys.argv:
            stop = threading.Event()
            threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
            stop.wait(300)


if __name__ == "__main__":
    main()
