"""The control inbox: durable commands (signal, cancel, load, requeue) for the engine that holds a data directory.

One engine owns a data directory (an exclusive lock), so a tool in another process - the dashboard,
a CLI - cannot call its `signal()` or `cancel()`. It writes a command record instead, in an ordinary
committed batch: durable when `submit_signal`/`submit_cancel` return. The engine drains the inbox at
`open()` and on every housekeeping tick of its pump (about once a second), applies each command with
its own logic, and deletes it while recording the outcome - for a signal in the same commit as the
signal itself, so a crash can neither lose nor repeat it. With no engine on the directory the command
waits, durably, for the next `open()`.

Records live in two kv namespaces of the journal (no format change): `control` holds pending
commands by id, `control-outcome` what became of them (kept for a week), so a tool can show
"applied" or the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage import Journal, WriteBatch

from ._handle import new_run_id
from ._logging import get_logger
from ._messages import LoadRun
from .errors import ActorflowError, ConfigError, RunFinished, RunNotFound

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = [
    "CONTROL_NS",
    "OUTCOME_NS",
    "Command",
    "Outcome",
    "ControlInbox",
    "submit_signal",
    "submit_cancel",
    "add_load",
    "submit_requeue",
    "pending",
    "outcome",
    "outcomes",
]

log = get_logger("actorflow.control")

CONTROL_NS = "control"
OUTCOME_NS = "control-outcome"
KINDS = ("signal", "cancel", "load", "requeue")
OUTCOME_TTL = 7 * 86400.0  # seconds an outcome is kept for tools to show


@dataclass(frozen=True, slots=True)
class Command:
    """A request for the engine; `id` is time-ordered (a UUIDv7), so the inbox drains in order."""

    id: str
    kind: str
    run_id: str
    name: str | None = None
    payload: Any = None
    at: float = 0.0
    source: str = "tool"

    def to_record(self) -> dict[str, Any]:
        # a plain dict: readable whatever codec the journal was opened with (pickle or JSON)
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "name": self.name,
            "payload": self.payload,
            "at": self.at,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, cid: str, rec: dict[str, Any]) -> Command:
        return cls(cid, rec["kind"], rec["run_id"], rec.get("name"), rec.get("payload"), rec.get("at", 0.0), rec.get("source", "tool"))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine did with a command: `ok` and a one-line `detail` (the error when not ok)."""

    id: str
    kind: str
    run_id: str
    ok: bool
    detail: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "run_id": self.run_id, "ok": self.ok, "detail": self.detail, "at": self.at}


def _outcome_record(cmd: Command, ok: bool, detail: str) -> dict[str, Any]:
    return {"kind": cmd.kind, "run_id": cmd.run_id, "ok": ok, "detail": detail, "at": time.time()}


