from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import actorflow  # noqa: E402,F401  (before storage: storage imports actorflow.errors)
from storage import Journal, LmdbJournal, MemoryJournal  # noqa: E402


@pytest.fixture(params=["memory", "lmdb"])
def make_journal(request: Any, tmp_path: Path) -> Iterator[Callable[..., Journal]]:
    """A factory of journals of one backend; calling it again reopens the same store (LMDB)."""
    opened: list[Journal] = []

    def make(**kw: Any) -> Journal:
        if request.param == "memory":  # "reopening" a memory journal gives the same one back
            if not opened:
                opened.append(MemoryJournal(**kw))
            return opened[0]
        for j in opened:
            j.close()
        opened.clear()
        j = LmdbJournal(tmp_path / "journal", **kw)
        opened.append(j)
        return j

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for j in opened:
        j.close()


@pytest.fixture
def journal(make_journal: Callable[..., Journal]) -> Journal:
    return make_journal()


def data_file(path: Path | str) -> Path:
    return Path(os.fspath(path)) / "data.mdb"
