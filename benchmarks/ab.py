"""A/B of the actorflow side of scenarios between two checkouts, repetitions alternated, medians.

    python -m benchmarks.ab --base /tmp/base-checkout steps100 seq3 --reps 8

On a shared, noisy machine two sides measured one after the other differ by the load of the moment;
alternating their repetitions (A B B A A B ...) in one run spreads it over both, and the medians are
compared. Each repetition is a fresh process running one scenario's actorflow function from its own
checkout (`--base`, and `--new`, default this one) with the same interpreter; it checks that it
imported actorflow from there. Peers (DBOS) are not run: this is for comparing actorflow with itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

_ONE = r"""
import json, os, shutil, sys, tempfile
sys.path.insert(0, os.getcwd())
import actorflow
from benchmarks._harness import Settings
mod = __import__("benchmarks.scenarios." + sys.argv[1], fromlist=["actorflow", "params"])
p = mod.params(Settings(quick=sys.argv[2] == "quick"))
d = tempfile.mkdtemp(dir=sys.argv[3])
try:
    r = mod.actorflow(p, d)
finally:
    shutil.rmtree(d, ignore_errors=True)
assert os.path.realpath(actorflow.__file__).startswith(os.path.realpath(os.getcwd())), actorflow.__file__
print("RESULT " + json.dumps({k: v for k, v in r.items() if isinstance(v, (int, float))}))
"""


def one(checkout: str, scenario: str, size: str, workdir: str, timeout: float) -> dict[str, float]:
    """One repetition of `scenario`'s actorflow side, run from `checkout` in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", _ONE, scenario, size, workdir],
        cwd=checkout, capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{scenario} in {checkout} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1][len("RESULT "):])
    return result


def compare(base: list[dict[str, float]], new: list[dict[str, float]]) -> list[tuple[str, float, float]]:
    """(metric, base median, new median) for every metric both sides reported."""
    keys = [k for k in new[0] if all(k in r for r in base + new)]
    return [(k, statistics.median(r[k] for r in base), statistics.median(r[k] for r in new)) for k in keys]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="+", help="scenario names (python -m benchmarks --list)")
    ap.add_argument("--base", required=True, help="checkout to compare against (e.g. a git worktree of main)")
    ap.add_argument("--new", default=os.getcwd(), help="checkout under test (default: the current directory)")
    ap.add_argument("--reps", type=int, default=6, help="repetitions per side (default 6)")
    ap.add_argument("--size", choices=("full", "quick"), default="full", help="scenario sizes (default full)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per repetition")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    for side in (args.base, args.new):
        if not os.path.isdir(os.path.join(side, "actorflow")):
            ap.error(f"{side!r} is not an actorflow checkout (no actorflow/ directory)")
    with tempfile.TemporaryDirectory(prefix="actorflow-ab-") as workdir:
        for scenario in args.scenarios:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
            for i in range(args.reps):
                order = ("base", "new") if i % 2 == 0 else ("new", "base")
                for side in order:
                    checkout = args.base if side == "base" else args.new
                    runs[side].append(one(checkout, scenario, args.size, workdir, args.timeout))
                    print(f"{scenario} {side} rep {i + 1}: {_short(runs[side][-1])}", file=sys.stderr, flush=True)
            print(f"\n{scenario} ({args.size}, {args.reps} alternated repetitions per side, medians)")
            print(f"{'metric':32} {'base':>12} {'new':>12} {'change':>8}")
            for key, b, n in compare(runs["base"], runs["new"]):
                change = f"{100 * (n - b) / b:+.1f}%" if b else "–"
                print(f"{key:32} {b:12.1f} {n:12.1f} {change:>8}")
    return 0


def _short(r: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.1f}" for k, v in list(r.items())[:4])


if __name__ == "__main__":
    sys.exit(main())
