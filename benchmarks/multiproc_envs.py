"""conc3's astart throughput: embedded vs an admin-joined multiprocess engine (shards sharing the
engine's LMDB environment) vs the same with both shards node-owned (each its own environment).

    python -m benchmarks.multiproc_envs TMPDIR [N] [REPS] [MODES] [BURN]

MODES: comma-separated, measured in the order given (default
embedded,shared,nodes,shared,nodes,embedded: each mode twice, alternated); each measures REPS
repetitions of N workflows (`astart` gathered on one loop, then `aresult`) after a warm-up. One admin
and one member node (`actorflow worker --data-dir`) on loopback ports; every process is stopped at the
end. Prints each mode's figures and one JSON line of medians (issue 12 item 7: would a journal per
shard, fsyncs in parallel, lift the multiprocess engine's throughput?).

BURN (default 0): each of the three steps runs a pure-Python loop of BURN iterations instead of
returning at once (20,000 is ~1 ms of CPU here): where the steps' own CPU dominates, the shards'
processes use both cores, which the embedded engine's one interpreter cannot.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from actorflow import Engine

from .scenarios._common import register_three_step

ROOT = Path(__file__).resolve().parents[1]


def burned(value: int, iterations: int) -> int:
    """`value`, after a pure-Python loop of `iterations` (a step's CPU, holding the GIL throughout as a
    parsing or scoring step does)."""
    x = 0
    for k in range(iterations):
        x += k * value
    return value


def register_burning(engine: Engine, iterations: int) -> Any:
    """conc3's three-step workflow with each step `burned` for `iterations` (0: conc3's own)."""
    if not iterations:
        return register_three_step(engine)

    @engine.workflow(name="three_burning")
    async def three_burning(ctx: Any, i: int) -> int:
        a = await ctx.step("s1", lambda: burned(i, iterations))
        b = await ctx.step("s2", lambda: burned(a + 1, iterations))
        return await ctx.step("s3", lambda: burned(b + 1, iterations))  # type: ignore[no-any-return]

    return three_burning


def measure(engine: Engine, n: int, reps: int, iterations: int = 0) -> list[int]:
    """Workflows/s of `reps` repetitions of n gathered astarts on this engine."""
    wf = register_burning(engine, iterations)
    out = []
    with engine:
        engine.run(wf, -1, timeout=60)

        async def go() -> list[Any]:
            handles = await asyncio.gather(*(engine.astart(wf, i) for i in range(n)))
            return await asyncio.gather(*(h.aresult(120) for h in handles))

        for _ in range(reps):
            t0 = time.perf_counter()
            results = asyncio.run(go())
            wall = time.perf_counter() - t0
            assert results == [i + 2 for i in range(n)]
            out.append(round(n / wall))
    return out


def main(tmp: Path, n: int, reps: int, modes: list[str], iterations: int = 0) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _node_cluster import SECRET, Nodes, free_port

    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(tmp / "run")}

    def admin(cmd: str) -> None:
        subprocess.run([sys.executable, "-m", "actorflow._cli", "admin", cmd, "--port", str(port)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)

    admin("start")
    nodes = Nodes(tmp, port)
    got: dict[str, list[int]] = {}
    try:
        nodes.start(args=("--data-dir", str(tmp / "node"), "--node-id", "node"))
        system = f"127.0.0.1:{port}"
        for k, mode in enumerate(modes):
            path = tmp / f"e-{mode}-{k}"
            if mode == "embedded":
                engine = Engine(path)
            elif mode == "shared":
                engine = Engine(path, system=system, secret=SECRET, shards=2)
            elif mode == "nodes":
                engine = Engine(path, system=system, secret=SECRET, shards=2, shard_nodes={0: "node", 1: "node"})
            else:
                raise SystemExit(f"unknown mode {mode!r}: embedded, shared or nodes")
            got.setdefault(mode, []).extend(measure(engine, n, reps, iterations))
            print(mode, got[mode], flush=True)
    finally:
        nodes.stop_all()
        admin("stop")
    return {mode: statistics.median(v) for mode, v in got.items()}


if __name__ == "__main__":
    a = sys.argv[1:]
    default = "embedded,shared,nodes,shared,nodes,embedded"
    print(json.dumps(main(Path(a[0]), int(a[1]) if len(a) > 1 else 1000, int(a[2]) if len(a) > 2 else 3,
                          (a[3] if len(a) > 3 else default).split(","), int(a[4]) if len(a) > 4 else 0)))
