"""engine.aenqueue: durable when it returns, concurrent coroutines share commits, bad input refused first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from actorflow import Engine
from actorflow.errors import ConfigError, TaskNotRegistered


def _inc(ctx: Any, input: dict[str, Any]) -> int:
    return int(input["x"]) + 1


def test_aenqueue_many_coroutines_complete_and_are_journaled(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "af"))
    engine.task(name="inc")(_inc)

    async def main() -> list[Any]:
        ids = await asyncio.gather(*(engine.aenqueue("inc", {"x": i}, tags=["a"]) for i in range(200)))
        assert len(set(ids)) == 200
        return [await engine.aresult(eid, 60) for eid in ids]

    with engine:
        assert asyncio.run(main()) == [i + 1 for i in range(200)]
        assert len(engine.tasks(tag="a")) == 200
    with Engine(str(tmp_path / "af")) as reopened:  # durable: the journal has every execution and result
        reopened.task(name="inc")(_inc)
        done = reopened.tasks(name="inc", state="succeeded")
        assert len(done) == 200


def test_aenqueue_unique_key_keeps_the_live_execution(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "af"))
    engine.task(name="inc")(_inc)

    async def main() -> tuple[str, str]:
        a = await engine.aenqueue("inc", {"x": 1}, delay=3600, unique_key="k")
        b = await engine.aenqueue("inc", {"x": 2}, delay=3600, unique_key="k")
        return a, b

    with engine:
        a, b = asyncio.run(main())
        assert a == b


def test_aenqueue_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "af"))
    engine.task(name="inc")(_inc)

    async def main() -> None:
        with pytest.raises(TaskNotRegistered):
            await engine.aenqueue("nope", {"x": 1})
        with pytest.raises(ConfigError):
            await engine.aenqueue("inc", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            await engine.aenqueue("inc", {"x": 1}, unique_policy="bogus")
        with pytest.raises(ConfigError):
            await engine.aenqueue("inc", {"x": 1}, priority="high")  # type: ignore[arg-type]

    with engine:
        asyncio.run(main())
        assert engine.tasks(name="inc") == []
