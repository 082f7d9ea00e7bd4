"""The control plane of the task queue: who consumes (workers), are they up (ping), how the queues
are doing (queue stats). Revokes are the journaled cancels of `_queue` (they reach running handlers).

Each open engine with tasks is a worker: it writes its entry (identity, queues, capabilities,
declared queues, last heartbeat) to `<data_dir>/workers/<worker id>.json` at open and every
HEARTBEAT seconds; a clean close marks it stopped. Heartbeats are files, not journal commits: they
are not durable state, and a journal write every few seconds would wake every reader that watches
the journal for changes (the dashboard's live refresh). Statistics are read from the journal by
plain functions, so `actorflow workers` / `actorflow queues` beside a live engine show what
`engine.workers()` / `engine.queue_stats()` show. (An engine without a data directory keeps its
entry in memory.)"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from storage import Journal

from .._placed import QUEUES_CAPABILITY, WORKER_CAPABILITY
from ._leases import INFLIGHT, ON_NODE
from ._status import NS_GATED, opts_of, task_name

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["ControlPlane", "WorkerInfo", "QueueStats", "PingReply", "read_workers", "read_queue_stats",
           "load_entries", "WORKERS_DIR", "HEARTBEAT"]

log = structlog.get_logger("actorflow.tasks")

WORKERS_DIR = "workers"  # in the data directory: one JSON file per worker
HEARTBEAT = 2.0  # seconds between a worker's heartbeats
STALE_AFTER = 3 * HEARTBEAT  # a worker silent this long is shown down
RATE_WINDOW = 60.0  # seconds over which `rate` counts finished executions
_RECENT = 5_000  # newest runs looked at for the rate
_FORGET_AFTER = 86_400.0  # stopped workers' entries are dropped after a day


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One consumer: what it takes, and whether it is up (`alive`: heartbeat within STALE_AFTER)."""

    worker_id: str
    host: str
    pid: int
    system: str
    queues: tuple[str, ...] | None  # None: every queue
    capabilities: dict[str, Any]
    started_at: float
    last_heartbeat: float
    alive: bool
    in_flight: dict[str, int] = field(default_factory=dict)  # running executions per queue (live workers)
    stopped_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue now: `depth` executions ready and waiting (of which `unplaceable`: no consumer takes
    them), `delayed` (a delay or a retry backoff), `in_flight` running, `rate` executions finished per
    second over the last minute, `oldest_age` seconds the oldest waiting one has waited."""

    queue: str
    depth: int = 0
    unplaceable: int = 0
    delayed: int = 0
    in_flight: int = 0
    rate: float = 0.0
    oldest_age: float = 0.0
    priority: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class PingReply:
    worker_id: str
    ok: bool
    latency: float  # seconds for a round trip (embedded: through the actor pump; multiproc: the facade)
    detail: str = ""


class ControlPlane:
    """This engine's worker entry and its heartbeat thread."""

    def __init__(self, tq: TaskQueue) -> None:
        self.tq = tq
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="actorflow-workers", daemon=True)
        self.last_heartbeat = 0.0
        data_dir = tq.engine.data_dir
        self.dir = None if data_dir is None else os.path.join(data_dir, WORKERS_DIR)
        self.current: dict[str, Any] = {}  # the entry last written (the only one without a data directory)

    def entry(self, now: float, stopped: bool = False) -> dict[str, Any]:
        eng = self.tq.engine
        consumer = self.tq.consumer
        return {
            "host": socket.gethostname(), "pid": os.getpid(), "system": eng.system,
            "queues": None if consumer.queues is None else sorted(consumer.queues),
            "capabilities": dict(consumer.capabilities),
            "declared": {q.name: q.priority for q in self.tq.router.queues.values()},
            "default_queue": self.tq.router.default_queue,
            "started_at": self.started_at, "last_heartbeat": now, "stopped_at": now if stopped else None,
            "nodes": [] if stopped else self._nodes(now),
        }

    def _nodes(self, now: float) -> list[dict[str, Any]]:
        """The worker nodes this engine sees (remote_tasks=True: the convention's `actorflow worker`s,
        asked each heartbeat), written into its entry: how `actorflow workers` beside it lists them."""
        eng = self.tq.engine
        if not getattr(eng, "remote_tasks", False):
            return []
        try:
            members = getattr(eng._runtime(), "convention_members", None)
            found = [] if members is None else node_workers(members(2.0), now)
        except Exception as exc:  # noqa: BLE001 - the admin is busy or going away: no nodes this beat
            log.info("worker nodes not listed this heartbeat", error=f"{type(exc).__name__}: {exc}")
            return []
        return [dataclasses.asdict(w) for w in found]

    def beat(self, stopped: bool = False) -> None:
        now = time.time()
        self.current = entry = self.entry(now, stopped)
        self.last_heartbeat = now
        if self.dir is None:
            return
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, self.worker_id + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f)
        os.replace(tmp, path)  # readers see the old entry or the new one, never half of one
        if not stopped:  # forget workers stopped (or silent) for a day
            for wid, e in load_entries(os.path.dirname(self.dir)):
                if wid != self.worker_id and now - float(e.get("last_heartbeat", 0)) > _FORGET_AFTER:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, wid + ".json"))

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        if self.dir is None:
            return [(self.worker_id, self.current)]
        return load_entries(os.path.dirname(self.dir))

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - closing meanwhile, or a full disk: try again later
                log.warning("worker heartbeat failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            self.beat(stopped=True)
        except Exception as exc:  # noqa: BLE001 - the journal is going away: the entry goes stale instead
            log.warning("worker stop mark failed", error=f"{type(exc).__name__}: {exc}")

    def ping(self, timeout: float) -> list[PingReply]:
        """One reply per run host (shard) of this engine: a request each host answers from its own
        actor (under multiproc: its process). The request is a cancel of a run id that cannot
        exist (random), which a host answers with "not cancelled" without writing anything."""
        from .._messages import CancelRun

        eng = self.tq.engine
        try:
            rt = eng._runtime()
        except Exception as exc:  # noqa: BLE001 - the answer is "down, because ..."
            return [PingReply(self.worker_id, False, 0.0, str(exc))]
        probes: dict[int, str] = {}
        nonce = uuid.uuid4().hex
        shard_of: Any = getattr(rt, "shard_of", lambda rid: 0)  # both runtimes route by it
        i = 0
        while len(probes) < eng.shards and i < 100 * eng.shards:
            rid = f"actorflow-ping-{nonce}-{i}"
            probes.setdefault(int(shard_of(rid)), rid)
            i += 1
        sent = []
        for shard, rid in sorted(probes.items()):
            request, fut = rt.notifier.request()
            sent.append((shard, request, fut, time.perf_counter()))
            rt.post(CancelRun(rid, request))
        out = []
        deadline = time.perf_counter() + timeout
        for shard, request, fut, t0 in sent:
            who = f"{self.worker_id}/shard-{shard}"
            try:
                fut.result(max(0.0, deadline - time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - no answer in time (or the host failed it)
                out.append(PingReply(who, False, time.perf_counter() - t0, f"no answer: {type(exc).__name__} {exc}".strip()))
            else:
                out.append(PingReply(who, True, time.perf_counter() - t0, f"run host {shard} ({eng.system})"))
            finally:
                rt.notifier.forget(request)
        return out


def load_entries(data_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """The worker entries of a data directory (an unreadable one is skipped: being rewritten)."""
    folder = os.path.join(data_dir, WORKERS_DIR)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                out.append((name[: -len(".json")], json.load(f)))
        except (OSError, ValueError):
            continue
    return out


def read_workers(journal: Journal, entries: list[tuple[str, dict[str, Any]]], now: float,
                 this: str | None = None) -> list[WorkerInfo]:
    """Every known worker, live first; in-flight counts for live ones from the running executions."""
    flights: dict[str, int] = {}
    for rid, q in _in_flight(journal).items():
        if rid not in ON_NODE:  # a worker node's: counted on that node
            flights[q] = flights.get(q, 0) + 1
    out = []
    for wid, e in entries:
        alive = e.get("stopped_at") is None and now - float(e["last_heartbeat"]) <= STALE_AFTER
        queues = None if e.get("queues") is None else tuple(e["queues"])
        mine = {q: n for q, n in flights.items() if queues is None or q in queues} if alive else {}
        out.append(WorkerInfo(wid, e["host"], int(e["pid"]), e.get("system", "?"), queues, dict(e.get("capabilities") or {}),
                              float(e["started_at"]), float(e["last_heartbeat"]), alive, mine, e.get("stopped_at")))
        if wid != this:  # the nodes another engine saw at its last heartbeat (this one asks them live)
            for n in e.get("nodes") or ():
                out.append(WorkerInfo(n["worker_id"], n["host"], int(n["pid"]), "node",
                                      None if n.get("queues") is None else tuple(n["queues"]), dict(n.get("capabilities") or {}),
                                      float(n["started_at"]), float(n["last_heartbeat"]), alive,
                                      dict(n.get("in_flight") or {}) if alive else {}))
    out.sort(key=lambda w: (not w.alive, w.worker_id != this, -w.last_heartbeat))
    return out


def _in_flight(journal: Journal) -> dict[str, str]:
    """Executions whose handler runs now -> queue: those this process's step pool runs (exact; the
    embedded system's facade is their host), and those whose status record says running (a shard's,
    once the handler reported progress or the host journaled its state)."""
    active = journal.active_run_ids()
    live = set(active)
    # a handler's own report (this process's pool, or a shard's notice under multiproc) is exact and
    # prompt; one whose run ended meanwhile (its shard died before telling) is left out
    running = {rid: q for rid, q in list(INFLIGHT.items()) if rid in live}
    for rec in journal.get_runs(active):
        if rec is not None and rec.state == "running" and task_name(rec.workflow) is not None and rec.run_id not in running:
            running[rec.run_id] = opts_of(journal, rec.run_id).get("queue", "default")
    return running


def read_queue_stats(journal: Journal, entries: list[tuple[str, dict[str, Any]]], now: float) -> list[QueueStats]:
    """Per-queue statistics over the executions in the journal (and every queue a worker declared)."""
    acc: dict[str, dict[str, Any]] = {}
    declared: dict[str, Any] = {"default": None}
    for _, e in entries:
        if e.get("stopped_at") is None:
            declared.update({q: (tuple(p) if p else None) for q, p in (e.get("declared") or {}).items()})
            declared.update({q: declared.get(q) for q in (e.get("queues") or ())})

    def row(q: str) -> dict[str, Any]:
        return acc.setdefault(q, {"depth": 0, "unplaceable": 0, "delayed": 0, "in_flight": 0, "done": 0, "oldest": None})

    gates = dict(journal.kv_scan(NS_GATED))
    flying = _in_flight(journal)
    for rec in journal.get_runs(journal.active_run_ids()):
        if rec is None or task_name(rec.workflow) is None:
            continue
        r = row(flying.get(rec.run_id) or opts_of(journal, rec.run_id).get("queue", "default"))
        if rec.run_id in flying:
            r["in_flight"] += 1
        elif rec.state == "sleeping":
            r["delayed"] += 1
        else:  # pending, or waiting for a dispatch (a limit's slot or a consumer)
            r["depth"] += 1
            r["unplaceable"] += rec.run_id in gates
            r["oldest"] = rec.created_at if r["oldest"] is None else min(r["oldest"], rec.created_at)
    for rec in journal.runs_page(limit=_RECENT, reverse=True):
        if rec.finished and task_name(rec.workflow) is not None and now - rec.updated_at <= RATE_WINDOW:
            row(opts_of(journal, rec.run_id).get("queue", "default"))["done"] += 1
    for q in declared:
        row(q)
    return [
        QueueStats(q, r["depth"], r["unplaceable"], r["delayed"], r["in_flight"], r["done"] / RATE_WINDOW,
                   0.0 if r["oldest"] is None else max(0.0, now - r["oldest"]), declared.get(q))
        for q, r in sorted(acc.items())
    ]


_ADDRESS = re.compile(r"\|([^|()]+)\)")


def node_workers(members: list[tuple[str, dict[str, Any]]], now: float) -> list[WorkerInfo]:
    """The `actorflow worker` nodes among a convention's members (those advertising the worker
    capability), as WorkerInfo: queues and capabilities as each node reports them to Thespian.
    A node that did not answer is not listed (the admin drops it from the convention soon after).
    Its in-flight counts: the executions its handlers reported running (relayed by the shards that
    placed them); its last heartbeat: now, when it answered."""
    per_node: dict[str, dict[str, int]] = {}
    for rid, node in list(ON_NODE.items()):
        q = INFLIGHT.get(rid)
        if q is not None:
            counts = per_node.setdefault(node, {})
            counts[q] = counts.get(q, 0) + 1
    out = []
    for address, caps in members:
        if not caps.get(WORKER_CAPABILITY):
            continue
        found = _ADDRESS.search(address)
        where = found.group(1) if found else address  # "host:port" of the node's admin ("":port: this host)
        host = str(caps.get("actorflow.host") or where.rpartition(":")[0] or socket.gethostname())
        queues = caps.get(QUEUES_CAPABILITY)
        own = {k: v for k, v in caps.items() if not k.startswith("actorflow.") and k not in _THESPIAN_CAPABILITIES}
        out.append(WorkerInfo(f"node {host}:{where.rpartition(':')[2]}", host, int(caps.get("actorflow.pid") or 0), "node",
                              None if queues is None else tuple(queues), own,
                              float(caps.get("actorflow.started_at") or 0.0), now, True,
                              per_node.get(f"{host}:{caps.get('actorflow.pid')}", {})))
    return out


_THESPIAN_CAPABILITIES = frozenset({"Admin Port", "Process Startup Method", "Thespian ActorSystem Name",
                                    "Thespian ActorSystem Version", "Thespian Watch Supported", "Python Version",
                                    "Thespian Generation", "Thespian Version", "Convention Address.IPv4",
                                    "actorflow.convention"})
