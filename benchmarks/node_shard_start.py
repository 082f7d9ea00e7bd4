"""start() latency of a run of the engine's own shard vs one of a node-owned shard (issue 12 item 11).

    python -m benchmarks.node_shard_start TMPDIR [N]

An admin (`actorflow admin start`) and one member node (`actorflow worker --data-dir`) on loopback
ports; Engine(shards=2, shard_nodes={1: node}); N starts on each shard, alternated (which goes first
alternates too); prints the medians and their ratio as one JSON line. Every process is stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from actorflow import Engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _node_cluster import SECRET, Nodes, free_port  # noqa: E402


async def noop(ctx: Any, i: int) -> int:
    return i


def _ids(prefix: str, shard: int, n: int) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        rid = f"{prefix}-{k}"
        if zlib.crc32(rid.encode()) % 2 == shard:
            out.append(rid)
        k += 1
    return out


def main(tmp: Path, n: int) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "ACTORFLOW_SECRET": SECRET, "ACTORFLOW_RUNTIME_DIR": str(tmp / "run")}

    def admin(cmd: str) -> None:
        subprocess.run([sys.executable, "-m", "actorflow._cli", "admin", cmd, "--port", str(port)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)

    admin("start")
    nodes = Nodes(tmp, port)
    try:
        nodes.start(args=("--data-dir", str(tmp / "node"), "--node-id", "node"))
        engine = Engine(tmp / "engine", system=f"127.0.0.1:{port}", secret=SECRET, shards=2, shard_nodes={1: "node"})
        engine.workflow()(noop)
        ids = {0: _ids("l", 0, n), 1: _ids("r", 1, n)}
        times: dict[int, list[float]] = {0: [], 1: []}
        with engine:
            for i in range(n):
                for shard in (0, 1) if i % 2 else (1, 0):
                    t0 = time.perf_counter()
                    engine.start(noop, i, run_id=ids[shard][i])
                    times[shard].append(time.perf_counter() - t0)
            for rid in ids[0] + ids[1]:
                engine.result(rid, timeout=60)
        local, node = (statistics.median(times[s]) * 1e3 for s in (0, 1))
        return {"n": n, "local_ms": round(local, 2), "node_ms": round(node, 2), "ratio": round(node / local, 2)}
    finally:
        nodes.stop_all()
        admin("stop")


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300)))
