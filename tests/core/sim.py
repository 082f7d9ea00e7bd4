"""Drive one RunMachine by hand: hand-made messages in, completions out; no engine, journal or thread.

`Sim` keeps the events its machine's completions appended (decoded), as a journal would, so a test
can build a second machine from that history and check what replaying it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actorflow._core import APPEND, OP_NAMES, Completion, Env, RunMachine
from actorflow._messages import LoadRun, StartRun, StepDone
from actorflow.errors import WorkflowNotRegistered
from storage import Codec, Event, RunRecord

CODEC = Codec()


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class Done:
    """A copy of one completion (the machine reuses its own), with its ops spelled out."""

    def __init__(self, out: Completion) -> None:
        self.ops = [(OP_NAMES[op[0]], *op[1:]) for op in out.ops]
        self.events = out.events()
        self.effects = out.effects()
        self.dirty = out.dirty
        self.rederivable = out.rederivable

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [op for op in self.ops if op[0] == name]

    def dispatched(self) -> list[tuple[int, str, int, str]]:
        """(pos, step name, attempt, kind) of each dispatch, in order."""
        return [(d[1][1], d[1][2], d[1][3], d[1][5]) for d in self.named("dispatch")]


class Sim:
    def __init__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        run_id: str = "r",
        history: list[Event] | None = None,
        signals: list[tuple[str, int, Any]] | None = None,
        workflows: dict[str, Callable[..., Any]] | None = None,
        clock: Clock | None = None,
        elsewhere: Callable[[str], bool] | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.workflows = dict(workflows or {})
        self.workflows.setdefault(fn.__name__, fn)
        self.history = list(history) if history else [Event(0, "run_started", fn.__name__, {"args": args}, 0.0)]
        self.record = RunRecord(run_id, fn.__name__, "pending" if history is None else "running")
        env = Env(self.clock.now, CODEC, self.workflow_name, elsewhere)
        self.run = RunMachine(self.record, fn, args, list(self.history), env, signals or [])
        self.run_id = run_id

    def workflow_name(self, wf: Any) -> str:
        name = wf if isinstance(wf, str) else wf.__name__
        if name not in self.workflows:
            raise WorkflowNotRegistered(name, list(self.workflows))
        return str(name)

    def send(self, msg: Any) -> Done:
        out = self.run.activate(msg)
        for op in out.ops:
            if op[0] == APPEND:
                kind, name, pos, at, data = CODEC.decode(op[2])
                assert (op[1], kind, name, pos) == (len(self.history), op[3], op[4], op[5])
                self.history.append(Event(op[1], kind, name, data, at, pos))
        return Done(out)

    def start(self) -> Done:
        return self.send(StartRun(self.run_id, self.record.as_tuple(), ()))

    def load(self) -> Done:
        return self.send(LoadRun(self.run_id))

    def step_ok(self, pos: int, value: Any, attempt: int = 1) -> Done:
        name = self.run.pending[pos].name
        record = CODEC.encode(("step_completed", name, pos, self.clock.now(), value))
        return self.send(StepDone(self.run_id, pos, attempt, True, (record, value)))

    def step_failed(self, pos: int, exc: BaseException, attempt: int = 1) -> Done:
        return self.send(StepDone(self.run_id, pos, attempt, False, exc))

    def kinds(self) -> list[tuple[str, str, int]]:
        return [(e.kind, e.name, e.pos) for e in self.history]

    def data(self, kind: str) -> Any:
        return next(e.data for e in self.history if e.kind == kind)
