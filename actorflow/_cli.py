"""The `actorflow` command: the entry point. The demo lives here; `runs ...` in `actorflow.cli`,
`graph ...` in `actorflow.graph._cli`, `dashboard` in `actorflow.dashboard`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from ._engine import Engine
from ._retry import RetryPolicy
from .errors import ActorflowError, ConfigError, WorkflowFailed

__all__ = ["main"]


def _demo_engine(data_dir: str, sleep_seconds: float, console: Console) -> tuple[Engine, Any]:
    engine = Engine(data_dir)
    inventory: dict[str, int] = {"widget": 3}

    def reserve(order: dict[str, Any]) -> str:
        inventory[order["item"]] -= order["qty"]
        return f"reservation-{order['id']}"

    def release(order: dict[str, Any]) -> None:
        inventory[order["item"]] += order["qty"]
        console.print(f"  [yellow]compensation[/] released {order['qty']} {order['item']} for {order['id']}")

    def charge(order: dict[str, Any]) -> str:
        if order.get("card") == "declined":
            raise RuntimeError("card declined")
        return f"payment-{order['id']}"

    @engine.workflow(name="checkout")
    async def checkout(ctx: Any, order: dict[str, Any]) -> str:
        await ctx.step("validate", lambda: bool(order["qty"] > 0))
        ctx.report_progress(0.2)
        await ctx.step("reserve", lambda: reserve(order), compensate=lambda: release(order))
        ctx.report_progress(0.4)
        await ctx.step("charge", lambda: charge(order), retry=RetryPolicy.exponential(max_attempts=2, initial_delay=0.2))
        ctx.report_progress(0.6)
        await ctx.sleep("cooling_off", sleep_seconds)
        ctx.report_progress(0.8)
        delivered = await ctx.wait_signal("delivery_confirmed", timeout=60)
        return "delivered" if delivered else "pending"

    return engine, checkout


def _demo(args: argparse.Namespace) -> int:
    console = Console()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="actorflow-demo-")
    console.print(f"[bold]actorflow demo[/] — embedded engine, LMDB journal in {data_dir}")
    engine, checkout = _demo_engine(data_dir, args.sleep, console)
    orders = [
        {"id": "o-1", "item": "widget", "qty": 1, "card": "ok"},
        {"id": "o-2", "item": "widget", "qty": 2, "card": "declined"},
    ]
    with engine:
        handles = [engine.start(checkout, o, run_id=f"order-{o['id']}") for o in orders]
        with Progress(TextColumn("{task.description:<12}"), BarColumn(), TextColumn("{task.fields[state]:<10}"), console=console) as bars:
            tasks = {h.run_id: bars.add_task(h.run_id, total=1.0, state="pending") for h in handles}

            def follow(run_id: str) -> None:
                for st in engine.monitor(run_id):
                    bars.update(tasks[run_id], completed=st.progress, state=st.state.value)
                    if st.state.value == "sleeping" or st.state.value == "waiting":
                        if st.progress >= 0.8:
                            engine.signal(run_id, "delivery_confirmed", True)

            threads = [threading.Thread(target=follow, args=(h.run_id,)) for h in handles]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for h in handles:
            try:
                console.print(f"{h.run_id}: [green]{h.result(timeout=30)}[/]")
            except WorkflowFailed as exc:
                console.print(f"{h.run_id}: [red]failed[/] — {exc}")
        for h in handles:
            _print_history(console, engine, h.run_id)
    return 0


def _print_history(console: Console, engine: Engine, run_id: str) -> None:
    table = Table(title=f"journal of {run_id}", show_lines=False)
    for col in ("seq", "kind", "name", "pos", "data"):
        table.add_column(col)
    for ev in engine.history(run_id):
        d = ev.to_dict()
        table.add_row(str(ev.seq), ev.kind, ev.name, str(ev.pos), json.dumps(d["data"], default=str)[:60])
    console.print(table)


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from .dashboard import serve_data_dir
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs the 'dashboard' extra: pip install 'actorflow[dashboard]' ({exc})") from None
    board = serve_data_dir(args.data_dir, port=args.port, bind=args.bind, read_only=args.read_only)
    print(f"actorflow dashboard on {board.url} for {args.data_dir}{' (read-only)' if args.read_only else ''}", flush=True)
    board.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorflow", description="Durable workflows on the actor model.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run a checkout workflow with a live progress display")
    demo.add_argument("--data-dir", default=None, help="journal directory (default: a new temp dir)")
    demo.add_argument("--sleep", type=float, default=1.0, help="seconds of the durable cooling-off sleep")
    demo.set_defaults(fn=_demo)
    from .cli import add_parsers  # `runs list|show|history|signal|cancel|watch|fork`, `history` (issue 15)

    add_parsers(sub)
    from .graph._cli import add_graph_parser  # graph workflows (issue 14): `actorflow graph ...`

    add_graph_parser(sub)
    board = sub.add_parser("dashboard", help="web dashboard of a data directory (the 'dashboard' extra)")
    board.add_argument("--data-dir", default="./actorflow-data")
    board.add_argument("--port", type=int, default=8765, help="TCP port (0: any free one)")
    board.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: loopback only)")
    board.add_argument("--read-only", action="store_true", help="hide and refuse every action (signal, cancel)")
    board.set_defaults(fn=_dashboard)
    from ._net._cli import add_subcommands as add_net_subcommands  # admin/worker (issue 12)

    add_net_subcommands(sub)
    args = parser.parse_args(argv)
    from .cli import is_runs_command, run_command

    if is_runs_command(args.fn):  # one-line errors with a hint, and exit codes by kind (see actorflow.cli)
        return run_command(args.fn, args)
    try:
        return int(args.fn(args))
    except ActorflowError as exc:
        print(f"actorflow: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