def _check_target(journal: Journal, run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(str(run_id))
    rec = journal.get_run(run_id)
    if rec is None:
        raise RunNotFound(run_id)
    if rec.finished:
        raise RunFinished(run_id, rec.state)


def _submit(journal: Journal, cmd: Command) -> Command:
    batch = journal.batch()
    batch.kv_put(CONTROL_NS, cmd.id, cmd.to_record())  # encodes here: PayloadError before any write
    journal.commit(batch)
    return cmd


def submit_signal(journal: Journal, run_id: str, name: str, payload: Any = None, *, source: str = "tool") -> Command:
    """Queue a signal for whichever engine holds (or next opens) the journal's data directory.

    Durable on return. Raises RunNotFound / RunFinished, ConfigError for a bad name, PayloadError
    for a payload the journal cannot encode - all before anything is written."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigError(f"signal name must be a non-empty string without NUL, got {name!r}")
    _check_target(journal, run_id)
    return _submit(journal, Command(new_run_id(), "signal", run_id, name, payload, time.time(), source))


def submit_cancel(journal: Journal, run_id: str, *, source: str = "tool") -> Command:
    """Queue a cancel of the run (see `Engine.cancel`); durable on return, RunNotFound / RunFinished first."""
    _check_target(journal, run_id)
    return _submit(journal, Command(new_run_id(), "cancel", run_id, None, None, time.time(), source))


def add_load(batch: WriteBatch, run_id: str, *, source: str = "tool") -> Command:
    """Add to `batch` a command that has the engine load `run_id` from its journal (a run another
    process created in this batch, e.g. a fork): a live engine picks it up within about a second;
    without one, the next open() recovers the run anyway and the command finds it loaded."""
    cmd = Command(new_run_id(), "load", run_id, None, None, time.time(), source)
    batch.kv_put(CONTROL_NS, cmd.id, cmd.to_record())
    return cmd


# --- requeue (a dead letter of the task queue) --------------------------------------------------
def submit_requeue(journal: Journal, run_id: str, *, source: str = "tool") -> Command:
    """Queue `engine.requeue(run_id)` of a dead letter (a failed task execution; `run_id` is its
    execution id). Durable on return; RunNotFound, or ConfigError when it is not a dead letter."""
    from .tasks._queue import NS_REQUEUED
    from .tasks._status import task_name

    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(str(run_id))
    rec = journal.get_run(run_id)
    if rec is None:
        raise RunNotFound(run_id)
    if task_name(rec.workflow) is None or rec.state != "failed":
        raise ConfigError(f"run {run_id!r} ({rec.workflow}, {rec.state}) is not a dead letter: only failed task executions requeue")
    again = journal.kv_get(NS_REQUEUED, run_id)
    if again is not None:
        raise ConfigError(f"execution {run_id!r} was already requeued as {again!r}")
    if any(c.kind == "requeue" for c in pending(journal, run_id)):
        raise ConfigError(f"a requeue of execution {run_id!r} is already waiting for the engine")
    return _submit(journal, Command(new_run_id(), "requeue", run_id, None, None, time.time(), source))


def pending(journal: Journal, run_id: str | None = None) -> list[Command]:
    """Commands not applied yet, oldest first (of one run, or all)."""
    cmds = [Command.from_record(k, v) for k, v in journal.kv_scan(CONTROL_NS) if isinstance(v, dict)]
    return [c for c in cmds if run_id is None or c.run_id == run_id]


def outcome(journal: Journal, command_id: str) -> Outcome | None:
    """What became of a command; None while it is pending (or unknown, or expired)."""
    rec = journal.kv_get(OUTCOME_NS, command_id)
    return None if not isinstance(rec, dict) else _outcome(command_id, rec)


def outcomes(journal: Journal, run_id: str | None = None) -> list[Outcome]:
    """Recorded outcomes, oldest command first (of one run, or all)."""
    got = [_outcome(k, v) for k, v in journal.kv_scan(OUTCOME_NS) if isinstance(v, dict)]
    return [o for o in got if run_id is None or o.run_id == run_id]


def _outcome(cid: str, rec: dict[str, Any]) -> Outcome:
    return Outcome(cid, rec["kind"], rec["run_id"], bool(rec["ok"]), str(rec["detail"]), float(rec["at"]))


class ControlInbox:
    """The engine's side: `poll()` (the pump's housekeeping tick, and open) is one cheap read; when
    commands wait it starts a drain on a thread of its own, as cancel() waits for the run's host,
    which runs on the pump thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._pruned_at = 0.0

    def poll(self) -> None:
        try:
            journal = self.engine.journal
            if journal is None or self._stopped or not journal.kv_scan(CONTROL_NS):
                return
        except Exception:  # noqa: BLE001 - the pump thread must not die of a read here
            log.exception("reading the control inbox failed")
            return
        with self._lock:
            if self._stopped or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._drain_logged, name="actorflow-control", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """No drain starts after this; one under way finishes its command (the engine is still open)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _drain_logged(self) -> None:
        try:
            self.drain()
        except Exception:  # noqa: BLE001
            log.exception("draining the control inbox failed")

    def drain(self) -> int:
        """Apply every pending command in order; returns how many were applied or refused."""
        journal = self.engine.journal
        if journal is None:
            return 0
        done = 0
        for cmd in pending(journal):
            if self._stopped:
                break
            try:
                self._apply(journal, cmd)
            except _EngineGone:
                break
            except Exception:  # noqa: BLE001 - one bad command must not hold up the others
                log.exception("control command failed", command=cmd.id, kind=cmd.kind, run_id=cmd.run_id)
                break
            done += 1
        self._prune(journal)
        return done

    def _apply(self, journal: Journal, cmd: Command) -> None:
        if cmd.kind == "signal":
            self._signal(cmd)
            return
        result: tuple[bool, str]
        if cmd.kind == "cancel":
            result = self._guard(lambda: (True, "cancelled") if self.engine.cancel(cmd.run_id) else (False, "the run had already ended"))
        elif cmd.kind == "load":
            result = self._guard(lambda: self._load(cmd.run_id))
        elif cmd.kind == "requeue":
            result = self._guard(lambda: self._requeue(cmd.run_id))
        else:
            result = (False, f"unknown command kind {cmd.kind!r}")
        batch = journal.batch()
        batch.kv_del(CONTROL_NS, cmd.id)
        batch.kv_put(OUTCOME_NS, cmd.id, _outcome_record(cmd, *result))
        journal.commit(batch)

    def _guard(self, fn: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
        try:
            return fn()
        except (RunNotFound, RunFinished) as exc:
            return False, str(exc)
        except ConfigError as exc:  # the engine closed meanwhile: the command waits for the next open
            raise _EngineGone() from exc
        except ActorflowError as exc:
            if not self.engine.is_open:
                raise _EngineGone() from exc
            return False, str(exc)
        except TimeoutError:
            return False, "the engine did not confirm the cancel within 30 s"

    def _load(self, run_id: str) -> tuple[bool, str]:
        rec = self.engine._record(run_id)
        if rec.finished:
            return False, f"the run had already ended ({rec.state})"
        if rec.workflow not in self.engine._workflows:
            return False, f"workflow {rec.workflow!r} is not registered with this engine: the run waits for one that has it"
        self.engine._runtime().post(LoadRun(run_id))
        return True, "loaded"

    def _requeue(self, execution_id: str) -> tuple[bool, str]:
        # not a dead letter (any more), or its task is not registered here: refused, not "engine gone"
        if not self.engine.is_open:
            raise _EngineGone()
        try:
            new = self.engine.requeue(execution_id)
        except ActorflowError as exc:
            if not self.engine.is_open:
                raise _EngineGone() from exc
            return False, str(exc)
        return True, f"requeued as {new}"

    def _signal(self, cmd: Command) -> None:
        """`Engine.signal`, with the command's removal and outcome in the signal's own commit."""
        try:
            rt = self.engine._runtime()
        except ActorflowError as exc:
            raise _EngineGone() from exc
        name = str(cmd.name)

        def done(batch: WriteBatch) -> None:
            batch.kv_del(CONTROL_NS, cmd.id)
            batch.kv_put(OUTCOME_NS, cmd.id, _outcome_record(cmd, True, f"signal {name!r} delivered to the run's inbox"))

        try:
            self.engine._signal(cmd.run_id, name, cmd.payload, also=done)
        except (RunNotFound, RunFinished) as exc:
            # the run was gone or had finished by the time of the commit: nothing was queued; say so
            fix = rt.journal.batch()
            fix.kv_put(OUTCOME_NS, cmd.id, _outcome_record(cmd, False, str(exc)))
            rt.journal.commit(fix)

    def _prune(self, journal: Journal) -> None:
        now = time.time()
        if now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        old = [k for k, v in journal.kv_scan(OUTCOME_NS) if not isinstance(v, dict) or now - float(v.get("at", 0)) > OUTCOME_TTL]
        if old:
            batch = journal.batch()
            for k in old:
                batch.kv_del(OUTCOME_NS, k)
            journal.commit(batch)


class _EngineGone(Exception):
    """The engine closed while draining: stop, and leave the rest for the next open()."""
