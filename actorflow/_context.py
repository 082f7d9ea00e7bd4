"""What workflow code sees: `WorkflowContext` and the awaitable commands it hands out."""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from ._placed import Placed, check_requires
from ._retry import RetryPolicy
from .errors import ConfigError

if TYPE_CHECKING:
    from ._core import RunMachine
    from ._core._state import RunState

__all__ = ["WorkflowContext", "Command"]

_NO_RETRY = RetryPolicy.none()


class Command:
    """One journaled workflow operation at a fixed position; awaiting it yields it to the run."""

    __slots__ = ("run", "pos", "kind", "name", "done", "value", "error", "spec", "attempt", "due", "inflight")

    def __init__(self, run: RunState, pos: int, kind: str, name: str) -> None:
        self.run = run
        self.pos = pos
        self.kind = kind
        self.name = name
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.spec: Any = None
        self.attempt = 0
        self.due: float | None = None
        self.inflight = False

    def __await__(self) -> Generator[Command, None, Any]:
        if not self.done:
            yield self
        if self.error is not None:
            raise self.error
        return self.value

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<{self.kind} {self.name!r} at position {self.pos}, {state}>"


class _Gather:
    """Awaits several commands already issued; results in argument order, first failure re-raised."""

    __slots__ = ("cmds",)

    def __init__(self, cmds: Sequence[Command]) -> None:
        self.cmds = cmds

    def __await__(self) -> Generator[Command, None, list[Any]]:
        results: list[Any] = []
        first_error: BaseException | None = None
        for cmd in self.cmds:
            try:
                value = yield from cmd.__await__()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after all finish
                if first_error is None:
                    first_error = exc
                value = None
            results.append(value)
        if first_error is not None:
            try:
                raise first_error
            finally:
                first_error = None  # no frame <-> traceback cycle: only a full GC would free it
        return results


class StepSpec:
    """What a step command needs to run (and compensate) its function."""

    __slots__ = ("fn", "retry", "compensate", "timeout")

    def __init__(
        self,
        fn: Callable[[], Any],
        retry: RetryPolicy,
        compensate: Callable[[], Any] | None,
        timeout: float | None,
    ) -> None:
        self.fn = fn
        self.retry = retry
        self.compensate = compensate
        self.timeout = timeout


MAX_SECONDS = 1e10  # the longest durable sleep, step timeout or wait timeout


def _seconds(value: float | _dt.timedelta, what: str) -> float:
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(f"{what} must be seconds (int/float) or a timedelta, got {type(value).__name__}")
    if not 0 <= seconds < math.inf:  # also refuses NaN
        raise ConfigError(f"{what} must be finite and not negative, got {value!r}")
    if seconds > MAX_SECONDS:  # beyond it a due time plus the timer window rounds to the due time itself
        raise ConfigError(f"{what} must be at most {MAX_SECONDS:g} s (about 317 years), got {value!r}")
    return seconds


class WorkflowContext:
    """The run's handle to durable operations; everything here is journaled and replay-safe."""

    __slots__ = ("_run",)

    def __init__(self, run: RunMachine) -> None:
        self._run = run

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def workflow(self) -> str:
        return self._run.workflow

    @property
    def is_replaying(self) -> bool:
        """True while re-executing code whose effects are already in the journal."""
        return self._run.replaying

    def step(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        retry: RetryPolicy | None = None,
        compensate: Callable[[], Any] | None = None,
        timeout: float | _dt.timedelta | None = None,
        requires: dict[str, Any] | None = None,
    ) -> Command:
        """Run `fn` off the actor thread at least once; its journaled result is returned exactly once.

        `requires` ({"gpu": True}): run it only on a node whose capabilities match (a multiprocess
        engine's convention, README "Multiple machines"); it waits for such a node to join."""
        if not callable(fn):
            raise ConfigError(f"step {name!r}: fn must be a zero-argument callable, got {type(fn).__name__}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(
                f"step {name!r}: retry must be a RetryPolicy (e.g. RetryPolicy.exponential()), got {retry!r}"
            )
        if compensate is not None and not callable(compensate):
            raise ConfigError(f"step {name!r}: compensate must be callable")
        t = None if timeout is None else _seconds(timeout, f"step {name!r} timeout")
        if t == 0:
            raise ConfigError(f"step {name!r}: timeout must be positive")
        if requires:
            fn = Placed(fn, check_requires(requires, f"step {name!r}"))
        elif requires is not None:
            check_requires(requires, f"step {name!r}")
        return self._run.cmd_step(str(name), StepSpec(fn, retry or _NO_RETRY, compensate, t))

    def sleep(self, name: str, seconds: float | _dt.timedelta) -> Command:
        """A durable timer: survives restarts, fires late (never lost) after downtime."""
        return self._run.cmd_sleep(str(name), _seconds(seconds, f"sleep {name!r} duration"))

    def wait_signal(self, name: str, timeout: float | _dt.timedelta | None = None) -> Command:
        """The next payload of signal `name`; raises WaitTimeout after `timeout` seconds."""
        t = None if timeout is None else _seconds(timeout, f"wait_signal {name!r} timeout")
        return self._run.cmd_wait(str(name), t)

    def child(self, wf: Callable[..., Any] | str, *args: Any, run_id: str | None = None) -> Command:
        """Start a durable child run and await its result; cancelling this run cancels it."""
        return self._run.cmd_child(wf, args, run_id)

    def gather(self, *awaitables: Awaitable[Any]) -> Awaitable[list[Any]]:
        """Await several ctx operations that run concurrently; results in argument order."""
        cmds: list[Command] = []
        for a in awaitables:
            if not isinstance(a, Command) or a.run is not self._run:
                raise ConfigError(
                    f"ctx.gather takes ctx.step/sleep/wait_signal/child operations of this run, got {a!r}"
                )
            cmds.append(a)
        return _Gather(cmds)

    def patched(self, change_id: str) -> bool:
        """True on runs that reach this point with new code; False when replaying older journals."""
        return self._run.cmd_patched(str(change_id))

    def report_progress(self, fraction: float) -> None:
        """0.0..1.0, visible to status() and monitor()."""
        if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"progress must be a number in [0, 1], got {fraction!r}")
        self._run.set_progress(float(fraction))

    def now(self) -> _dt.datetime:
        """The current time (UTC), journaled so replay sees the same instant."""
        ts = self._run.cmd_value("now", self._run.clock_now)
        return _dt.datetime.fromtimestamp(ts, _dt.UTC)

    def time(self) -> float:
        """The current epoch seconds, journaled."""
        return float(self._run.cmd_value("now", self._run.clock_now))

    def random(self) -> float:
        """A uniform float in [0, 1), journaled."""
        return float(self._run.cmd_value("random", self._run.rng.random))

    def uuid4(self) -> uuid.UUID:
        """A random UUID, journaled."""
        return uuid.UUID(self._run.cmd_value("uuid4", lambda: str(uuid.UUID(int=self._run.rng.getrandbits(128), version=4))))
