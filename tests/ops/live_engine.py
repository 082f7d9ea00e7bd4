"""A service holding a data directory: `python live_engine.py DIR`. Runs `approval` (two steps, then
waits for the `go` signal, then a third) as run `r-live`, prints `ready` once it waits, and exits
when stdin closes (or the run ends and `--exit-when-done` was given). Its step calls are appended
to DIR/calls.log, so a test can tell which steps ran in this process."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from actorflow import Engine  # noqa: E402


def main() -> None:
    data_dir = sys.argv[1]
    version = os.environ.get("APP_VERSION", "v1")
    engine = Engine(data_dir)

    def call(name: str, value: Any) -> Any:
        with open(os.path.join(data_dir, "calls.log"), "a") as f:
            f.write(f"{os.getpid()} {version} {name}\n")
        return value

    @engine.workflow(name="approval")
    async def approval(ctx: Any, n: int) -> dict[str, Any]:
        a = await ctx.step("prepare", lambda: call("prepare", n + 1))
        ctx.report_progress(0.3)
        b = await ctx.step("review", lambda: call("review", a * 10))
        ctx.report_progress(0.6)
        ok = await ctx.wait_signal("go", timeout=300)
        c = await ctx.step("finish", lambda: call("finish", f"{version}:{ok}"))
        return {"a": a, "b": b, "c": c}

    with engine:
        engine.start(approval, 4, run_id="r-live")
        for st in engine.monitor("r-live", timeout=60):
            if st.state.value == "waiting":
                break
        print("ready", flush=True)
        if "--exit-when-done" in sys.argv:
            engine.result("r-live", timeout=120)
            print("done", flush=True)
            return
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait(300)


if __name__ == "__main__":
    main()
