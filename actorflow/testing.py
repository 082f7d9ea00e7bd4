"""Test helpers: a controllable clock and an in-memory engine, so long sleeps take milliseconds."""

from __future__ import annotations

from typing import Any

from storage import MemoryJournal

from ._clock import MockClock
from ._engine import Engine

__all__ = ["MockClock", "memory_engine"]


def memory_engine(clock: MockClock | None = None, **kw: Any) -> Engine:
    """An Engine on an in-memory journal and (by default) an autojumping MockClock."""
    return Engine(None, journal=MemoryJournal(), clock=clock or MockClock(autojump=True), **kw)
