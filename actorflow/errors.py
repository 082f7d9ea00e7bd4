"""One exception hierarchy for actorflow; every error carries its evidence and survives pickling."""

from __future__ import annotations

import pickle
from typing import Any

__all__ = [
    "ActorflowError",
    "RunNotFound",
    "InvalidRunId",
    "RunConflict",
    "RunFinished",
    "WorkflowNotRegistered",
    "TaskNotRegistered",
    "WorkflowFailed",
    "StepFailed",
    "StepTimeout",
    "WaitTimeout",
    "NondeterminismError",
    "PayloadError",
    "StorageError",
    "JournalFull",
    "JournalCorrupt",
    "JournalVersionError",
    "ShardUnavailable",
    "ConfigError",
    "RunIdTaken",
    "Cancelled",
]


class ActorflowError(Exception):
    """Root of every error actorflow raises on purpose."""

    def __init__(self, message: str = "", **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence
        for key, value in evidence.items():
            setattr(self, key, value)

    def __reduce__(self) -> Any:
        # pickle drops __cause__, yet it is the evidence (StepFailed chains the step's last error):
        # it travels too when it pickles, so a journaled or cross-process copy keeps the chain
        cause = self.__cause__
        if cause is not None:
            try:
                pickle.dumps(cause)
            except Exception:  # noqa: BLE001 - an unpicklable cause is left out, not the error
                cause = None
        if cause is None:
            return (_rebuild, (type(self), self.message, self.evidence, self.__dict__))
        return (_rebuild, (type(self), self.message, self.evidence, self.__dict__, cause))

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: type[ActorflowError],
    message: str,
    evidence: dict[str, Any],
    state: dict[str, Any],
    cause: BaseException | None = None,
) -> Any:
    err = cls.__new__(cls)
    ActorflowError.__init__(err, message, **evidence)
    err.__dict__.update(state)
    if cause is not None:
        err.__cause__ = cause
    return err


class RunNotFound(ActorflowError):
    """No run with this id exists in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no workflow run with id {run_id!r}", run_id=run_id)


class InvalidRunId(ActorflowError, ValueError):
    """A run id that cannot name a run: not a string, empty, containing NUL or a lone surrogate (no
    UTF-8), or over 400 bytes.

    Also a ValueError, so code that validates input with `except ValueError` catches it."""

    def __init__(self, run_id: object) -> None:
        super().__init__(
            f"invalid run id {run_id!r} ({type(run_id).__name__}): a run id is a non-empty str "
            "without NUL, at most 400 bytes in UTF-8 (no lone surrogates)",
            run_id=run_id,
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.evidence["run_id"],))


class RunConflict(ActorflowError):
    """A run id is already taken by a run of another workflow."""

    def __init__(self, run_id: str, existing: str, requested: str) -> None:
        super().__init__(
            f"run id {run_id!r} already belongs to workflow {existing!r}, not {requested!r}",
            run_id=run_id,
            existing=existing,
            requested=requested,
        )


class RunFinished(ActorflowError):
    """The run has ended and accepts no more signals."""

    def __init__(self, run_id: str, state: str) -> None:
        super().__init__(f"run {run_id!r} has already finished (state {state})", run_id=run_id, state=state)


class WorkflowNotRegistered(ActorflowError):
    """A workflow name that no `@engine.workflow` registered."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"workflow {name!r} is not registered{hint}", name=name)


class TaskNotRegistered(ActorflowError):
    """A task name that no `@engine.task` registered."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"task {name!r} is not registered{hint}", name=name)


class WorkflowFailed(ActorflowError):
    """The workflow raised; the original error is chained as `__cause__` and kept in `error`."""

    def __init__(self, run_id: str, error: str, cause: BaseException | None = None) -> None:
        super().__init__(f"workflow run {run_id!r} failed: {error}", run_id=run_id, error=error)
        if cause is not None:
            self.__cause__ = cause


class StepFailed(ActorflowError):
    """A step exhausted its retries; the last error is chained."""

    def __init__(self, run_id: str, step: str, attempts: int, error: str) -> None:
        super().__init__(
            f"step {step!r} of run {run_id!r} failed after {attempts} attempt(s): {error}",
            run_id=run_id,
            step=step,
            attempts=attempts,
            error=error,
        )


class StepTimeout(StepFailed):
    """A step attempt ran longer than its timeout."""


class WaitTimeout(ActorflowError):
    """`ctx.wait_signal` timed out before the signal arrived."""

    def __init__(self, run_id: str, signal: str, timeout: float) -> None:
        super().__init__(
            f"run {run_id!r} waited {timeout}s for signal {signal!r} in vain",
            run_id=run_id,
            signal=signal,
            timeout=timeout,
        )


class NondeterminismError(ActorflowError):
    """Replayed workflow code diverged from its journal; the run is held `blocked`."""

    run_id: str
    seq: int
    expected: str
    recorded: str

    def __init__(self, run_id: str, seq: int, expected: str, recorded: str) -> None:
        super().__init__(
            f"non-deterministic replay of run {run_id!r} at position {seq}: "
            f"code asked for {expected}, journal recorded {recorded}",
            run_id=run_id,
            seq=seq,
            expected=expected,
            recorded=recorded,
        )


class PayloadError(ActorflowError):
    """A value that cannot be serialized, or is larger than the configured limit."""


class StorageError(ActorflowError):
    """The journal could not read or write."""


class JournalFull(StorageError):
    """The disk under the journal is full; nothing of the failed write was kept."""


class JournalCorrupt(StorageError):
    """A stored record failed its checksum or could not be decoded."""


class ShardUnavailable(ActorflowError):
    """The shard owning a run did not answer (its node is gone, or its process restarted while the
    request was in flight: a start may or may not have committed - repeat it with the same run_id).
    Evidence: `shard` (and `node` when a member node owns it)."""


class JournalVersionError(StorageError):
    """The journal was written by a newer format version than this code reads."""


class ConfigError(ActorflowError):
    """Invalid configuration or argument (negative duration, bad cron string, non-async workflow...)."""


class RunIdTaken(ActorflowError):
    """A new run (a fork) was given the id of a run that exists."""

    def __init__(self, run_id: str, workflow: str) -> None:
        super().__init__(
            f"run id {run_id!r} is taken (a run of workflow {workflow!r} has it): choose another id, or none for a new one",
            run_id=run_id,
            workflow=workflow,
        )


class Cancelled(BaseException):
    """The run (or task) was cancelled; derives from BaseException so `except Exception` won't eat it."""

    def __init__(self, run_id: str = "", reason: str = "cancelled") -> None:
        super().__init__(f"run {run_id!r} {reason}" if run_id else reason)
        self.run_id = run_id
        self.reason = reason

    def __reduce__(self) -> Any:
        return (type(self), (self.run_id, self.reason))
