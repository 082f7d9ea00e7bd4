"""Fixtures for supervisor tests: a fresh simpleSystemBase per test, always shut down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from thespian.actors import ActorSystem


@pytest.fixture
def asys() -> Iterator[ActorSystem]:
    """A synchronous in-process actor system (deterministic), shut down even if the test fails."""
    system = ActorSystem("simpleSystemBase", logDefs=False)
    try:
        yield system
    finally:
        system.shutdown()
