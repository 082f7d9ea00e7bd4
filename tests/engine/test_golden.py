"""Golden journals: journals recorded by an earlier actorflow must replay with today's code.

Runs stopped while waiting on their last signal, written by `make_golden.py` with the workflow code
below, one directory per journal format (never regenerated: a new format gets a new directory):

- golden/v1/*.json: records of format 1 as first written (CRC of the body alone), bd9673d;
- golden/v1-seeded/*.json: records still marked format 1 but with the seeded CRC, 3b4b081..439e6c9;
- golden/v2/*.json: format 2 (e53b1e6..a7d35c6);
- golden/v3/*.json: format 3 (this code's: format 2's records, environments that may hold a shard map);
- golden/lmdb/<format>/<scenario>/data.mdb: whole LMDB environments, as the engine left them, written
  by 439e6c9 (v1-seeded, the last release before format 2), by format 2's first commit (v2) and by
  format 3's first commit (v3).

The JSON files hold the encoded records (base64, exactly as the codec wrote them): the test loads each
into a fresh journal (memory and LMDB). The LMDB environments are copied and opened as a data_dir.
Then an engine with this code gets the recorded final signals, and the test checks: the recorded
result, no completed step runs again, no NondeterminismError, and the rest of the history as recorded.

Do not change the workflows below: they are the code those journals were written by. To add a
scenario, add a workflow, then run `python tests/engine/make_golden.py [--lmdb]` (it only writes
missing files).
"""

from __future__ import annotations

import base64
import collections
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow
from actorflow import Engine, MockClock, RetryPolicy
from storage import Journal, RunRecord

GOLDEN_DIR = Path(__file__).with_name("golden")
TIMEOUT = 20.0

CALLS: collections.Counter[str] = collections.Counter()


def counted(name: str, value: Any, fail_first: int = 0) -> Callable[[], Any]:
    def fn() -> Any:
        CALLS[name] += 1
        if CALLS[name] <= fail_first:
            raise RuntimeError(f"{name}: transient failure {CALLS[name]}")
        return value

    return fn


# --- the recorded workflow code (keep it unchanged) ----------------------------------------------


async def golden_checkout(ctx: Any, order: dict[str, Any]) -> dict[str, Any]:
    validated = await ctx.step("validate", counted("validate", {"id": order["id"], "ok": True}))
    payment = await ctx.step(
        "charge",
        counted("charge", {"amount": order["amount"], "tx": "tx-1"}, fail_first=1),
        retry=RetryPolicy.exponential(max_attempts=3, initial_delay=2.0, jitter=False),
        compensate=counted("refund", None),
    )
    started = ctx.now()
    token = ctx.uuid4()
    lucky = ctx.random()
    discount = 0
    if ctx.patched("discount-v2"):
        discount = await ctx.step("discount", counted("discount", 5))
    pair = await ctx.gather(ctx.step("email", counted("email", "sent")), ctx.step("sms", counted("sms", "queued")))
    await ctx.sleep("cooling_off", 3600)
    ctx.report_progress(0.9)
    confirmed = await ctx.wait_signal("confirm")
    shipped = await ctx.step("ship", counted("ship", "shipped"))
    return {
        "validated": validated,
        "payment": payment,
        "started": started.isoformat(),
        "token": str(token),
        "lucky": lucky,
        "discount": discount,
        "pair": pair,
        "confirmed": confirmed,
        "shipped": shipped,
    }


async def golden_child(ctx: Any, n: int) -> list[int]:
    values = await ctx.step("compute", counted("compute", [n, n * n]))
    await ctx.sleep("settle", 60)
    return values


async def golden_parent(ctx: Any) -> dict[str, Any]:
    first = await ctx.step("prepare", counted("prepare", "prepared"))
    kids = await ctx.gather(ctx.child("golden_child", 2), ctx.child("golden_child", 3))
    when = ctx.time()
    ctx.report_progress(0.9)
    extra = await ctx.wait_signal("done", timeout=86400)
    last = await ctx.step("finish", counted("finish", "finished"))
    return {"first": first, "kids": kids, "when": when, "extra": extra, "last": last}


