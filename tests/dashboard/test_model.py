"""The list's paged, budgeted reads and the timeline builder, on both journal backends."""

from __future__ import annotations

from typing import Any

from actorflow.dashboard import RunFilter, build_timeline, list_runs
from actorflow.dashboard._model import Census
from actorflow.testing import memory_engine
from storage import Event, Journal, RunRecord


def fill(j: Journal, n: int) -> None:
    b = j.batch()
    for i in range(n):
        rid = f"run-{i:05d}"
        b.create_run(RunRecord(rid, "even" if i % 2 == 0 else "odd", created_at=float(i)), Event(0, "run_started", "x", None, float(i)))
    j.commit(b)
    b = j.batch()
    for i in range(n):
        if i % 10 == 0:
            b.put_run(RunRecord(f"run-{i:05d}", "even", state="failed", created_at=float(i)))
        elif i % 3:
            b.put_run(RunRecord(f"run-{i:05d}", "even" if i % 2 == 0 else "odd", state="completed", created_at=float(i)))
    j.commit(b)


def every_page(j: Journal, f: RunFilter, limit: int, budget: int) -> tuple[list[str], int]:
    out: list[str] = []
    after, pages = None, 0
    while True:
        page = list_runs(j, f, after=after, limit=limit, budget=budget)
        pages += 1
        assert page.scanned <= budget and len(page.rows) <= limit
        out += [r.run_id for r in page.rows]
        if page.older is None:
            return out, pages
        after = page.older


def test_pages_walk_every_match_once_whatever_the_budget(journal: Journal) -> None:
    fill(journal, 300)
    for f in (RunFilter(), RunFilter(state="failed"), RunFilter(workflow="odd"), RunFilter(state="pending"), RunFilter(since=100, until=150)):
        want = sorted((r.run_id for r in journal.iter_runs() if f.match(r)), reverse=True)
        for limit, budget in ((7, 10_000), (50, 40), (3, 5)):
            got, _ = every_page(journal, f, limit, budget)
            assert got == want, (f, limit, budget)


def test_a_rare_match_stops_at_the_budget_and_says_so(journal: Journal) -> None:
    fill(journal, 300)
    page = list_runs(journal, RunFilter(state="failed"), limit=50, budget=25)
    assert page.partial and page.scanned == 25 and page.older == "run-00275"
    assert [r.run_id for r in page.rows] == ["run-00290", "run-00280"]
    assert list_runs(journal, RunFilter(prefix="run-001"), limit=500).rows[0].run_id == "run-00199"


def test_newer_pages_come_back_in_order(journal: Journal) -> None:
    fill(journal, 30)
    first = list_runs(journal, RunFilter(), limit=10)
    second = list_runs(journal, RunFilter(), after=first.older, limit=10)
    back = list_runs(journal, RunFilter(), before=second.newer, limit=10)
    assert [r.run_id for r in back.rows] == [r.run_id for r in first.rows] and back.newer is None


def test_census_counts_states_and_notices_changes(journal: Journal) -> None:
    fill(journal, 30)
    census = Census(journal)
    counts, workflows, at = census.get()
    assert at is not None and workflows == ["even", "odd"]
    assert counts == {"failed": 3, "completed": 18, "pending": 9}
    b = journal.batch()
    b.put_run(RunRecord("run-00001", "odd", state="cancelled"))
    journal.commit(b)
    census._counts.taken_at -= 1  # type: ignore[union-attr]  # as if a second had passed
    assert census.get()[0]["cancelled"] == 1


def test_timeline_of_concurrent_commands_starts_each_at_the_gather() -> None:
    engine = memory_engine()

    @engine.workflow(name="fan")
    async def fan(ctx: Any) -> Any:
        await ctx.step("first", lambda: 1)
        return await ctx.gather(ctx.step("a", lambda: "a"), ctx.sleep("nap", 5), ctx.step("b", lambda: "b"))

    with engine:
        assert engine.run(fan, run_id="f", timeout=10) == ["a", None, "b"]
        rec = engine.journal.get_run("f")  # type: ignore[union-attr]
        events = engine.history("f")
    assert rec is not None
    tl = build_timeline(rec, events, now=0.0)
    first_done = next(e.at for e in events if e.name == "first")
    rows = {r.name: r for r in tl.rows}
    assert [r.name for r in tl.rows] == ["first", "a", "nap", "b"]
    for name in ("a", "b"):
        assert rows[name].segments[0].start == first_done
    assert rows["nap"].segments[0].kind == "sleep" and rows["nap"].segments[0].status == "ok"
    assert tl.waiting == [] and tl.finished and tl.result == ["a", None, "b"] and tl.input == ()
