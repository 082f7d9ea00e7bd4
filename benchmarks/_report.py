"""Benchmark results as a markdown table and a PNG chart (matplotlib), from the JSON lines."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._harness import Metric, Scenario

__all__ = ["advantage", "round_figure", "write_chart", "write_markdown"]


def round_figure(x: float) -> float:
    """Three significant figures or so: enough to compare, no false precision."""
    if x == 0 or not isinstance(x, (int, float)):
        return x
    ax = abs(x)
    if ax >= 1000:
        return round(x)
    if ax >= 10:
        return round(x, 1)
    if ax >= 0.1:
        return round(x, 3)
    return float(f"{x:.3g}")


def advantage(metric: Metric, r: float | None) -> float | None:
    """How many times better actorflow is (>1) or worse (<1) on this metric."""
    if r is None or r == 0:
        return None
    return round_figure(r if metric.better == "higher" else 1.0 / r)


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x.is_integer() and abs(x) >= 1000:
        x = int(x)
    if isinstance(x, int) or (isinstance(x, float) and abs(x) >= 1000):
        return f"{x:,.0f}"
    return f"{x:g}"


def _cell(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "–"
    if len(s.get("runs", [])) > 1:
        return f"{_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"
    return _fmt(s["median"])


def write_markdown(path: str, lines: list[dict[str, Any]], env: dict[str, Any], regs: dict[str, Scenario]) -> None:
    peers = env.get("peers") or []
    out = [
        "# actorflow benchmarks",
        "",
        f"{env['when']} · {env['cpus']} CPUs · Python {env['python']} · {env['platform']} · "
        f"mode {'quick' if env['quick'] else 'full'}{' (tiny)' if env.get('tiny') else ''} · "
        f"data on {env['fs']} ({env['base']}) · peers: {', '.join(peers) or 'none'}"
        + (f" · run log{'s' if len(env['rendered_from']) > 1 else ''}: {', '.join(env['rendered_from'])}"
           if env.get("rendered_from") else f" · run log: {env['run_log']}" if env.get("run_log") else ""),
        "",
        "Cells: median over repetitions (min–max), the sides alternating. Ratio = actorflow / peer on the same "
        "metric at the same N (N column; no ratio where N differs); 'advantage' says how many times better "
        "actorflow is (>1) or worse (<1), whichever way the metric points. Each side's settings are listed "
        "under 'Parameters and notes'.",
        "",
    ]
    peer = peers[0] if peers else None
    head = ["scenario", "metric", "unit", "better", "N" + (f" (af / {' / '.join(peers)})" if peer else ""),
            "actorflow"]
    for pr in peers:  # one group of columns per peer (the tasks scenario has three)
        head += [pr, f"ratio af/{pr}", "advantage" if len(peers) == 1 else f"advantage vs {pr}"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for line in lines:
        sc = regs.get(line["scenario"])
        if sc is None:
            continue
        for m in sc.metrics:
            ns = line.get("n", {}).get(m.key) or []
            n_cell = " / ".join(_fmt(x) for x in ns) if any(x is not None for x in ns) else "–"
            row = [line["scenario"], m.label, m.unit, "↑" if m.better == "higher" else "↓", n_cell,
                   _cell(line["actorflow"].get(m.key))]
            for pr in peers:
                if pr not in line:
                    row += ["–", "–", "–"]
                    continue
                pm = line.get(pr, {}).get(m.peer_key) if m.peer_key else None
                r = line.get(f"ratio_actorflow_over_{pr}", {}).get(m.key) if m.peer_key else None
                adv = advantage(m, r)
                missing = pm is None or pm.get("median") is None  # e.g. a peer without an async enqueue
                peer_cell = _cell(pm) if not (missing and m.no_peer) else m.no_peer
                row += [peer_cell, _fmt(r), f"{_fmt(adv)}×" if adv is not None else "–"]
            out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("## Parameters and notes")
    out.append("")
    for line in lines:
        sc = regs.get(line["scenario"])
        out.append(f"- **{line['scenario']}** — {line['title']}. params `{json.dumps(line['params'])}`, "
                   f"repeat {line['repeat']}, {line['elapsed_s']} s."
                   + (f" {sc.notes}" if sc and sc.notes else ""))
        for side, st in line.get("settings", {}).items():
            if st:
                out.append(f"  - {side} settings: " + "; ".join(f"{k}: {v}" for k, v in st.items()))
        for key in [k for k in line if k.endswith("_info")]:
            out.append(f"  - {key}: `{json.dumps(line[key])}`")
        if line.get("errors"):
            out.append(f"  - errors: `{json.dumps(line['errors'])[:500]}`")
    out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


def write_chart(path: str, lines: list[dict[str, Any]], env: dict[str, Any], regs: dict[str, Scenario]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib not installed: no chart", file=sys.stderr)
        return False
    peers = env.get("peers") or []
    panels: list[tuple[str, Metric, dict[str, Any]]] = []
    for line in lines:
        sc = regs.get(line["scenario"])
        if sc is None:
            continue
        for m in sc.metrics:
            if m.chart and line["actorflow"].get(m.key, {}).get("median") is not None:
                panels.append((line["scenario"], m, line))
    if not panels:
        return False
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, m, line) in zip(axes.flat, panels):
        labels, meds, lo, hi, colors = [], [], [], [], []
        a = line["actorflow"][m.key]
        labels.append("actorflow")
        meds.append(a["median"])
        lo.append(a["median"] - a["min"])
        hi.append(a["max"] - a["median"])
        colors.append("#2a6fdb")
        for pr, color in zip(peers, ("#e07b39", "#6a9f3a", "#9b59b6", "#888888")):
            if m.peer_key and line.get(pr, {}).get(m.peer_key, {}).get("median") is not None:
                p = line[pr][m.peer_key]
                labels.append(pr)
                meds.append(p["median"])
                lo.append(p["median"] - p["min"])
                hi.append(p["max"] - p["median"])
                colors.append(color)
        ax.bar(labels, meds, yerr=[lo, hi], color=colors, capsize=4)
        ax.set_title(textwrap.fill(f"{name}: {m.label}", 42), fontsize=8.5)
        ax.set_ylabel(f"{m.unit} ({'higher' if m.better == 'higher' else 'lower'} is better)", fontsize=8)
        ax.tick_params(labelsize=8)
        if len(meds) >= 2 and min(meds) > 0 and max(meds) / min(meds) > 30:
            ax.set_yscale("log")
        for i, v in enumerate(meds):
            ax.annotate(_fmt(v), (i, v), ha="center", va="bottom", fontsize=8)
    fig.suptitle(
        f"actorflow vs {', '.join(peers) or '(no peer)'} — {env['cpus']} CPUs, {'quick' if env['quick'] else 'full'} run, {env['when']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
