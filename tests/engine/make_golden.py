"""Record the golden journals of tests/engine/test_golden.py with today's code (or a release's).

    python tests/engine/make_golden.py [--lmdb] [--code TREE] [--out DIR] [scenario ...]

For each scenario in test_golden.SCENARIOS: run the workflow with a mock clock until it waits on its
last signal, snapshot the journal, then finish it to record the expected outcome, the step calls
made after the snapshot and the final histories.

- default: on an in-memory journal; the snapshot is every record, base64 of the encoded bytes
  (LMDB-independent), in DIR/<scenario>.json.
- --lmdb: on an LMDB journal in DIR/<scenario>/ (data.mdb only: the lock file is not kept); the
  snapshot is the environment itself, the rest goes in DIR/<scenario>.json. The outcome is recorded
  by finishing a copy.

DIR defaults to golden/v<FORMAT_VERSION> (golden/lmdb/v<N> with --lmdb). `--code TREE` records with
the actorflow in TREE (e.g. a release unpacked with `git archive`), so a journal can be written by
the code that wrote such journals in the field. Existing files are never overwritten: a golden
journal is only useful if it stays what an older actorflow wrote. A format change gets a new
FORMAT_VERSION, hence a new directory beside the old ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def load_code() -> Any:
    spec = importlib.util.spec_from_file_location("golden_code", HERE / "test_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["golden_code"] = mod
    spec.loader.exec_module(mod)
    return mod


def snapshot(journal: Any, code: Any) -> dict[str, Any]:
    """Every record of the journal, as the codec encoded it (MemoryJournal keeps the raw bytes)."""
    with journal._lock:  # noqa: SLF001 - the generator reads the raw records on purpose
        runs = {
            run_id: {
                "record": code.b64(journal._runs[run_id]),
                "events": [code.b64(r) for r in journal._events.get(run_id, [])],
            }
            for run_id in sorted(journal._runs)
        }
        timers = [[due, rid, pos, code.b64(journal._timer_data[(due, rid, pos)])] for due, rid, pos in journal._timers]
        signals = [
            [rid, name, code.b64(raw)]
            for rid, by_name in sorted(journal._signals.items())
            for name, by_seq in sorted(by_name.items())
            for _seq, raw in sorted(by_seq.items())
        ]
    for run_id, run in runs.items():
        run["history"] = [ev.to_dict() for ev in journal.events(run_id)]
    return {"runs": runs, "timers": timers, "signals": signals}


def run_to_last_wait(engine: Any, clock: Any, run_id: str) -> None:
    import actorflow

    def at_last_wait() -> bool:
        st = engine.status(run_id)
        return bool(st.state == actorflow.RunState.WAITING and st.progress == 0.9)

    deadline = time.monotonic() + 30
    while not at_last_wait():  # let sleeps and retry delays elapse, 30 virtual seconds at a time
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {run_id} to wait on its last signal")
        time.sleep(0.01)
        if not at_last_wait():
            clock.advance(30)


def finish(code: Any, engine: Any, data: dict[str, Any], finish_signals: list[Any]) -> None:
    """Send the final signals, then record the outcome, the calls they made and the final histories."""
    code.CALLS.clear()
    data["finish_signals"] = [list(s) for s in finish_signals]
    for rid, sig, payload in finish_signals:
        engine.signal(rid, sig, payload)
    data["expected"] = json.loads(json.dumps(code.outcome(engine, data["run_id"])))
    data["calls_after_snapshot"] = dict(code.CALLS)
    data["final_histories"] = {rid: [ev.to_dict() for ev in engine.history(rid)] for rid in data["run_ids"]}


def header(code: Any, name: str, code_root: Path) -> dict[str, Any]:
    import actorflow
    import storage

    run_id, wf_name, _args, _finish = code.SCENARIOS[name]
    try:
        rev = subprocess.run(
            ["git", "-C", str(code_root), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return {
        "format": 1,
        "journal_format": storage.FORMAT_VERSION,
        "scenario": name,
        "written_by": f"actorflow {actorflow.__version__} ({rev})",
        "written_at": time.strftime("%Y-%m-%d"),
        "run_id": run_id,
        "workflow": wf_name,
    }


def record(code: Any, name: str, code_root: Path) -> dict[str, Any]:
    from actorflow import Engine, MockClock
    from storage import MemoryJournal

    run_id, wf_name, args, finish_signals = code.SCENARIOS[name]
    journal = MemoryJournal()
    clock = MockClock(code.T0)  # moved by hand: a wait's timeout must not elapse at the snapshot
    engine = Engine(None, journal=journal, clock=clock)
    code.register(engine)
    code.CALLS.clear()
    data = header(code, name, code_root)
    with engine:
        engine.start(wf_name, *args, run_id=run_id)
        run_to_last_wait(engine, clock, run_id)
        data["clock"] = clock.now()
        data.update(snapshot(journal, code))
        data["calls_before_snapshot"] = dict(code.CALLS)
        data["run_ids"] = sorted(data["runs"])
        finish(code, engine, data, finish_signals)
    del data["run_ids"]
    return data


def record_lmdb(code: Any, name: str, env_dir: Path, code_root: Path) -> dict[str, Any]:
    from actorflow import Engine, MockClock
    from storage import LmdbJournal

    run_id, wf_name, args, finish_signals = code.SCENARIOS[name]
    data = header(code, name, code_root)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "journal"
        clock = MockClock(code.T0)
        journal = LmdbJournal(work)
        engine = Engine(None, journal=journal, clock=clock)
        code.register(engine)
        code.CALLS.clear()
        with journal, engine:
            engine.start(wf_name, *args, run_id=run_id)
            run_to_last_wait(engine, clock, run_id)
            data["clock"] = clock.now()
            data["calls_before_snapshot"] = dict(code.CALLS)
            data["run_ids"] = sorted(st.run_id for st in engine.runs())
            data["histories"] = {rid: [ev.to_dict() for ev in engine.history(rid)] for rid in data["run_ids"]}
        env_dir.mkdir(parents=True)
        shutil.copy(work / "data.mdb", env_dir / "data.mdb")  # the engine is closed: the file is at rest
        # the expected outcome: finish a copy with the same code
        journal = LmdbJournal(work)
        engine = Engine(None, journal=journal, clock=MockClock(data["clock"]))
        code.register(engine)
        with journal, engine:
            finish(code, engine, data, finish_signals)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmdb", action="store_true", help="record LMDB environments instead of memory records")
    ap.add_argument("--code", type=Path, default=ROOT, help="the actorflow tree to record with (default: this one)")
    ap.add_argument("--out", type=Path, help="directory to write (default: golden/[lmdb/]v<FORMAT_VERSION>)")
    ap.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    opts = ap.parse_args()
    code_root = opts.code.resolve()
    sys.path.insert(0, str(code_root))
    import storage

    if not Path(storage.__file__).resolve().is_relative_to(code_root):
        raise SystemExit(f"storage imported from {storage.__file__}, not from {code_root}")
    code = load_code()
    out_dir = opts.out or HERE / "golden" / ("lmdb" if opts.lmdb else "") / f"v{storage.FORMAT_VERSION}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in opts.scenarios or sorted(code.SCENARIOS):
        path = out_dir / f"{name}.json"
        if path.exists() or (opts.lmdb and (out_dir / name).exists()):
            print(f"keep    {path}")
            continue
        if opts.lmdb:
            data = record_lmdb(code, name, out_dir / name, code_root)
        else:
            data = record(code, name, code_root)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"written {path}")


if __name__ == "__main__":
    main()
