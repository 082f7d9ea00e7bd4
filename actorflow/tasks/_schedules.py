"""Durable schedules, owned by the engine facade (one per data directory: the directory lock).

A schedule lives in the journal's schedule index with the last slot it fired. Firing slot `s` is
ONE batch: the execution `sched:<name>:<s in ms>` and the schedule's new last slot - so a slot is
never fired twice (the run id also exists only once), across restarts and kill -9. Slots missed
while no engine ran fire once on open (`catch_up=True`) or are skipped."""

from __future__ import annotations

import datetime as _dt
import threading
from typing import TYPE_CHECKING, Any

from storage import WriteBatch

from ..errors import ConfigError
from ._model import check_input, seconds

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["Scheduler", "put_schedule", "del_schedule", "list_schedules", "next_slot", "slot_id"]


def _check_cron(expr: Any) -> str:
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - croniter is a dependency
        raise ConfigError(f"cron schedules need croniter ({exc})") from None
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise ConfigError(f"invalid cron expression {expr!r} (five fields: minute hour day month weekday, e.g. '*/5 * * * *')",
                          cron=expr)
    return expr


def next_slot(spec: dict[str, Any], after: float) -> float:
    """The first slot strictly after `after`."""
    if spec.get("cron"):
        from croniter import croniter

        start = _dt.datetime.fromtimestamp(after, _dt.UTC)
        return float(croniter(spec["cron"], start).get_next(float))
    every = float(spec["every"])
    anchor = float(spec["anchor"])
    k = int((after - anchor) // every) + 1
    slot = anchor + k * every
    while slot <= after:  # float rounding
        slot += every
    return slot


def slot_id(name: str, slot: float) -> str:
    return f"sched:{name}:{round(slot * 1000)}"


def put_schedule(tq: TaskQueue, name: str, *, every: Any, cron: Any, input: Any, catch_up: bool, replace: bool) -> None:
    tq.spec(name)
    if (every is None) == (cron is None):
        raise ConfigError(f"schedule {name!r}: give exactly one of every= (seconds or timedelta) or cron=")
    interval = None if every is None else seconds(every, f"schedule {name!r} interval every=", positive=True)
    expr = None if cron is None else _check_cron(cron)
    data = check_input(input, f"schedule {name!r}")
    if not isinstance(catch_up, bool):
        raise ConfigError(f"schedule {name!r}: catch_up must be True or False, got {catch_up!r}")
    rt = tq.engine._runtime()
    old = rt.journal.schedule(name)
    if replace and old is None:
        raise ConfigError(f"reschedule({name!r}): there is no schedule {name!r} (use schedule())")
    now = rt.clock.now()
    spec: dict[str, Any] = {"task": name, "every": interval, "cron": expr, "input": data, "catch_up": catch_up,
                            "anchor": now, "last_slot": None}
    if old is not None:
        same = (old["every"], old["cron"], old["input"], old["catch_up"]) == (interval, expr, data, catch_up)
        if same:
            return  # schedule() at every start of an app: keeps its place
        spec["last_slot"] = old["last_slot"]
        spec["anchor"] = old["last_slot"] if old["last_slot"] is not None else now
    batch = rt.journal.batch()
    batch.put_schedule(name, spec)
    rt.journal.commit(batch)
    if tq.scheduler is not None:
        tq.scheduler.wake()


def del_schedule(tq: TaskQueue, name: str) -> bool:
    rt = tq.engine._runtime()
    if rt.journal.schedule(name) is None:
        return False
    batch = rt.journal.batch()
    batch.del_schedule(name)
    rt.journal.commit(batch)
    if tq.scheduler is not None:
        tq.scheduler.wake()
    return True


def list_schedules(tq: TaskQueue) -> list[dict[str, Any]]:
    rt = tq.engine._runtime()
    out = []
    for name, spec in rt.journal.schedules():
        after = spec["last_slot"] if spec["last_slot"] is not None else spec["anchor"]
        out.append({"name": name, **spec, "next_slot": next_slot(spec, after)})
    return out


class Scheduler:
    """One thread in the facade: sleeps until the earliest slot, fires due slots, repeats."""

    def __init__(self, tq: TaskQueue) -> None:
        self.tq = tq
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="actorflow-scheduler", daemon=True)
        self.started_at = tq.engine.clock.now()
        self.error: BaseException | None = None

    def start(self) -> None:
        self.tq.engine.clock.subscribe(self.wake)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(10.0)

    def _loop(self) -> None:
        clock = self.tq.engine.clock
        while not self._stop:
            self._wake.clear()
            try:
                due = self.tick()
            except Exception as exc:  # noqa: BLE001 - kept for inspection; the loop goes on
                self.error = exc
                due = clock.now() + 1.0
            if self._stop:
                return
            self._wake.wait(clock.real_timeout(due) if due is not None else None)

    def tick(self) -> float | None:
        """Fire every due slot; returns the earliest future slot (None: no schedule)."""
        rt = self.tq.engine._runtime()
        now = rt.clock.now()
        earliest: float | None = None
        for name, spec in rt.journal.schedules():
            last = spec["last_slot"]
            slot = next_slot(spec, last if last is not None else spec["anchor"])
            if slot <= now:
                latest = slot  # every slot due by now collapses into one firing: the latest
                while (nxt := next_slot(spec, latest)) <= now:
                    latest = nxt
                missed = latest < self.started_at
                self.fire(name, spec, latest, run=spec["catch_up"] or not missed)
                slot = next_slot(spec, latest)
            earliest = slot if earliest is None else min(earliest, slot)
        return earliest

    def fire(self, name: str, spec: dict[str, Any], slot: float, run: bool) -> None:
        tq = self.tq
        new = {**spec, "last_slot": slot}
        if not run or spec["task"] not in tq.specs:
            rt = tq.engine._runtime()
            batch = rt.journal.batch()
            batch.put_schedule(name, new)
            rt.journal.commit(batch)
            return
        task = tq.specs[spec["task"]]
        opts = {"priority": 0, "tags": [f"schedule:{name}"], "slot": slot}

        def advance(batch: WriteBatch, run_id: str) -> None:
            batch.put_schedule(name, new)

        tq.create(task, dict(spec["input"]), opts, slot_id(name, slot), advance)
