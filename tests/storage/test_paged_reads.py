"""Paged run reads, index counts and the change marker, on every backend; a map grown by another process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from storage import Event, Journal, LmdbJournal, RunRecord

IDS = ["a", "a/1", "a/2", "ab", "b", "b/1", "c", "ca", "d\u00e9", "z\xff"]


def fill(j: Journal, finished: set[str]) -> None:
    b = j.batch()
    for i, rid in enumerate(IDS):
        b.create_run(RunRecord(rid, "wf", created_at=float(i)), Event(0, "run_started", "wf", None, float(i)))
    j.commit(b)
    b = j.batch()
    for rid in finished:
        b.put_run(RunRecord(rid, "wf", state="completed"))
    j.commit(b)


def ids(recs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in recs]


def walk(j: Journal, limit: int, **kw: object) -> list[str]:
    """Every id, page by page, passing each page's last id on as `after`."""
    out: list[str] = []
    after = None
    while True:
        page = j.runs_page(after, limit, **kw)  # type: ignore[arg-type]
        assert len(page) <= limit
        out += ids(page)
        if len(page) < limit:
            return out
        after = page[-1].run_id


def test_pages_in_both_directions_cover_every_run_once(journal: Journal) -> None:
    fill(journal, set())
    for limit in (1, 3, 100):
        assert walk(journal, limit) == sorted(IDS)
        assert walk(journal, limit, reverse=True) == sorted(IDS, reverse=True)


def test_after_is_exclusive_and_need_not_exist(journal: Journal) -> None:
    fill(journal, set())
    assert ids(journal.runs_page("ab", 2)) == ["b", "b/1"]
    assert ids(journal.runs_page("ab", 2, reverse=True)) == ["a/2", "a/1"]
    assert ids(journal.runs_page("aa", 2)) == ["ab", "b"]  # not an id: the page starts past it
    assert ids(journal.runs_page("aa", 2, reverse=True)) == ["a/2", "a/1"]
    assert journal.runs_page("\uffff", 5) == []
    assert ids(journal.runs_page("\uffff", 1, reverse=True)) == ["z\xff"]
    assert ids(journal.runs_page("zzzz", 1, reverse=True)) == ["d\u00e9"]  # "z\xff" sorts above "zzzz"
    assert journal.runs_page(None, 0) == []


def test_prefix_limits_the_page_to_matching_ids(journal: Journal) -> None:
    fill(journal, set())
    assert ids(journal.runs_page(None, 10, prefix="a")) == ["a", "a/1", "a/2", "ab"]
    assert ids(journal.runs_page(None, 10, prefix="a", reverse=True)) == ["ab", "a/2", "a/1", "a"]
    assert ids(journal.runs_page("a/1", 10, prefix="a/")) == ["a/2"]
    assert ids(journal.runs_page("a/2", 10, prefix="a/", reverse=True)) == ["a/1"]
    assert ids(journal.runs_page("zz", 10, prefix="c", reverse=True)) == ["ca", "c"]  # after beyond the prefix
    assert ids(journal.runs_page(None, 10, prefix="z\xff")) == ["z\xff"]
    assert ids(journal.runs_page(None, 10, prefix="z\xff", reverse=True)) == ["z\xff"]
    assert journal.runs_page(None, 10, prefix="q") == []
    assert journal.runs_page(None, 10, prefix="q", reverse=True) == []


def test_unfinished_pages_read_the_active_index(journal: Journal) -> None:
    fill(journal, {"a/1", "b", "ca"})
    live = sorted(set(IDS) - {"a/1", "b", "ca"})
    assert walk(journal, 2, unfinished=True) == live
    assert walk(journal, 2, unfinished=True, reverse=True) == live[::-1]
    assert ids(journal.runs_page(None, 10, unfinished=True, prefix="a")) == ["a", "a/2", "ab"]
    page = journal.runs_page("a", 1, unfinished=True)
    assert ids(page) == ["a/2"] and page[0].state == "pending" and page[0].created_at == 2.0


def test_run_counts_follow_creates_and_finishes(journal: Journal) -> None:
    assert journal.run_counts() == (0, 0)
    fill(journal, {"a", "b"})
    assert journal.run_counts() == (len(IDS), len(IDS) - 2)


def test_change_marker_moves_on_every_commit(journal: Journal) -> None:
    m0 = journal.change_marker()
    assert journal.change_marker() == m0  # reading does not move it
    b = journal.batch()
    b.kv_put("x", "k", 1)
    journal.commit(b)
    m1 = journal.change_marker()
    assert m1 != m0
    b = journal.batch()
    b.kv_del("x", "k")
    journal.commit(b)
    assert journal.change_marker() not in (m0, m1)


def test_reads_go_on_after_another_process_grew_the_map(tmp_path: Path) -> None:
    """A dashboard reading beside a live engine: the engine's map grows past the reader's map size,
    LMDB then refuses the reader's transactions until it adopts the new size; reads must not fail."""
    path = tmp_path / "j"
    with LmdbJournal(path, sync=False, map_size=1 << 20) as reader:
        assert reader.runs_page(None, 5) == []
        before = reader.change_marker()
        code = textwrap.dedent(
            f"""
            import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            import actorflow
            from storage import Event, LmdbJournal, RunRecord
            with LmdbJournal({str(path)!r}, sync=False, map_size=1 << 20) as j:
                for n in range(8):
                    b = j.batch()
                    for i in range(200):
                        rid = f"r{{n:02d}}-{{i:04d}}"
                        b.create_run(RunRecord(rid, "wf"), Event(0, "run_started", "wf", "x" * 2000, 0.0))
                    j.commit(b)
                print(j.map_growths)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert int(out.stdout.strip()) >= 1, "the writer never grew the map: the test shows nothing"
        assert reader.run_counts() == (1600, 1600)
        assert reader.change_marker() != before
        assert ids(reader.runs_page(None, 2, reverse=True)) == ["r07-0199", "r07-0198"]
        b = reader.batch()  # and it can write after the growth too
        b.kv_put("control", "k", {"a": 1})
        reader.commit(b)
        assert reader.kv_get("control", "k") == {"a": 1}
