"""Record the golden journals of tests/engine/test_golden.py with today's code.

    python tests/engine/make_golden.py [--force]

For each scenario in test_golden.SCENARIOS: run the workflow on an in-memory journal with a mock
clock until it waits on its last signal, snapshot every journal record (base64 of the encoded bytes,
LMDB-independent), then finish it to record the expected outcome, the step calls made after the
snapshot and the final histories. Existing files are kept unless --force is given: a golden journal
is only useful if it stays what an older actorflow wrote.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import actorflow  # noqa: E402
from actorflow import Engine, MockClock  # noqa: E402
from storage import MemoryJournal  # noqa: E402


def load_code() -> Any:
    spec = importlib.util.spec_from_file_location("golden_code", HERE / "test_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["golden_code"] = mod
    spec.loader.exec_module(mod)
    return mod


def snapshot(journal: MemoryJournal, code: Any) -> dict[str, Any]:
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


def record(code: Any, name: str) -> dict[str, Any]:
    run_id, wf_name, args, finish = code.SCENARIOS[name]
    journal = MemoryJournal()
    clock = MockClock(code.T0)  # moved by hand below: a wait's timeout must not elapse at the snapshot
    engine = Engine(None, journal=journal, clock=clock)
    code.register(engine)
    code.CALLS.clear()
    with engine:
        engine.start(wf_name, *args, run_id=run_id)

        def at_last_wait() -> bool:
            st = engine.status(run_id)
            return st.state == actorflow.RunState.WAITING and st.progress == 0.9

        deadline = time.monotonic() + 30
        while not at_last_wait():  # let sleeps and retry delays elapse, 30 virtual seconds at a time
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {run_id} to wait on its last signal")
            time.sleep(0.01)
            if not at_last_wait():
                clock.advance(30)
        data: dict[str, Any] = {
            "format": 1,
            "scenario": name,
            "written_by": f"actorflow {actorflow.__version__}",
            "written_at": time.strftime("%Y-%m-%d"),
            "run_id": run_id,
            "workflow": wf_name,
            "clock": clock.now(),
        }
        data.update(snapshot(journal, code))
        data["calls_before_snapshot"] = dict(code.CALLS)
        code.CALLS.clear()
        data["finish_signals"] = [list(s) for s in finish]
        for rid, sig, payload in finish:
            engine.signal(rid, sig, payload)
        data["expected"] = json.loads(json.dumps(code.outcome(engine, run_id)))
        data["calls_after_snapshot"] = dict(code.CALLS)
        data["final_histories"] = {rid: [ev.to_dict() for ev in engine.history(rid)] for rid in data["runs"]}
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="overwrite existing golden files")
    ap.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    opts = ap.parse_args()
    code = load_code()
    out_dir = HERE / "golden"
    out_dir.mkdir(exist_ok=True)
    for name in opts.scenarios or sorted(code.SCENARIOS):
        path = out_dir / f"{name}.json"
        if path.exists() and not opts.force:
            print(f"keep    {path.relative_to(ROOT)}")
            continue
        data = record(code, name)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"written {path.relative_to(ROOT)}: {sum(len(r['events']) for r in data['runs'].values())} events")


if __name__ == "__main__":
    main()