async def golden_saga(ctx: Any) -> None:
    await ctx.step("book_flight", counted("book_flight", "F1"), compensate=counted("cancel_flight", None))
    await ctx.step("book_hotel", counted("book_hotel", "H1"), compensate=counted("cancel_hotel", None))
    ctx.report_progress(0.9)
    go = await ctx.wait_signal("go")
    await ctx.step("book_car", counted("book_car_fails", None, fail_first=99))
    raise AssertionError(f"unreachable {go}")


WORKFLOWS = {
    "golden_checkout": golden_checkout,
    "golden_child": golden_child,
    "golden_parent": golden_parent,
    "golden_saga": golden_saga,
}

# scenario name -> (run id, workflow name, args, final signals)
SCENARIOS: dict[str, tuple[str, str, tuple[Any, ...], list[tuple[str, str, Any]]]] = {
    "checkout": ("order-1", "golden_checkout", ({"id": "o-1", "amount": 42},), [("order-1", "confirm", {"by": "courier"})]),
    "parent_child": ("parent-1", "golden_parent", (), [("parent-1", "done", "extra!")]),
    "saga": ("trip-1", "golden_saga", (), [("trip-1", "go", True)]),
}

T0 = 1_700_000_000.0


def register(engine: Engine) -> None:
    for name, fn in WORKFLOWS.items():
        engine.workflow(name=name)(fn)


