"""The process a chaos campaign kills: one engine generation over the campaign's data directory.

    python -m tests.chaos.campaign_app WORKDIR GENERATION MODE [final]

WORKDIR holds `plan.json` (the units to start and the signals to send, in order), `data/` (the
engine's directory), `acks.log` (what this and earlier generations acknowledged) and `steps.log`
(one line per step body that ran: the side-effect log). A generation:

1. before opening the engine, settles signals an earlier generation began but never acknowledged
   (killed inside `signal()`): if the journal holds one (inbox, or received by its run), it counts as
   sent; else it is sent again. So a signal is sent once, and acknowledged ones are never resent;
2. opens the engine (recovery), then carries on down the plan from the first operation not yet
   acknowledged - starting units (by fixed ids: a start killed before its ack returns the same run)
   and sending signals - each logged "begin ..." before and acknowledged "ack ..." after it returned;
3. with `final`: waits for every unit's result and writes them to `results.json`, then closes.

Kinds of units (5 steps each): `wf` (steps, a durable sleep, two signals - one sent before the run
waits for it), `wft` (a signal wait that times out, a longer sleep), `chain` (5 tasks in a chain),
`chord` (4 tasks and a callback), `graph` (5 graph nodes). Every step body appends
"generation pid run_id pos attempt name" to steps.log (one O_APPEND write) before returning.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actorflow import Engine, WaitTimeout, current_step  # noqa: E402
from actorflow.graph import ExecutionContext, ExecutorRegistry, GraphRunner, TaskExecutor, TaskSuccess  # noqa: E402

STEPS_LOG_ENV = "ACTORFLOW_CHAOS_STEPS"
GEN_ENV = "ACTORFLOW_CHAOS_GEN"

GRAPH = {
    "name": "chaos5",
    "nodes": [{"id": f"n{k}", "type": "chaos.step"} for k in range(5)],
    "edges": [{"from": f"n{k}", "to": f"n{k + 1}"} for k in range(4)],
}


def side_effect() -> None:
    """The step body's side effect: a line in steps.log, written before the step returns."""
    info = current_step()
    line = f"{os.environ.get(GEN_ENV, '?')} {os.getpid()} {info.run_id} {info.seq} {info.attempt} {info.name}\n"
    fd = os.open(os.environ[STEPS_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def work(value: Any) -> Any:
    side_effect()
    time.sleep(random.uniform(0.001, 0.02))  # work after the side effect: kills land with steps in flight
    return value


async def wf(ctx: Any, i: int, nap: float) -> dict[str, Any]:
    out = [await ctx.step("s0", lambda: work(i))]
    out.append(await ctx.step("s1", lambda: work(i + 1)))
    await ctx.sleep("nap", nap)
    go = await ctx.wait_signal("go", timeout=600)
    out.append(await ctx.step("s2", lambda: work(i + 2)))
    out += list(await ctx.gather(ctx.step("s3", lambda: work(i + 3)), ctx.step("s4", lambda: work(i + 4))))
    extra = await ctx.wait_signal("extra", timeout=600)
    return {"steps": out, "go": go, "extra": extra}


async def wft(ctx: Any, i: int, nap: float) -> dict[str, Any]:
    out = [await ctx.step(f"s{k}", lambda k=k: work(i * 10 + k)) for k in range(3)]
    try:
        got = await ctx.wait_signal("never", timeout=0.2)
    except WaitTimeout:
        got = "timed out"
    await ctx.sleep("long", nap)
    out += [await ctx.step(f"s{k}", lambda k=k: work(i * 10 + k)) for k in range(3, 5)]
    return {"steps": out, "never": got}


def build(data_dir: str, mode: str) -> tuple[Engine, GraphRunner]:
    kwargs: dict[str, Any] = {"shards": 2}
    if mode == "multiproc":
        kwargs.update(system="multiproc", step_processes=1)
    engine = Engine(data_dir, close_grace=0.5, **kwargs)
    engine.workflow(name="wf")(wf)
    engine.workflow(name="wft")(wft)

    @engine.task(name="c_step")
    def c_step(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
        side_effect()
        return {"n": int(input.get("n", 0)) + 1, "add": int(input.get("add", 0))}

    @engine.task(name="c_sum")
    def c_sum(ctx: Any, input: dict[str, Any]) -> int:
        side_effect()
        return sum(int(v["n"]) + int(v["add"]) for v in input.values())

    registry = ExecutorRegistry()

    @registry.register
    class ChaosStep(TaskExecutor):
        schema_type = "chaos.step"
        name = "chaos step"

        def execute(self, context: ExecutionContext) -> TaskSuccess:
            side_effect()
            k = int((context.input or {}).get("k", 0))
            return TaskSuccess({"k": k + 1})

    return engine, GraphRunner(engine, registry)


class AckLog:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def read_acks(path: Path) -> tuple[set[str], set[str]]:
    """(operations acknowledged, operations begun), by operation key."""
    acked: set[str] = set()
    begun: set[str] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] in ("ack", "begin", "found"):
                (acked if parts[0] in ("ack", "found") else begun).add(parts[2])
    return acked, begun


def op_key(op: dict[str, Any]) -> str:
    if op["op"] == "start":
        return f"start {op['id']}"
    return f"signal {op['id']} {op['name']} {op['payload']}"


def signal_in_journal(data_dir: str, op: dict[str, Any]) -> bool:
    """Whether a signal begun but not acknowledged reached the journal (inbox first, then events: a
    delivery moves it from one to the other in one commit)."""
    from storage import LmdbJournal

    with LmdbJournal(data_dir) as j:
        if any(name == op["name"] and p == op["payload"] for name, _, p in j.signals(op["id"])):
            return True
        return any(
            e.kind == "signal_received" and e.name == op["name"] and e.data["payload"] == op["payload"]
            for e in j.events(op["id"])
        )


def start(engine: Engine, runner: GraphRunner, unit: dict[str, Any]) -> None:
    kind, uid, i = unit["kind"], unit["id"], unit["i"]
    if kind in ("wf", "wft"):
        engine.start(kind, i, unit["nap"], run_id=uid)
    elif kind == "chain":
        c = engine.chain("chain5")
        for _ in range(5):
            c = c.then("c_step")
        c.enqueue({"n": 0, "add": i}, chain_id=uid)
    elif kind == "chord":
        members = [("c_step", {"n": k, "add": i}) for k in range(4)]
        engine.chord(members, "c_sum").enqueue({}, chain_id=uid)
    elif kind == "graph":
        runner.start(GRAPH, {"k": 0, "i": i}, run_id=uid)
    else:
        raise ValueError(kind)


def main() -> None:
    work_dir, gen, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    final = len(sys.argv) > 4 and sys.argv[4] == "final"
    os.environ[STEPS_LOG_ENV] = str(work_dir / "steps.log")
    os.environ[GEN_ENV] = str(gen)
    plan = json.loads((work_dir / "plan.json").read_text())
    data_dir = str(work_dir / "data")
    acks_path = work_dir / "acks.log"
    acked, begun = read_acks(acks_path)
    log = AckLog(acks_path)
    if os.path.exists(os.path.join(data_dir, "data.mdb")):
        for op in plan["ops"]:
            key = op_key(op)
            if op["op"] == "signal" and key in begun and key not in acked and signal_in_journal(data_dir, op):
                log.write(f"found {gen} {key}")
                acked.add(key)
    engine, runner = build(data_dir, mode)
    engine.open()
    print("open", flush=True)
    pace = float(plan.get("pace", 0.0))
    try:
        for op in plan["ops"]:
            key = op_key(op)
            if key in acked:
                continue
            log.write(f"begin {gen} {key}")
            if op["op"] == "start":
                start(engine, runner, op)
            else:
                engine.signal(op["id"], op["name"], op["payload"])
            log.write(f"ack {gen} {key}")
            if pace:
                time.sleep(pace)
        print("driven", flush=True)
        if not final:
            while True:  # work until killed
                time.sleep(3600)
        results = {}
        for unit in plan["ops"]:
            if unit["op"] == "start":
                results[unit["id"]] = engine.result(unit["id"], timeout=float(plan.get("final_timeout", 300)))
        (work_dir / "results.json").write_text(json.dumps(results))
        print("results", flush=True)
    finally:
        if final:
            engine.close()


if __name__ == "__main__":
    main()
