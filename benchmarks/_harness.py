"""Benchmark runner: scenario registry, isolated worker processes, statistics and output writers.

Every measurement (one scenario, one side, one repetition) runs in a fresh Python process, so one
scenario's threads, memory or a hung engine cannot disturb the next, and DBOS (a process-wide
singleton) starts clean each time. The parent only collects the numbers:

- stdout: ONE JSON line per scenario (params, per-metric median/min/max/runs, peer numbers, ratios);
- results dir: latest.json (everything, plus the environment), latest.md (table), latest.png (chart).

Ratios are always actorflow / peer for the same metric; each metric says whether higher or lower is
better, and the table words the comparison accordingly. Medians over repetitions with the min-max
range: the reference machine is a noisy 2-core VM, so nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._report import round_figure as _round
from ._report import write_chart, write_markdown
from .journal import fs_type

__all__ = [
    "Metric",
    "Scenario",
    "Settings",
    "register",
    "scenarios",
    "summarize",
    "main",
    "worker_main",
]

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PEERS = ("dbos", "huey", "dramatiq")  # huey and dramatiq: the `tasks` scenario only


# --- registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One number a scenario reports per repetition (the worker returns it under `key`)."""

    key: str
    label: str
    unit: str
    better: str = "higher"  # "higher" or "lower"
    peer_key: str | None = None  # the peer's metric this one is compared with (None: no peer number)
    chart: bool = False  # shown in latest.png
    # the N behind the figure: a key of the side's worker result (shown beside the figures; a ratio
    # is only drawn between sides whose N are equal)
    n_key: str | None = "n"
    peer_n_key: str | None = "n"
    no_peer: str = ""  # why there is no peer figure to compare with (shown in the peer's column)


@dataclass(frozen=True)
class Settings:
    quick: bool = False
    tiny: bool = False  # the smoke test's configuration: smallest sizes that still exercise everything
    profile: bool = False  # --profile: a scenario whose Python holds the GIL briefly may run longer


@dataclass
class Scenario:
    """A benchmark: `params(settings)` sizes it; `actorflow`/`peers` are "module:function" names that a
    worker process calls as fn(params, workdir) -> {metric key: number, ...} for one repetition."""

    name: str
    title: str
    metrics: list[Metric]
    params: Callable[[Settings], dict[str, Any]]
    actorflow: str
    peers: dict[str, str] = field(default_factory=dict)
    order: int = 100
    quick_repeat: int | None = None  # repetitions under --quick when --repeat is not given
    full_repeat: int | None = None  # repetitions in full mode when --repeat is not given (default 3)
    timeout: float = 900.0  # seconds per worker process
    notes: str = ""
    must_be_zero: tuple[str, ...] = ()  # actorflow metrics any repetition above zero of fails the run


_REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in _REGISTRY and _REGISTRY[scenario.name] is not scenario:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    _REGISTRY[scenario.name] = scenario
    return scenario


def scenarios() -> dict[str, Scenario]:
    """All registered scenarios in run order (importing benchmarks.scenarios registers them)."""
    from . import scenarios as _pkg

    _pkg.discover()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def _resolve(ref: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)  # type: ignore[no-any-return]


def peer_available(peer: str) -> bool:
    """The peer's packages are installed (`pip install 'actorflow[bench]'`); Dramatiq also needs a
    `redis-server` binary (Debian: apt-get install redis-server), which the benchmark starts itself."""
    import importlib.util

    needs = {"dbos": ("dbos",), "huey": ("huey",), "dramatiq": ("dramatiq", "redis")}.get(peer)
    if needs is None:
        return False
    try:
        if any(importlib.util.find_spec(mod) is None for mod in needs):
            return False
    except (ImportError, ValueError):
        return False
    return peer != "dramatiq" or shutil.which("redis-server") is not None


