"""Test helpers: a controllable clock and an in-memory engine, so long sleeps take milliseconds."""

from __future__ import annotations

from typing import Any

from storage import DEFAULT_MAX_PAYLOAD, Codec, MemoryJournal

from ._clock import MockClock
from ._engine import Engine
from .tasks import Enqueued, FakeTasks

__all__ = ["MockClock", "memory_engine", "FakeTasks", "Enqueued"]


def memory_engine(clock: MockClock | None = None, **kw: Any) -> Engine:
    """An Engine on an in-memory journal and (by default) an autojumping MockClock."""
    # the journal encodes every payload: it must use the engine's codec settings (codec, max_payload)
    codec = Codec(kw.get("codec", "pickle"), kw.get("max_payload", DEFAULT_MAX_PAYLOAD))
    return Engine(None, journal=MemoryJournal(codec=codec), clock=clock or MockClock(autojump=True), **kw)
