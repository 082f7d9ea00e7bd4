"""`actorflow workers` and `actorflow queues`: the task queue's control plane of a data directory,
read from its journal beside the engine that holds it (the functions `engine.workers()` and
`engine.queue_stats()` use, so both show the same)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

from rich.table import Table
from rich.text import Text

from .._readmodel import json_safe
from ..tasks._control import load_entries, read_queue_stats, read_workers
from ._common import EXIT_OK, ago, console, data_dir_of, duration, emit_json, open_journal, when

__all__ = ["add_queue_parsers", "cmd_workers", "cmd_queues"]


def cmd_workers(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    now = time.time()
    with open_journal(data_dir) as journal:
        workers = read_workers(journal, load_entries(data_dir), now)
    if args.json:
        for w in workers:
            emit_json(json_safe(dataclasses.asdict(w)))
        return EXIT_OK
    table = Table(title=f"workers of {data_dir}", title_justify="left")
    for col in ("worker", "state", "system", "queues", "capabilities", "in flight", "last heartbeat", "started"):
        table.add_column(col, overflow="fold", no_wrap=col in ("worker", "state", "system", "last heartbeat"))
    for w in workers:
        state = Text("up", style="green") if w.alive else Text("down" + (" (stopped)" if w.stopped_at else ""), style="red")
        flights = ", ".join(f"{q}={n}" for q, n in sorted(w.in_flight.items())) or "0"
        table.add_row(w.worker_id, state, w.system, "*" if w.queues is None else ",".join(w.queues),
                      json.dumps(w.capabilities) if w.capabilities else "-", flights, ago(w.last_heartbeat, now), when(w.started_at))
    out = console()
    out.print(table)
    out.print(f"{sum(w.alive for w in workers)} up, {sum(not w.alive for w in workers)} down")
    return EXIT_OK


def cmd_queues(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    with open_journal(data_dir) as journal:
        stats = read_queue_stats(journal, load_entries(data_dir), time.time())
    if args.json:
        for s in stats:
            emit_json(json_safe(dataclasses.asdict(s)))
        return EXIT_OK
    table = Table(title=f"task queues of {data_dir}", title_justify="left")
    for col in ("queue", "depth", "unplaceable", "delayed", "in flight", "rate/s", "oldest", "priority"):
        table.add_column(col, justify="left" if col in ("queue", "priority") else "right")
    for s in stats:
        table.add_row(s.queue, str(s.depth), Text(str(s.unplaceable), style="yellow" if s.unplaceable else ""), str(s.delayed),
                      str(s.in_flight), f"{s.rate:.2f}", duration(s.oldest_age) if s.depth else "-",
                      "-" if s.priority is None else f"{s.priority[0]}..{s.priority[1]}")
    out = console()
    out.print(table)
    out.print("depth: ready and waiting (unplaceable: no consumer takes its queue or requirements); rate: finished/s over the last minute")
    return EXIT_OK


def add_queue_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser, str], None],
) -> None:
    """`workers` and `queues` on the entry point."""
    p = sub.add_parser("workers", help="task consumers of a data directory: up or down, queues, capabilities, in flight, last heartbeat")
    common(p, "one JSON object per worker (JSON lines)")
    p.set_defaults(fn=cmd_workers)
    p = sub.add_parser("queues", help="task queues: depth, unplaceable, delayed, in flight, rate, oldest waiting")
    common(p, "one JSON object per queue (JSON lines)")
    p.set_defaults(fn=cmd_queues)
