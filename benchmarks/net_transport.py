"""What the HMAC frame layer costs: Thespian's multiprocTCPBase, plain vs actorflow's secured transport.

    python -m benchmarks.net_transport [--asks 1000] [--rounds 1000] [--repeat 3]

Same machine, loopback, fork start method, one fresh admin per measurement. Measures, per transport:
round trips/s of external asks (caller -> actor -> caller), actor-to-actor round trips/s of one small
tuple, and items/s when the messages carry batches of 100 and 1,000 small tuples; and, alone, the
microseconds the HMAC takes to seal and open one frame. Prints one JSON line with the medians, the min-max
ranges, and secured/plain ratios. No fsync, no engine: the transport only.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from thespian.actors import ActorSystem
from thespian.system.transport.streamBuffer import ReceiveBuffer, toSendBuffer

from actorflow._net import FrameCodec, open_actor_system
from actorflow._net._frames import SecureReceiveBuffer
from benchmarks._net_actors import Driver, Sink

_QUIET = {"version": 1, "disable_existing_loggers": False, "root": {"level": "CRITICAL"}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _plain() -> tuple[Any, Callable[[], None]]:
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": _free_port(), "Process Startup Method": "fork"},
                       logDefs=_QUIET, transientUnique=True)
    return asys, asys.shutdown


def _secured() -> tuple[Any, Callable[[], None]]:
    system = open_actor_system(admin_port=_free_port(), start_method="fork", log_config=_QUIET,
                               runtime_dir_path=tempfile.mkdtemp(prefix="af-net-bench-"))
    return system.actor_system, lambda: system.shutdown()


def _measure(start: Callable[[], tuple[Any, Callable[[], None]]], asks: int, rounds: int) -> dict[str, float]:
    asys, stop = start()
    try:
        sink, driver = asys.createActor(Sink), asys.createActor(Driver)
        for _ in range(20):  # warm up sockets
            asys.ask(sink, ("item", (0, "x")), 10)
        t = time.perf_counter()
        for _ in range(asks):
            asys.ask(sink, ("item", (0, "x" * 8)), 10)
        out = {"ask_round_trips_per_s": asks / (time.perf_counter() - t)}
        elapsed = asys.ask(driver, ("run", sink, rounds, 1), 120)
        out["actor_round_trips_per_s"] = rounds / elapsed
        for batch in (100, 1000):
            n = max(20, rounds // (batch // 10))
            elapsed = asys.ask(driver, ("run", sink, n, batch), 120)
            out[f"items_per_s_batch{batch}"] = n * batch / elapsed
        return out
    finally:
        stop()


def _codec_cost() -> dict[str, float]:
    """Microseconds to seal and open (HMAC both ways, no pickle) one frame body of each size."""
    codec = FrameCodec(os.urandom(32))
    out = {}
    for size in (100, 10_000, 1_000_000):
        body = os.urandom(size)
        n = max(20, 2_000_000 // size)
        t = time.perf_counter()
        for _ in range(n):
            codec.open(codec.seal(body))
        out[f"seal_open_us_{size}B"] = round((time.perf_counter() - t) / n * 1e6, 2)
    return out


def _frame_path_cost() -> dict[str, float]:
    """Microseconds of CPU for one message's wire path in one process, plain vs secured: serialize,
    frame, feed to a receive buffer, deserialize (what the two transports do per message, no socket)."""
    codec = FrameCodec(os.urandom(32))
    out: dict[str, float] = {}
    for label, message in (("small", ("item", (0, "x" * 8))), ("batch100", ("item", [(i, "x" * 8) for i in range(100)]))):
        for mode in ("plain", "secured"):
            n = 20_000 if label == "small" else 5_000
            t = time.perf_counter()
            for _ in range(n):
                if mode == "plain":
                    wire = toSendBuffer(("addr", message), pickle.dumps)
                    buf = ReceiveBuffer(pickle.loads)
                else:
                    wire = codec.frame(("addr", message))
                    buf = SecureReceiveBuffer(codec, None, "bench", eager=True)
                buf.addMore(wire)
                buf.completed()
            out[f"{label}_{mode}_us"] = round((time.perf_counter() - t) / n * 1e6, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "secured": []}
    for i in range(args.repeat):  # alternate the order: the machine is noisy
        order = (("plain", _plain), ("secured", _secured))
        for name, start in order if i % 2 == 0 else order[::-1]:
            runs[name].append(_measure(start, args.asks, args.rounds))
    result: dict[str, Any] = {"benchmark": "net_transport", "params": vars(args), "cpus": os.cpu_count()}
    for name, per in runs.items():
        result[name] = {
            key: {"median": round(statistics.median(r[key] for r in per)),
                  "min": round(min(r[key] for r in per)), "max": round(max(r[key] for r in per))}
            for key in per[0]
        }
    result["secured_over_plain"] = {
        key: round(result["secured"][key]["median"] / result["plain"][key]["median"], 3)
        for key in result["plain"]
    }
    result["hmac_cost"] = _codec_cost()
    result["frame_path_cpu"] = _frame_path_cost()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
