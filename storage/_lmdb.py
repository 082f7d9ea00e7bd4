"""LMDB journal (placeholder until the journal implementation lands)."""

from __future__ import annotations

from typing import Any

from ._memory import MemoryJournal

__all__ = ["LmdbJournal"]


class LmdbJournal(MemoryJournal):
    def __init__(self, path: str, *, sync: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path
