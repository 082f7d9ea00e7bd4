"""A live service for the dashboard tests: an engine holding DATA_DIR with runs in every kind of state.

    python service.py DATA_DIR

Prints "ready" once every run has settled where the tests expect it, then serves (the engine applies
commands from the control inbox) until its standard input closes; then it closes the engine and exits.

- order-1, order-2: `order` - a step retried twice, a sleep, a child run, then waiting for signal "approve"
- report-1..5: `report` - completed; doomed-1: `doomed` - failed; nap-1: `nap` - sleeping an hour
- hold-1: `hold` - waiting for signal "go"
- tasks: a `send_email` execution delayed an hour (priority 5), a `flaky` execution failed once (a
  dead letter; it succeeds when requeued), and an hourly schedule of `send_email`
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actorflow import Engine, RetryPolicy  # noqa: E402
from actorflow.tasks import TaskResult  # noqa: E402

WAITING = {"order-1": "waiting", "order-2": "waiting", "hold-1": "waiting", "nap-1": "sleeping", "doomed-1": "failed"}
WAITING.update({f"report-{i}": "completed" for i in range(1, 6)})

_tries: dict[str, int] = {}


def register(engine: Engine) -> None:
    def charge(run_id: str) -> str:
        _tries[run_id] = _tries.get(run_id, 0) + 1
        if _tries[run_id] <= 2:
            raise ConnectionError(f"payment gateway timeout (try {_tries[run_id]})")
        return f"payment-{run_id}"

    @engine.workflow(name="reserve")
    async def reserve(ctx: Any, item: str) -> str:
        return str(await ctx.step("hold_stock", lambda: f"held {item}"))

    @engine.workflow(name="order")
    async def order(ctx: Any, order: dict[str, Any]) -> dict[str, Any]:
        await ctx.step("validate", lambda: True)
        ctx.report_progress(0.2)
        pay = await ctx.step("charge", lambda: charge(ctx.run_id), retry=RetryPolicy.linear(max_attempts=4, delay=0.15, jitter=False))
        ctx.report_progress(0.4)
        await ctx.sleep("cooling_off", 0.3)
        ctx.report_progress(0.6)
        held = await ctx.child(reserve, order["item"])
        ctx.report_progress(0.8)
        approved = await ctx.wait_signal("approve", timeout=3600)
        return {"payment": pay, "stock": held, "approved": approved}

    @engine.workflow(name="report")
    async def report(ctx: Any, n: int) -> int:
        return int(await ctx.step("sum", lambda: n * (n + 1) // 2))

    @engine.workflow(name="doomed")
    async def doomed(ctx: Any) -> None:
        await ctx.step("explode", _explode)

    @engine.workflow(name="nap")
    async def nap(ctx: Any) -> str:
        await ctx.sleep("siesta", 3600)
        return "rested"

    @engine.workflow(name="hold")
    async def hold(ctx: Any) -> Any:
        return await ctx.wait_signal("go")


def register_tasks(engine: Engine) -> None:
    @engine.task("send_email")
    def send_email(ctx: Any, input: dict[str, Any]) -> str:
        return f"sent to {input['to']}"

    @engine.task("flaky")
    def flaky(ctx: Any, input: dict[str, Any]) -> Any:
        _tries["flaky"] = _tries.get("flaky", 0) + 1
        return TaskResult.failure("the mail server said no") if _tries["flaky"] == 1 else "delivered"


def _explode() -> None:
    raise ValueError("the report template is missing")


def main() -> None:
    engine = Engine(sys.argv[1])
    register(engine)
    register_tasks(engine)
    with engine:
        engine.enqueue("send_email", {"to": "ops@example.com"}, delay=3600, priority=5)
        engine.enqueue("flaky", {"n": 1})
        engine.schedule("send_email", every=3600, input={"to": "hourly@example.com"})
        engine.start("order", {"id": 1, "item": "widget"}, run_id="order-1")
        engine.start("order", {"id": 2, "item": "gadget"}, run_id="order-2")
        for i in range(1, 6):
            engine.start("report", i, run_id=f"report-{i}")
        engine.start("doomed", run_id="doomed-1")
        engine.start("nap", run_id="nap-1")
        engine.start("hold", run_id="hold-1")
        deadline = time.monotonic() + 30
        while any(engine.status(r).state.value != s for r, s in WAITING.items()) or not engine.dead_letters():
            if time.monotonic() > deadline:
                raise SystemExit(f"runs did not settle: {[(r, engine.status(r).state.value) for r in WAITING]}")
            time.sleep(0.01)
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