# --- statistics --------------------------------------------------------------------------------
def summarize(values: list[float]) -> dict[str, Any]:
    """Median with min-max over repetitions (None values, e.g. a metric one repetition lacked, dropped)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": _round(statistics.median(vals)),
        "min": _round(min(vals)),
        "max": _round(max(vals)),
        "runs": [_round(v) for v in vals],
    }


def ratio(af: float | None, peer: float | None) -> float | None:
    if af is None or peer is None or peer == 0:
        return None
    return _round(af / peer)


# --- worker processes ----------------------------------------------------------------------------
def _env_for_worker() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _py_spy() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def run_worker(
    scenario: Scenario, side: str, params: dict[str, Any], base: str, profile: str | None = None
) -> dict[str, Any]:
    """One repetition of one side in a fresh process; returns its metrics (or {"error": ...}).
    With `profile` (a path), the worker runs under `py-spy record --gil` writing raw stacks there."""
    workdir = tempfile.mkdtemp(prefix=f"{scenario.name}-{side}-", dir=base)
    out = os.path.join(workdir, "result.json")
    prefix: list[str] = []
    if profile:
        prefix = [_py_spy() or "py-spy", "record", "--gil", "--nonblocking", "--subprocesses", "-r", "1000", "-f", "raw", "-o", profile, "--"]
    cmd = prefix + [
        sys.executable,
        "-m",
        "benchmarks",
        "--worker",
        scenario.name,
        "--side",
        side,
        "--params",
        json.dumps(params),
        "--workdir",
        workdir,
        "--result-file",
        out,
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=scenario.timeout,
            env=_env_for_worker(),
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(workdir, ignore_errors=True)
        return {"error": f"worker timed out after {scenario.timeout}s"}
    try:
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or "").strip().splitlines()[-15:]
            return {"error": f"worker exited {proc.returncode}: " + " | ".join(tail)}
        with open(out) as f:
            res: dict[str, Any] = json.load(f)
        res.setdefault("_worker_s", round(time.perf_counter() - t0, 2))
        return res
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def worker_main(name: str, side: str, params: dict[str, Any], workdir: str, result_file: str) -> int:
    sc = scenarios()[name]
    ref = sc.actorflow if side == "actorflow" else sc.peers[side]
    res = _resolve(ref)(params, workdir)
    with open(result_file, "w") as f:
        json.dump(res, f)
    return 0


def profile_report(raw_path: str, top: int = 30) -> str:
    """Hot spots from py-spy raw stacks sampled with --gil (CPU actually executing Python): each
    function's cumulative and self share of the samples, and the share per thread role. Import,
    engine open/close and harness frames are left out of the denominator."""
    import collections
    import re

    roles_of = [
        ("StepPool._worker", "step pool threads"),
        ("ActorRuntime._run", "pump thread (actors: hosts, timers)"),
        ("GroupCommitter._run", "group-commit writer thread"),
        ("BaseEventLoop.run_forever", "caller (asyncio loop)"),
        ("worker_main", "caller thread"),
    ]
    cum: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    roles: collections.Counter[str] = collections.Counter()
    total = dropped = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n_s = line.rstrip().rpartition(" ")
            if not stack or not n_s.isdigit():
                continue
            n = int(n_s)
            if any(x in stack for x in ("_find_and_load", "Engine.open", "Engine.close", "Engine.__exit__")):
                dropped += n
                continue
            total += n
            names = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";") if not fr.startswith("process ")]
            names = names or ["(native code, no Python frame)"]
            role = next((label for key, label in roles_of if any(nm.startswith(key) for nm in names)), "other/native")
            roles[role] += n
            for nm in set(names):
                cum[nm] += n
            own[names[-1]] += n
    if not total:
        return "no samples\n"
    skip = ("Thread.", "<module>", "_run_code", "_run_module", "main (", "worker_main", "run (asyncio", "Runner.run",
            "BaseEventLoop.run_", "BaseEventLoop._run_once", "Handle._run", "actorflow (benchmarks")
    out = [f"{total} samples holding the GIL ({dropped} in import/open/close left out)", "", "thread roles:"]
    out += [f"  {100 * n / total:5.1f}%  {r}" for r, n in roles.most_common()]
    out += ["", "cumulative (function and its callees):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in [x for x in cum.most_common(top * 3) if x[0] and not x[0].startswith(skip)][:top]]
    out += ["", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top // 2)]
    return "\n".join(out) + "\n"


# --- running scenarios --------------------------------------------------------------------------
def run_scenario(sc: Scenario, settings: Settings, repeat: int, peers: list[str], base: str) -> dict[str, Any]:
    params = sc.params(settings)
    sides = ["actorflow"] + [p for p in peers if p in sc.peers]
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    errors: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    for rep in range(repeat):
        # interleaved, so drift over time hits both sides alike, and alternated, so neither always goes first
        for side in sides if rep % 2 == 0 else sides[::-1]:
            print(f"[bench] {sc.name} {side} {rep + 1}/{repeat} ...", file=sys.stderr, flush=True)
            res = run_worker(sc, side, params, base)
            if "error" in res:
                errors.setdefault(side, []).append(res["error"])
                print(f"[bench] {sc.name} {side}: {res['error']}", file=sys.stderr, flush=True)
                continue
            raw[side].append(res)
    line: dict[str, Any] = {"scenario": sc.name, "title": sc.title, "params": params, "repeat": repeat,
                            "quick": settings.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    af_metrics = {m.key: summarize([r.get(m.key) for r in raw["actorflow"]]) for m in sc.metrics}
    line["actorflow"] = af_metrics
    line["units"] = {m.key: m.unit for m in sc.metrics}
    line["better"] = {m.key: m.better for m in sc.metrics}
    extra = _extras(raw["actorflow"], {m.key for m in sc.metrics})
    if extra:
        line["actorflow_info"] = extra
    for key in sc.must_be_zero:
        above = [r.get(key) for r in raw["actorflow"] if r.get(key) != 0]
        if above:
            errors.setdefault("actorflow", []).append(f"{key} must be 0 in every repetition, got {above}")
    line["settings"] = {side: raw[side][0].get("settings", {}) for side in sides if raw[side]}
    line["n"] = {m.key: [_n(raw["actorflow"], m.n_key)] for m in sc.metrics}
    for peer in peers:
        if peer not in sc.peers:
            continue
        peer_keys = {m.peer_key for m in sc.metrics if m.peer_key}
        pm = {k: summarize([r.get(k) for r in raw[peer]]) for k in sorted(peer_keys)}
        line[peer] = pm
        pextra = _extras(raw[peer], peer_keys)
        if pextra:
            line[f"{peer}_info"] = pextra
        for m in sc.metrics:
            if m.peer_key:
                line["n"][m.key].append(_n(raw[peer], m.peer_n_key))
        unequal = {k: v for k, v in line["n"].items() if len(v) > 1 and v[0] != v[1]}
        if unequal:  # a ratio between different N would compare different things
            errors.setdefault(peer, []).append(f"N differs between the sides: {unequal}")
        line[f"ratio_actorflow_over_{peer}"] = {
            m.key: ratio(af_metrics[m.key]["median"], pm[m.peer_key]["median"]) for m in sc.metrics
            if m.peer_key and m.key not in unequal
        }
    if errors:
        line["errors"] = errors
    line["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return line


def _n(results: list[dict[str, Any]], key: str | None) -> Any:
    """The N a side's figure is over (its first repetition's; every repetition runs the same params)."""
    return results[0].get(key) if results and key else None


def _extras(results: list[dict[str, Any]], known: set[str]) -> dict[str, Any]:
    """Non-metric facts a worker reported (sizes it actually reached, lateness samples...): first run's."""
    if not results:
        return {}
    return {k: v for k, v in results[0].items() if k not in known and k != "settings" and not k.startswith("_")}


