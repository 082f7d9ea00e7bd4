"""Checks of the Engine's options: a bad one is a ConfigError naming it, raised by the constructor.

An option that is only wrong when first used (a NaN grace period, a float shard count) would fail
far from the line that set it, or worse, inside the running engine; so every one is checked here.
"""

from __future__ import annotations

import math
import os
from typing import Any

from storage import Journal

from ._clock import Clock
from .errors import ConfigError

__all__ = ["check_engine_options"]


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"Engine {name} must be an int >= {low}, got {value!r}", option=name)


def _seconds(name: str, value: Any, *, optional: bool = False, positive: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        what = "finite seconds > 0" if positive else "finite seconds >= 0"
        raise ConfigError(
            f"Engine {name} must be {what}{' or None' if optional else ''}, got {value!r}", option=name
        )


def check_engine_options(
    *,
    data_dir: Any,
    system: Any,
    passivate_after: Any,
    clock: Any,
    journal: Any,
    sync: Any,
    shards: Any,
    step_threads: Any,
    step_processes: Any = 0,
    close_grace: Any,
    codec: Any,
    max_payload: Any,
    timer_horizon: Any,
    gc_threshold: Any,
    max_resident: Any = None,
) -> None:
    """Raise ConfigError for the first option that is not valid (see Engine for their meaning)."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"Engine data_dir must be a path (str or os.PathLike), got {data_dir!r}", option="data_dir")
    if not isinstance(system, str) or not system:
        raise ConfigError(f"Engine system must be a non-empty str, got {system!r}", option="system")
    _seconds("passivate_after", passivate_after, optional=True)
    if clock is not None and not isinstance(clock, Clock):
        raise ConfigError(f"Engine clock must be an actorflow Clock (e.g. MockClock()), got {clock!r}", option="clock")
    if journal is not None and not isinstance(journal, Journal):
        raise ConfigError(f"Engine journal must be a storage.Journal, got {journal!r}", option="journal")
    if not isinstance(sync, bool):
        raise ConfigError(f"Engine sync must be True or False, got {sync!r}", option="sync")
    _int("shards", shards, 1)
    _int("step_threads", step_threads, 1)
    _int("step_processes", step_processes, 0)
    _seconds("close_grace", close_grace)
    if codec not in ("pickle", "json"):
        raise ConfigError(f"Engine codec must be 'pickle' or 'json', got {codec!r}", option="codec")
    _int("max_payload", max_payload, 1)
    _seconds("timer_horizon", timer_horizon, positive=True)
    if max_resident is not None:
        _int("max_resident", max_resident, 1)
    if gc_threshold is not None and not (
        isinstance(gc_threshold, tuple)
        and len(gc_threshold) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in gc_threshold)
        and gc_threshold[0] > 0
    ):
        raise ConfigError(
            f"Engine gc_threshold must be None or three ints (gen0 > 0, gen1, gen2), got {gc_threshold!r}",
            option="gc_threshold",
        )