def b64(raw: bytes) -> str:
    return base64.b64encode(bytes(raw)).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def comparable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History as JSON without wall-clock times (the rest must match exactly)."""
    return [{k: v for k, v in ev.items() if k != "at"} for ev in as_json(history)]


def outcome(engine: Engine, run_id: str) -> dict[str, Any]:
    try:
        return {"result": engine.result(run_id, TIMEOUT)}
    except actorflow.WorkflowFailed as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def restore(journal: Journal, data: dict[str, Any]) -> None:
    """Write a golden snapshot into an empty journal through the public batch API."""
    codec = journal.codec
    batch = journal.batch()
    for run_id, run in sorted(data["runs"].items()):
        for seq, raw in enumerate(run["events"]):
            batch.append_encoded(run_id, seq, unb64(raw))
        batch.put_run(RunRecord.from_tuple(tuple(codec.decode(unb64(run["record"]), "golden run record"))))
    for due, run_id, pos, raw in data["timers"]:
        batch.put_timer(due, run_id, pos, codec.decode(unb64(raw), "golden timer"))
    for run_id, name, raw in data["signals"]:
        batch.put_signal(run_id, name, codec.decode(unb64(raw), "golden signal"))
    journal.commit(batch)


# --- the test ------------------------------------------------------------------------------------

import pytest  # noqa: E402  (below: make_golden.py imports this module without pytest fixtures)

RECORD_DIRS = ["v1", "v1-seeded", "v2", "v3"]  # golden/<dir>/*.json
LMDB_DIRS = ["v1-seeded", "v2", "v3"]  # golden/lmdb/<dir>/<scenario>/data.mdb + <scenario>.json


def golden_files() -> list[Path]:
    return [p for d in RECORD_DIRS for p in sorted((GOLDEN_DIR / d).glob("*.json"))]


def golden_envs() -> list[Path]:
    return [p for d in LMDB_DIRS for p in sorted((GOLDEN_DIR / "lmdb" / d).glob("*.json"))]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_golden_files_exist() -> None:
    from storage import FORMAT_VERSION

    for d in RECORD_DIRS:
        assert {p.stem for p in (GOLDEN_DIR / d).glob("*.json")} == set(SCENARIOS), d
    for d in LMDB_DIRS:
        assert {p.stem for p in (GOLDEN_DIR / "lmdb" / d).glob("*.json")} == set(SCENARIOS), d
        assert all((GOLDEN_DIR / "lmdb" / d / name / "data.mdb").is_file() for name in SCENARIOS), d
    # this code's format has its golden journals: a format bump records new ones beside the old
    assert f"v{FORMAT_VERSION}" in RECORD_DIRS and f"v{FORMAT_VERSION}" in LMDB_DIRS


def finish_and_check(engine: Engine, data: dict[str, Any], histories: dict[str, Any]) -> None:
    """Histories decode as recorded; the final signals finish the runs as they did when recorded."""
    for run_id, recorded in histories.items():
        got = [ev.to_dict() for ev in engine.history(run_id)]
        assert as_json(got) == recorded, run_id
    CALLS.clear()
    for run_id, name, payload in data["finish_signals"]:
        engine.signal(run_id, name, payload)
    got_outcome = outcome(engine, data["run_id"])
    assert as_json(got_outcome) == data["expected"]
    assert dict(CALLS) == data["calls_after_snapshot"]  # completed steps never ran again
    for run_id, final in data["final_histories"].items():
        hist = [ev.to_dict() for ev in engine.history(run_id)]
        assert comparable(hist) == comparable(final), run_id
        assert all(ev["kind"] != "run_blocked" for ev in hist)
    for st in engine.runs():
        assert st.state != actorflow.RunState.BLOCKED, st


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
@pytest.mark.parametrize("path", golden_files(), ids=_id)
def test_golden_journal_replays(path: Path, backend: str, tmp_path: Path) -> None:
    from storage import LmdbJournal, MemoryJournal

    data = json.loads(path.read_text())
    assert data["format"] == 1
    journal: Journal = MemoryJournal() if backend == "memory" else LmdbJournal(tmp_path / "j")
    restore(journal, data)
    # no autojump: the parent's wait has a timeout that must not elapse before the signal arrives
    engine = Engine(None, journal=journal, clock=MockClock(data["clock"]))
    register(engine)
    try:
        with engine:
            finish_and_check(engine, data, {run_id: run["history"] for run_id, run in data["runs"].items()})
    finally:
        journal.close()


@pytest.mark.parametrize("path", golden_envs(), ids=_id)
def test_golden_lmdb_environment_opens_and_finishes(path: Path, tmp_path: Path) -> None:
    """An LMDB data directory left by an earlier actorflow, opened as this engine's data_dir."""
    import lmdb

    from storage import FORMAT_VERSION

    data = json.loads(path.read_text())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(path.with_suffix("") / "data.mdb", data_dir / "data.mdb")  # opening writes: a copy
    engine = Engine(data_dir, clock=MockClock(data["clock"]))
    register(engine)
    with engine:
        assert {st.run_id for st in engine.runs()} == set(data["histories"])
        finish_and_check(engine, data, data["histories"])
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=16)
    try:
        with env.begin() as txn:  # it now holds records of this format too, and says so
            assert txn.get(b"format_version", db=env.open_db(b"meta", txn=txn, create=False)) == str(
                FORMAT_VERSION
            ).encode()
    finally:
        env.close()


def test_this_format_writes_what_its_golden_journals_hold() -> None:
    """Re-encoding the records of golden/v<FORMAT_VERSION> gives the same bytes: a change to what is
    written fails here until FORMAT_VERSION is bumped (and golden journals of the new format are
    recorded beside these)."""
    from storage import FORMAT_VERSION, Codec

    codec = Codec()
    checked = 0
    for path in sorted((GOLDEN_DIR / f"v{FORMAT_VERSION}").glob("*.json")):
        data = json.loads(path.read_text())
        raws = [run["record"] for run in data["runs"].values()]
        raws += [ev for run in data["runs"].values() for ev in run["events"]]
        raws += [t[3] for t in data["timers"]] + [s[2] for s in data["signals"]]
        for text in raws:
            raw = unb64(text)
            assert codec.encode(codec.decode(raw, path.name)) == raw, (path.name, raw[:16])
            checked += 1
    assert checked > 30
