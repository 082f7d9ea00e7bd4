"""Dramatiq on a Redis server, the `tasks` scenario's third peer.

The benchmark starts its own `redis-server` (Debian's) on a free loopback port with a temp dir,
`--appendonly yes --appendfsync always` (every write is in the fsync'd append-only file before Redis
replies), no RDB snapshots, and stops it by PID afterwards. A real `dramatiq` worker (its CLI: worker
processes with threads, as Dramatiq users run it) executes the actor; results go to Redis through the
Results middleware. A task counts once the worker acknowledged it, which Dramatiq does after storing
its result: `HLEN dramatiq:<queue>.msgs` (messages not acknowledged yet) reaching 0. Dramatiq's
delivery guarantee is AT-LEAST-ONCE: a message stays in Redis until acked after the actor ran, and a
dead worker's unacked messages are requeued.

The broker is configured from the environment (`AF_BENCH_REDIS_URL`), because the worker processes
import this module by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchmarks.scenarios._common import die_with_parent

URL_ENV = "AF_BENCH_REDIS_URL"
QUEUE = "af_bench"

_url = os.environ.get(URL_ENV, "redis://127.0.0.1:1/0")  # unset: only the module is imported (no worker)
broker = RedisBroker(url=_url)
broker.add_middleware(Results(backend=RedisBackend(url=_url)))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def inc(x: int) -> int:
    return x + 1


def available() -> bool:
    return shutil.which("redis-server") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server this process starts and stops, by PID; loopback only, data in `workdir`."""

    def __init__(self, workdir: str) -> None:
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = _free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "yes",
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client.ping():
                    break
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not come up on port {self.port}")
            time.sleep(0.02)

    def config(self) -> dict[str, str]:
        got: dict[str, str] = {}
        for key in ("appendonly", "appendfsync", "save", "bind"):
            for k, v in self.client.config_get(key).items():
                got[k.decode() if isinstance(k, bytes) else k] = v.decode() if isinstance(v, bytes) else v
        return got

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _start_worker(processes: int, threads: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dramatiq", "benchmarks.peers.dramatiq_peer", "--processes", str(processes),
           "--threads", str(threads), "--queues", QUEUE]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent)


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the dramatiq main process (it stops its worker processes), then check those by PID."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


def _wait_acked(client: redis.Redis, proc: subprocess.Popen[bytes], timeout: float) -> None:
    key = f"dramatiq:{QUEUE}.msgs"
    deadline = time.monotonic() + timeout
    while (left := client.hlen(key)) > 0:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"dramatiq worker exited {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dramatiq: {left} messages still unacknowledged after {timeout}s")
        time.sleep(0.002)


def tasks(p: dict[str, Any], workdir: str) -> dict[str, Any]:
    global broker
    from benchmarks.scenarios._common import produce

    n, processes, threads = p["n"], p["dramatiq_processes"], p["dramatiq_threads"]
    server = RedisServer(workdir)
    proc = None
    try:
        cfg = server.config()
        if cfg.get("appendonly") != "yes" or cfg.get("appendfsync") != "always":
            raise RuntimeError(f"redis-server is not appendonly + appendfsync always: {cfg}")
        os.environ[URL_ENV] = server.url
        broker = RedisBroker(url=server.url)  # this process's broker, now pointing at the server
        broker.add_middleware(Results(backend=RedisBackend(url=server.url)))
        dramatiq.set_broker(broker)
        inc.broker = broker
        broker.declare_actor(inc)
        proc = _start_worker(processes, threads, dict(os.environ))
        warm = inc.send(-1)  # the workers are up and fetching before the clock starts
        if warm.get_result(block=True, timeout=60_000) != 0:
            raise RuntimeError("dramatiq warm-up returned a wrong result")
        _wait_acked(server.client, proc, 60)
        out: dict[str, Any] = {"n": n}
        for prefix, producers in (("", 1), ("threads_", p["producers"])):
            t0 = time.perf_counter()
            messages, t_enq = produce(inc.send, n, producers)
            _wait_acked(server.client, proc, p.get("timeout", 600))
            t_all = time.perf_counter() - t0
            dead = server.client.hlen(f"dramatiq:{QUEUE}.XQ.msgs")
            if dead or [m.get_result(block=False) for m in messages] != [i + 1 for i in range(n)]:
                raise RuntimeError(f"dramatiq returned wrong results ({dead} dead-lettered)")
            out[f"{prefix}enqueue_per_s"], out[f"{prefix}e2e_per_s"] = n / t_enq, n / t_all
        worker_pid, version = proc.pid, _redis_version(server)
    finally:
        if proc is not None:
            _stop_worker(proc)
        server.stop()
    out["settings"] = {
        "api": f"actor.send(x) x N from one producer thread, then from {p['producers']} (one Redis round trip "
               "each, no batch enqueue); then poll HLEN of the queue's unacked messages until 0",
        "guarantee": "at-least-once (acked after the actor ran and its result was stored)",
        "durability": f"redis-server {version} started by the benchmark: appendonly={cfg.get('appendonly')}, "
                      f"appendfsync={cfg.get('appendfsync')}, save='{cfg.get('save')}', bind {cfg.get('bind')} "
                      "(read back with CONFIG GET)",
        "worker": f"dramatiq CLI (pid {worker_pid}): {processes} processes x {threads} threads; "
                  "Results middleware on the same Redis",
    }
    return out


def _redis_version(server: RedisServer) -> str:
    try:
        return str(server.client.info("server").get("redis_version", "?"))
    except redis.RedisError:
        return "?"