def _environment(base: str, settings: Settings, peers: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "base": base,
        "fs": fs_type(base),
        "quick": settings.quick,
        "tiny": settings.tiny,
        "peers": peers,
    }
    try:
        import lmdb

        env["lmdb"] = ".".join(map(str, lmdb.version()))
    except ImportError:
        pass
    for pkg in ("thespian", "dbos", "sqlalchemy", "huey", "dramatiq", "redis"):
        try:
            from importlib.metadata import version

            env[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            pass
    try:
        import sqlite3

        env["sqlite"] = sqlite3.sqlite_version
    except ImportError:
        pass
    return env


def render(paths: list[str], out_dir: str, regs: dict[str, Scenario], peers: list[str]) -> int:
    runs_dir = os.path.realpath(os.path.join(out_dir, "runs"))
    outside = [p for p in paths if not os.path.realpath(p).startswith(runs_dir + os.sep)]
    if outside:  # results must be rebuildable from what is committed beside them
        print(f"[bench] --render reads only run logs in {runs_dir} (every run writes one there; commit it): "
              f"{outside}", file=sys.stderr)
        return 2
    by: dict[str, dict[str, Any]] = {}
    for path in paths:
        with open(path) as f:
            for raw in f:
                if raw.strip():
                    line = json.loads(raw)
                    by[line["scenario"]] = line
    lines = [by[name] for name in regs if name in by]
    found = sorted({k for line in lines for k in line if k in PEERS})
    quick = all(line.get("quick", line["repeat"] < 3) for line in lines)  # old lines: guess from repeat
    env = _environment(tempfile.gettempdir(), Settings(quick=quick), peers or found)
    env["rendered_from"] = [os.path.relpath(os.path.realpath(p), os.path.realpath(out_dir)) for p in paths]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump({"environment": env, "scenarios": lines}, f, indent=1)
    write_markdown(os.path.join(out_dir, "latest.md"), lines, env, regs)
    write_chart(os.path.join(out_dir, "latest.png"), lines, env, regs)
    print(f"[bench] rendered {len(lines)} scenario(s) into {out_dir}", file=sys.stderr)
    return 0


# --- CLI -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    regs_all = scenarios()
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="actorflow benchmarks, side by side with peers (DBOS Transact on SQLite; for the tasks "
                    "scenario also huey and Dramatiq on Redis).",
    )
    ap.add_argument("scenario", nargs="*", help=f"scenarios to run (default all): {', '.join(regs_all)}")
    ap.add_argument("--peer", action="append", choices=PEERS, default=[], help="also measure this peer")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1-2 repetitions (< 2 min)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke-test sizes
    ap.add_argument("--repeat", type=int, default=None, help="repetitions per scenario (default 3, quick 1-2)")
    ap.add_argument("--out", default=RESULTS_DIR, help="where latest.{json,md,png} go (default benchmarks/results)")
    ap.add_argument("--dir", default=None, help="parent directory for the data dirs (default: system temp dir)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--render", nargs="+", metavar="JSONL", default=None,
                    help="measure nothing: rebuild latest.{json,md,png} from run logs in <out>/runs/ "
                         "(later files win per scenario), e.g. to merge a re-run scenario into a full run")
    ap.add_argument("--profile", action="store_true",
                    help="profile the actorflow side once per scenario with py-spy (--gil); writes profile-<scenario>.txt")
    # internal: one repetition of one side, in this process
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--side", default="actorflow", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return worker_main(args.worker, args.side, json.loads(args.params), args.workdir, args.result_file)
    if args.render:
        return render(args.render, args.out, regs_all, args.peer)
    if args.list:
        for name, sc in regs_all.items():
            print(f"{name:10s} {sc.title}" + (f"  [peer: {', '.join(sc.peers)}]" if sc.peers else ""))
        return 0
    unknown = [s for s in args.scenario if s not in regs_all]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {list(regs_all)}")
    selected = [regs_all[s] for s in (args.scenario or regs_all)]
    settings = Settings(quick=args.quick or args.tiny, tiny=args.tiny, profile=args.profile)
    peers = []
    for p in dict.fromkeys(args.peer):
        if peer_available(p):
            peers.append(p)
        else:
            print(f"[bench] peer {p!r} is not installed (pip install 'actorflow[bench]'): running without it", file=sys.stderr)

    base = tempfile.mkdtemp(prefix="actorflow-bench-", dir=args.dir)
    env = _environment(base, settings, peers)
    if env["fs"] in ("tmpfs", "ramfs"):
        print(f"[bench] warning: {base} is on {env['fs']}: fsync is not real there; pass --dir on a disk", file=sys.stderr)
    lines: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    names = [sc.name for sc in selected]
    run_log = os.path.join(args.out, "runs", time.strftime("%Y%m%d-%H%M%S") + "-" + "-".join(names) + ".jsonl")
    if args.profile:
        if not _py_spy():
            ap.error("--profile needs py-spy (pip install py-spy)")
        os.makedirs(args.out, exist_ok=True)
        try:
            for sc in selected:
                raw = os.path.join(base, f"{sc.name}.raw")
                print(f"[bench] profiling {sc.name} ...", file=sys.stderr, flush=True)
                res = run_worker(sc, "actorflow", sc.params(settings), base, profile=raw)
                report = f"# py-spy --gil profile of `{sc.name}` (actorflow side), {env['when']}\n"
                report += f"# result: {json.dumps({k: _round(v) if isinstance(v, float) else v for k, v in res.items()})}\n\n"
                report += profile_report(raw) if os.path.exists(raw) else "py-spy wrote nothing\n"
                path = os.path.join(args.out, f"profile-{sc.name}.txt")
                with open(path, "w") as f:
                    f.write(report)
                print(report, file=sys.stderr)
                print(json.dumps({"scenario": sc.name, "profile": path, "result": res}), flush=True)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return 0
    try:
        for sc in selected:
            repeat = args.repeat or ((sc.quick_repeat or 2) if settings.quick else (sc.full_repeat or 3))
            if settings.tiny and not args.repeat:
                repeat = 1
            line = run_scenario(sc, settings, repeat, peers, base)
            print(json.dumps(line), flush=True)
            os.makedirs(os.path.dirname(run_log), exist_ok=True)
            with open(run_log, "a") as f:  # what --render rebuilds latest.* from
                f.write(json.dumps(line) + "\n")
            lines.append(line)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    env["total_s"] = round(time.perf_counter() - t0, 1)
    env["run_log"] = os.path.relpath(run_log, args.out)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"environment": env, "scenarios": lines}, f, indent=1)
    write_markdown(os.path.join(args.out, "latest.md"), lines, env, regs_all)
    write_chart(os.path.join(args.out, "latest.png"), lines, env, regs_all)
    print(f"[bench] {len(lines)} scenario(s) in {env['total_s']} s; results in {args.out}/latest.{{json,md,png}}", file=sys.stderr)
    return 1 if any(line.get("errors") for line in lines) else 0

