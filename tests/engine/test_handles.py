"""What start_many returns: a read-only list of handles built on access from packed run ids (issue 17)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from actorflow import Engine, RunHandle, _starts

from .conftest import TIMEOUT


def _handles_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, RunHandle))


def test_start_many_returns_a_list_of_handles_across_commit_groups(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_starts, "START_MANY_COMMIT", 7)  # 30 runs: five commit groups

    @engine.workflow()
    async def square(ctx: Any, x: int) -> int:
        return x * x

    handles = engine.start_many(square, [(i,) for i in range(30)])
    ids = [h.run_id for h in handles]
    assert len(handles) == 30 and len(set(ids)) == 30
    plain = [RunHandle(engine, rid) for rid in ids]
    assert handles == plain and plain == list(handles) and handles == handles
    assert handles != plain[:-1] and handles != plain[::-1]
    assert handles[0] == plain[0] and handles[-1] == plain[-1] and handles[7].run_id == ids[7]
    assert handles[3:10] == plain[3:10] and handles[::-5] == plain[::-5]
    assert plain[13] in handles and handles.index(plain[22]) == 22
    assert {handles[4]: 1}[plain[4]] == 1  # a handle hashes like another of the same run
    with pytest.raises(IndexError):
        handles[30]
    assert [h.result(TIMEOUT) for h in handles] == [i * i for i in range(30)]


def test_start_many_handles_of_given_ids_of_any_length_and_of_existing_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_starts, "START_MANY_COMMIT", 4)

    @engine.workflow()
    async def square(ctx: Any, x: int) -> int:
        return x * x

    first = engine.start_many(square, [(i,) for i in range(3)], run_ids=["a", "bb", "ccc"])
    assert [h.result(TIMEOUT) for h in first] == [0, 1, 4]
    ids = ["bb", "x-1", "x-2", "é-long", "a", "x-3", "x-4", "x-5", "x-6", "x-7"]
    handles = engine.start_many(square, [(10 + i,) for i in range(10)], run_ids=ids)
    assert [h.run_id for h in handles] == ids
    assert handles[3].run_id == "é-long" and handles[-6].run_id == "a"
    # existing runs keep their original arguments
    assert [h.result(TIMEOUT) for h in handles] == [1, 121, 144, 169, 0, 225, 256, 289, 324, 361]


def test_start_many_holds_no_handle_object_per_run(engine: Engine) -> None:
    @engine.workflow()
    async def one(ctx: Any, x: int) -> int:
        return x

    before = _handles_alive()
    handles = engine.start_many(one, [(i,) for i in range(500)])
    assert _handles_alive() - before < 10  # was 500: one RunHandle (and run id string) per run
    assert len(handles) == 500 and handles[499].result(TIMEOUT) == 499
