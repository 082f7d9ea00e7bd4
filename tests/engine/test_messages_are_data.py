"""Build item 2 of issue 12: every message between actors, and between the engine and its actors, is
a frozen dataclass that pickles to an equal copy; no field is declared as a live object (a future, a
callable, a lock, a runtime or engine). The two in-process-only messages say so and are excluded."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from types import ModuleType
from typing import Any

import pytest

from actorflow import _messages
from actorflow._multiproc import _placement, _remote_steps, _timer_wake, _wire

MODULES: tuple[ModuleType, ...] = (_messages, _wire, _remote_steps, _placement, _timer_wake)
# documented in _messages: never cross an actor boundary; NodeLink (_remote_steps) is what a shard hands
# a handler of a node's notice in its own process (with a callable to reach the node), never sent
IN_PROCESS_ONLY = {"PumpCall", "Committed", "NodeLink"}
LIVE = ("Future", "Callable", "Lock", "Runtime", "Engine", "Thread", "Queue", "RunHost")


def _messages_of(module: ModuleType) -> list[type[Any]]:
    return [
        cls for _n, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls) and not cls.__name__.startswith("_")
    ]


ALL = [cls for m in MODULES for cls in _messages_of(m)]


def test_the_message_modules_are_found() -> None:
    names = {cls.__name__ for cls in ALL}
    assert {"StartRun", "StepDone", "TimerFired", "Outcome", "Packed", "ShardInit", "RemoteStep", "TimerWake"} <= names


@pytest.mark.parametrize("cls", [c for c in ALL if c.__name__ not in IN_PROCESS_ONLY], ids=lambda c: c.__name__)
def test_a_message_is_frozen_data_that_pickles(cls: type[Any]) -> None:
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"
    fields = dataclasses.fields(cls)
    for f in fields:
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        assert not any(word in declared for word in LIVE), f"{cls.__name__}.{f.name}: {declared}"
    msg = cls(*[f"value-{i}" for i in range(len(fields))])
    assert pickle.loads(pickle.dumps(msg)) == msg
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, fields[0].name, None)
