"""Golden journals: journals recorded by an earlier actorflow must replay with today's code.

`golden/*.json` hold the encoded journal records (base64, exactly as the codec wrote them) of runs
stopped while waiting on their last signal, written by `make_golden.py` with the workflow code below.
The test loads each into a fresh journal (memory and LMDB), opens an engine with this code, sends the
recorded final signals and checks: the recorded result, no completed step runs again, no
NondeterminismError, and the rest of the history as recorded.

Do not change the workflows below: they are the code those journals were written by. To add a
scenario, add a workflow, then run `python tests/engine/make_golden.py` (it only writes missing files
unless given --force).
"""

from __future__ import annotations

import base64
import collections
import json
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


def golden_files() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.json"))


def test_golden_files_exist() -> None:
    assert {p.stem for p in golden_files()} == set(SCENARIOS)


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.stem)
def test_golden_journal_replays(path: Path, backend: str, tmp_path: Path) -> None:
    from storage import LmdbJournal, MemoryJournal

    data = json.loads(path.read_text())
    assert data["format"] == 1
    journal: Journal = MemoryJournal() if backend == "memory" else LmdbJournal(tmp_path / "j")
    restore(journal, data)
    CALLS.clear()
    # no autojump: the parent's wait has a timeout that must not elapse before the signal arrives
    engine = Engine(None, journal=journal, clock=MockClock(data["clock"]))
    register(engine)
    try:
        with engine:
            # what was recorded decodes to the recorded history
            for run_id, run in data["runs"].items():
                got = [ev.to_dict() for ev in engine.history(run_id)]
                assert as_json(got) == run["history"], run_id
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
    finally:
        journal.close()
