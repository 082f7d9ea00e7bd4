"""Builds a data directory for the fsck tests: every index kind holds entries (see test_fsck.py).

Run as `python fsck_app.py DIR`; prints one JSON line naming the runs the tests damage."""

from __future__ import annotations

import json
import sys
import time

from actorflow import Engine


def build(data_dir: str) -> dict[str, object]:
    engine = Engine(data_dir, sync=False)

    @engine.task(name="t1")
    def t1(ctx: object, input: dict) -> int:  # type: ignore[type-arg]
        return int(input.get("x", 0)) + 1

    @engine.workflow()
    async def child(ctx, i):  # type: ignore[no-untyped-def]
        return await ctx.step("c", lambda: i * 2)

    @engine.workflow()
    async def done(ctx, i):  # type: ignore[no-untyped-def]
        a = await ctx.step("a", lambda: i)
        await ctx.sleep("s", 0.01)
        b = await ctx.child(child, a)
        s = await ctx.wait_signal("go", timeout=30)
        return a + b + s

    @engine.workflow()
    async def sleeper(ctx):  # type: ignore[no-untyped-def]
        await ctx.sleep("long", 3600)

    @engine.workflow()
    async def waiter(ctx):  # type: ignore[no-untyped-def]
        await ctx.wait_signal("first")
        await ctx.wait_signal("second", timeout=7200)

    with engine:
        finished = [engine.start(done, i) for i in range(3)]
        for h in finished:
            engine.signal(h.run_id, "go", 1)
        assert [h.result(timeout=30) for h in finished] == [1, 4, 7]
        sleepers = [engine.start(sleeper).run_id for _ in range(2)]
        waiter_id = engine.start(waiter).run_id
        engine.signal(waiter_id, "first", "x")
        tasks = [engine.enqueue("t1", {"x": i}, tags=["blue"], unique_key=f"u{i}") for i in range(2)]
        for e in tasks:
            engine.result(e, timeout=10)
        engine.schedule("t1", every=3600, input={"x": 9})
        deadline = time.monotonic() + 20
        while engine.status(waiter_id).state.value != "waiting" or any(
            engine.status(r).state.value != "sleeping" for r in sleepers
        ):
            if time.monotonic() > deadline:
                raise SystemExit("runs did not settle")
            time.sleep(0.01)
        time.sleep(0.2)  # the status records of the settled runs are written at the next housekeeping
    return {"finished": finished[0].run_id, "sleepers": sleepers, "waiter": waiter_id, "tasks": tasks}


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1])))
