"""The error hierarchy: every class importable from actorflow, correct bases, survives pickling."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import cloudpickle
import pytest

import actorflow
from actorflow import errors

SAMPLES: dict[str, Any] = {
    "ActorflowError": lambda: errors.ActorflowError("root", detail=1),
    "RunNotFound": lambda: errors.RunNotFound("r-1"),
    "InvalidRunId": lambda: errors.InvalidRunId(""),
    "RunConflict": lambda: errors.RunConflict("r-1", "wf_a", "wf_b"),
    "RunIdTaken": lambda: errors.RunIdTaken("r-1", "wf_a"),
    "RunFinished": lambda: errors.RunFinished("r-1", "completed"),
    "WorkflowNotRegistered": lambda: errors.WorkflowNotRegistered("nope", ["a", "b"]),
    "TaskNotRegistered": lambda: errors.TaskNotRegistered("t"),
    "WorkflowFailed": lambda: errors.WorkflowFailed("r-1", "ValueError: x"),
    "StepFailed": lambda: errors.StepFailed("r-1", "charge", 3, "Boom: no"),
    "StepTimeout": lambda: errors.StepTimeout("r-1", "charge", 1, "timed out"),
    "WaitTimeout": lambda: errors.WaitTimeout("r-1", "approve", 5.0),
    "NondeterminismError": lambda: errors.NondeterminismError("r-1", 4, "step 'a'", "step_completed 'b'"),
    "PayloadError": lambda: errors.PayloadError("too big", type_name="bytes", size=10, limit=5),
    "StorageError": lambda: errors.StorageError("disk"),
    "JournalFull": lambda: errors.JournalFull("full", path="/x"),
    "JournalCorrupt": lambda: errors.JournalCorrupt("bad crc", where="run r seq 3"),
    "JournalVersionError": lambda: errors.JournalVersionError("v9", where="x", found=9, supported=1),
    "ShardUnavailable": lambda: errors.ShardUnavailable("shard 1 is down", shard=1, node="nodeb"),
    "ConfigError": lambda: errors.ConfigError("negative"),
    "Cancelled": lambda: errors.Cancelled("r-1", "cancelled by user"),
}

EVIDENCE = {
    "RunNotFound": {"run_id": "r-1"},
    "InvalidRunId": {"run_id": ""},
    "RunConflict": {"run_id": "r-1", "existing": "wf_a", "requested": "wf_b"},
    "RunIdTaken": {"run_id": "r-1", "workflow": "wf_a"},
    "RunFinished": {"run_id": "r-1", "state": "completed"},
    "WorkflowNotRegistered": {"name": "nope"},
    "WorkflowFailed": {"run_id": "r-1", "error": "ValueError: x"},
    "StepFailed": {"run_id": "r-1", "step": "charge", "attempts": 3, "error": "Boom: no"},
    "StepTimeout": {"run_id": "r-1", "step": "charge", "attempts": 1},
    "WaitTimeout": {"run_id": "r-1", "signal": "approve", "timeout": 5.0},
    "NondeterminismError": {"run_id": "r-1", "seq": 4, "expected": "step 'a'", "recorded": "step_completed 'b'"},
    "PayloadError": {"type_name": "bytes", "size": 10, "limit": 5},
    "JournalCorrupt": {"where": "run r seq 3"},
    "JournalVersionError": {"found": 9, "supported": 1},
    "ShardUnavailable": {"shard": 1, "node": "nodeb"},
    "Cancelled": {"run_id": "r-1", "reason": "cancelled by user"},
    "ActorflowError": {"detail": 1},
}


def all_error_classes() -> list[type[BaseException]]:
    return [getattr(errors, n) for n in errors.__all__ if inspect.isclass(getattr(errors, n))]


def test_every_error_class_has_a_sample() -> None:
    assert {c.__name__ for c in all_error_classes()} == set(SAMPLES)


def test_hierarchy() -> None:
    E = errors
    for name in ("RunNotFound", "RunConflict", "RunFinished", "WorkflowNotRegistered", "WorkflowFailed",
                 "StepFailed", "WaitTimeout", "NondeterminismError", "PayloadError", "StorageError", "ConfigError"):
        assert issubclass(getattr(E, name), E.ActorflowError), name
    assert issubclass(E.StepTimeout, E.StepFailed)
    for name in ("JournalFull", "JournalCorrupt", "JournalVersionError"):
        assert issubclass(getattr(E, name), E.StorageError)
    assert issubclass(E.ActorflowError, Exception)
    assert issubclass(E.Cancelled, BaseException) and not issubclass(E.Cancelled, Exception)
    for cls in all_error_classes():
        assert getattr(actorflow, cls.__name__) is cls  # re-exported


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_errors_survive_pickling(name: str, dumps: Any) -> None:
    err = SAMPLES[name]()
    copy = pickle.loads(dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert copy.args == err.args
    for key, value in EVIDENCE.get(name, {}).items():
        assert getattr(copy, key) == value, key
    if isinstance(err, errors.ActorflowError):
        assert copy.message == err.message
        assert copy.evidence == err.evidence


def test_chained_cause_survives_pickling_of_cause_itself() -> None:
    cause = ValueError("root cause")
    err = errors.WorkflowFailed("r", "ValueError: root cause", cause)
    assert err.__cause__ is cause
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.run_id == "r"
    assert type(copy.__cause__) is ValueError and str(copy.__cause__) == "root cause"  # the chain travels


def test_a_chain_of_causes_survives_pickling_and_an_unpicklable_cause_is_left_out() -> None:
    step = errors.StepFailed("r", "charge", 3, "KeyError: 'k'")
    step.__cause__ = KeyError("k")
    err = errors.WorkflowFailed("r", "StepFailed: ...", step)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy.__cause__) is errors.StepFailed and copy.__cause__.attempts == 3
    assert type(copy.__cause__.__cause__) is KeyError
    lost = errors.StepFailed("r", "s", 1, "e")
    lost.__cause__ = _Unpicklable("x")
    copy2 = pickle.loads(pickle.dumps(lost))
    assert copy2.__cause__ is None and copy2.step == "s"


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no")


def test_errors_raised_by_the_engine_pickle(engine: actorflow.Engine) -> None:
    @engine.workflow()
    async def wf(ctx: Any) -> None:
        await ctx.step("s", lambda: (_ for _ in ()).throw(KeyError("k")))

    with pytest.raises(errors.WorkflowFailed) as ei:
        engine.run(wf, run_id="pickled", timeout=20)
    copy = pickle.loads(pickle.dumps(ei.value))
    assert copy.run_id == "pickled" and "KeyError" in str(copy)
    step_err = pickle.loads(pickle.dumps(ei.value.__cause__))
    assert isinstance(step_err, errors.StepFailed) and step_err.step == "s"
