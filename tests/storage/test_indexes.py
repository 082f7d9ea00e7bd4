"""The unique-key, tag and schedule indexes, on every backend: conditional ops inside group commits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from actorflow.errors import StorageError
from storage import Event, Journal, LmdbJournal


def commit(j: Journal, *ops: tuple[str, tuple[Any, ...]]) -> list[Any]:
    b = j.batch()
    for name, args in ops:
        getattr(b, name)(*args)
    return j.commit(b)


def test_a_unique_key_has_one_holder_until_it_releases_it(journal: Journal) -> None:
    assert journal.unique_holder("order-7") is None
    assert commit(journal, ("claim_unique", ("order-7", "run-a"))) == ["run-a"]
    assert commit(journal, ("claim_unique", ("order-7", "run-b"))) == ["run-a"]  # taken: who has it
    assert commit(journal, ("claim_unique", ("order-7", "run-a"))) == ["run-a"]  # again: still its own
    assert journal.unique_holder("order-7") == "run-a"
    assert commit(journal, ("release_unique", ("order-7", "run-b"))) == [False]  # not the holder's to give
    assert journal.unique_holder("order-7") == "run-a"
    assert commit(journal, ("release_unique", ("order-7", "run-a"))) == [True]
    assert journal.unique_holder("order-7") is None
    assert commit(journal, ("release_unique", ("order-7", "run-a"))) == [False]
    assert commit(journal, ("claim_unique", ("order-7", "run-b"))) == ["run-b"]


def test_claims_in_one_batch_see_each_other(journal: Journal) -> None:
    got = commit(
        journal,
        ("claim_unique", ("k", "run-a")),
        ("claim_unique", ("k", "run-b")),
        ("release_unique", ("k", "run-a")),
        ("claim_unique", ("k", "run-b")),
    )
    assert got == ["run-a", "run-a", True, "run-b"]
    assert journal.unique_holder("k") == "run-b"


def test_a_failed_batch_keeps_none_of_its_claims(journal: Journal) -> None:
    b = journal.batch()
    b.claim_unique("k", "run-a")
    b.append("run-x", Event(5, "step", "s", None, 1.0))  # seq 5 of a run with none before: refused
    with pytest.raises(StorageError):
        journal.commit(b)
    assert journal.unique_holder("k") is None
    assert commit(journal, ("claim_unique", ("k", "run-b"))) == ["run-b"]


def test_concurrent_claims_of_one_key_have_exactly_one_winner(journal: Journal) -> None:
    start = threading.Barrier(16)
    results: dict[str, Any] = {}

    def claim(i: int) -> None:
        start.wait()
        b = journal.batch()
        b.claim_unique("the-key", f"run-{i}")
        results[f"run-{i}"] = journal.submit(b).result(30)[0]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r, holder in results.items() if holder == r]
    assert len(results) == 16 and len(winners) == 1
    assert set(results.values()) == set(winners) == {journal.unique_holder("the-key")}


def test_tags_index_runs_by_tag(journal: Journal) -> None:
    commit(
        journal,
        ("add_tag", ("billing", "run-2")),
        ("add_tag", ("billing", "run-1")),
        ("add_tag", ("bill", "run-3")),  # a prefix of another tag is a different tag
        ("add_tag", ("billing-eu", "run-4")),
        ("add_tag", ("billing", "run-1")),  # twice: once
    )
    assert journal.tagged("billing") == ["run-1", "run-2"]
    assert journal.tagged("bill") == ["run-3"]
    assert journal.tagged("nothing") == []
    commit(journal, ("remove_tag", ("billing", "run-1")), ("remove_tag", ("billing", "never")))
    assert journal.tagged("billing") == ["run-2"]


@pytest.mark.parametrize("bad", ["", "a\x00b"])
def test_bad_tag_and_schedule_names_are_refused_before_anything_is_written(journal: Journal, bad: str) -> None:
    b = journal.batch()
    with pytest.raises(ValueError, match="tag"):
        b.add_tag(bad, "run-1")
    with pytest.raises(ValueError, match="schedule name"):
        b.put_schedule(bad, {"every": 5})
    with pytest.raises(ValueError, match="holder"):
        b.claim_unique("k", bad)
    assert b.ops == []


def test_schedules_are_kept_by_name(journal: Journal) -> None:
    commit(
        journal,
        ("put_schedule", ("nightly", {"cron": "0 3 * * *", "task": "report"})),
        ("put_schedule", ("every-5s", {"every": 5.0, "task": "poll"})),
    )
    assert journal.schedules() == [
        ("every-5s", {"every": 5.0, "task": "poll"}),
        ("nightly", {"cron": "0 3 * * *", "task": "report"}),
    ]
    commit(journal, ("put_schedule", ("nightly", {"cron": "0 4 * * *", "task": "report"})))
    assert journal.schedule("nightly") == {"cron": "0 4 * * *", "task": "report"}
    commit(journal, ("del_schedule", ("every-5s",)))
    assert [n for n, _ in journal.schedules()] == ["nightly"]
    assert journal.schedule("every-5s") is None


def test_the_indexes_survive_a_reopen(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    commit(j, ("claim_unique", ("k", "run-a")), ("add_tag", ("t", "run-a")), ("put_schedule", ("s", {"every": 1})))
    j.close()
    j = LmdbJournal(tmp_path / "j")
    try:
        assert (j.unique_holder("k"), j.tagged("t"), j.schedules()) == ("run-a", ["run-a"], [("s", {"every": 1})])
        assert commit(j, ("claim_unique", ("k", "run-b"))) == ["run-a"]
    finally:
        j.close()
