"""SupervisorCore and spec validation, pure (fake clock): strategies, intensity, backoff, restart types."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow.errors import ConfigError
from supervisors import Backoff, ChildSpec, Intensity, Strategy, SupervisorCore, SupervisorSpec


class FakeClock:
    """Monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_core(
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    names: str = "abcd",
    restart: dict[str, Any] | None = None,
    intensity: Intensity | None = None,
    backoff: Backoff | None = None,
) -> tuple[SupervisorCore, FakeClock]:
    restart = restart or {}
    children = [ChildSpec(n, factory=object, restart=restart.get(n, "permanent")) for n in names]
    spec = SupervisorSpec(
        strategy=strategy,
        intensity=intensity or Intensity(max_restarts=100, within=5.0),
        backoff=backoff or Backoff(),
        children=children,
    )
    clock = FakeClock()
    return SupervisorCore(spec, clock), clock


# -- strategies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, ("b",)),
        (Strategy.ONE_FOR_ALL, ("a", "b", "c", "d")),
        (Strategy.REST_FOR_ONE, ("b", "c", "d")),
    ],
)
def test_strategy_chooses_children(strategy: Strategy, expected: tuple[str, ...]) -> None:
    core, _ = make_core(strategy)
    decision = core.on_failure("b", "RuntimeError('x')")
    assert not decision.escalate
    assert decision.restart == expected
    assert decision.stop == tuple(reversed(expected))
    assert decision.removed == ()
    assert decision.child == "b" and decision.error == "RuntimeError('x')"
    assert core.children == ("a", "b", "c", "d")
    for name in "abcd":
        assert core.restart_count(name) == (1 if name in expected else 0)


def test_rest_for_one_last_child_restarts_only_itself() -> None:
    core, _ = make_core(Strategy.REST_FOR_ONE)
    assert core.on_failure("d", "e").restart == ("d",)


# -- intensity -----------------------------------------------------------------------------------


def test_escalates_on_restart_beyond_intensity() -> None:
    core, clock = make_core(intensity=Intensity(max_restarts=2, within=5.0))
    assert core.on_failure("a", "e1").restart == ("a",)
    clock.now = 1.0
    assert core.on_failure("b", "e2").restart == ("b",)
    clock.now = 4.9
    decision = core.on_failure("a", "e3")
    assert decision.escalate
    assert decision.restart == ()
    assert decision.stop == ("d", "c", "b", "a")
    assert core.escalated and core.children == ()
    # Nothing more is decided once escalated.
    later = core.on_failure("a", "e4")
    assert later.escalate and later.stop == () and later.restart == ()


def test_intensity_window_slides() -> None:
    core, clock = make_core(intensity=Intensity(max_restarts=2, within=5.0))
    for t in (0.0, 1.0, 5.0, 6.0, 10.0, 11.0):
        clock.now = t
        assert not core.on_failure("a", "e").escalate, t
    assert core.restart_count("a") == 6
    clock.now = 11.5
    assert core.on_failure("a", "e").escalate


def test_zero_intensity_escalates_first_failure() -> None:
    core, _ = make_core(intensity=Intensity(max_restarts=0, within=1.0))
    assert core.on_failure("c", "e").escalate


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_grows_then_resets_after_quiet_period() -> None:
    core, clock = make_core(
        intensity=Intensity(max_restarts=100, within=10.0), backoff=Backoff(initial=1.0, multiplier=2.0, max=5.0)
    )
    delays = []
    for _ in range(5):
        decision = core.on_failure("a", "e")
        delays.append(decision.delay)
        clock.now += decision.delay + 1.0  # fails 1 s after each restart
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    # Quiet for longer than the window since the last restart took effect: back to the initial delay.
    clock.now += 10.5
    assert core.on_failure("a", "e").delay == 1.0
    # Streaks are per failing child.
    assert core.on_failure("b", "e").delay == 1.0


def test_backoff_delay_formula_and_validation() -> None:
    backoff = Backoff(initial=0.5, multiplier=3.0, max=10.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10.0]
    assert Backoff().delay(7) == 0.0
    assert Backoff(initial=1.0, multiplier=10.0, max=30.0).delay(100_000) == 30.0  # no OverflowError
    with pytest.raises(ConfigError):
        backoff.delay(0)


# -- restart types -------------------------------------------------------------------------------


def test_transient_restarts_only_after_abnormal_exit() -> None:
    core, _ = make_core(restart={"b": "transient"})
    assert core.on_failure("b", "boom").restart == ("b",)
    normal = core.on_failure("b", "normal", normal_exit=True)
    assert normal.restart == () and normal.removed == ("b",) and normal.stop == ("b",)
    assert core.children == ("a", "c", "d")
    assert not core.is_active("b")
    with pytest.raises(ValueError):
        core.on_failure("b", "again")


def test_permanent_restarts_even_after_normal_exit() -> None:
    core, _ = make_core()
    assert core.on_failure("a", "normal", normal_exit=True).restart == ("a",)


def test_temporary_never_restarts_and_costs_no_intensity() -> None:
    core, _ = make_core(Strategy.ONE_FOR_ALL, restart={"c": "temporary"}, intensity=Intensity(0, 1.0))
    decision = core.on_failure("c", "boom")
    assert not decision.escalate
    assert decision.restart == () and decision.removed == ("c",) and decision.stop == ("c",)
    assert core.children == ("a", "b", "d")


def test_temporary_sibling_stopped_but_not_restarted() -> None:
    core, _ = make_core(Strategy.REST_FOR_ONE, restart={"c": "temporary"})
    decision = core.on_failure("b", "boom")
    assert decision.stop == ("d", "c", "b")
    assert decision.restart == ("b", "d")
    assert decision.removed == ("c",)
    assert core.children == ("a", "b", "d")


# -- spec validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: SupervisorSpec(children=[ChildSpec("a", object), ChildSpec("a", object)]),
        lambda: SupervisorSpec(strategy="one_for_none"),  # type: ignore[arg-type]
        lambda: SupervisorSpec(children=["a"]),  # type: ignore[list-item]
        lambda: SupervisorSpec(name=""),
        lambda: Intensity(max_restarts=-1),
        lambda: Intensity(max_restarts=1.5),  # type: ignore[arg-type]
        lambda: Intensity(within=0),
        lambda: Intensity(within=-2.0),
        lambda: Intensity(within=math.nan),
        lambda: Backoff(initial=-1.0),
        lambda: Backoff(multiplier=0.5),
        lambda: Backoff(initial=5.0, max=1.0),
        lambda: Backoff(max=math.inf),
        lambda: ChildSpec("", object),
        lambda: ChildSpec("a", None),
        lambda: ChildSpec("a", object, restart="sometimes"),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_raise_config_error(build: Any) -> None:
    with pytest.raises(ConfigError):
        build()


def test_spec_normalises_strategy_and_children() -> None:
    spec = SupervisorSpec(strategy="REST_FOR_ONE", children=[ChildSpec("a", object)])  # type: ignore[arg-type]
    assert spec.strategy is Strategy.REST_FOR_ONE
    assert spec.children == (ChildSpec("a", object),)
    assert spec.child("a").factory is object


# -- properties ----------------------------------------------------------------------------------

_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=4.0, allow_nan=False),  # time advance before the event
        st.integers(min_value=0, max_value=7),  # which active child fails (mod len)
        st.booleans(),  # normal exit?
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(list(Strategy)),
    restart_types=st.lists(st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=6),
    max_restarts=st.integers(min_value=0, max_value=5),
    within=st.floats(min_value=0.5, max_value=10.0, allow_nan=False),
    backoff=st.builds(
        Backoff,
        initial=st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
        multiplier=st.floats(min_value=1.0, max_value=4.0, allow_nan=False),
        max=st.just(6.0),
    ),
    events=_events,
)
def test_core_properties(
    strategy: Strategy,
    restart_types: list[Any],
    max_restarts: int,
    within: float,
    backoff: Backoff,
    events: list[tuple[float, int, bool]],
) -> None:
    names = [f"c{i}" for i in range(len(restart_types))]
    types = dict(zip(names, restart_types))
    spec = SupervisorSpec(
        strategy=strategy,
        intensity=Intensity(max_restarts, within),
        backoff=backoff,
        children=[ChildSpec(n, object, restart=types[n]) for n in names],
    )
    clock = FakeClock()
    core = SupervisorCore(spec, clock)
    restart_times: list[float] = []  # model of the intensity window
    escalated = False
    for advance, pick, normal in events:
        clock.now += advance
        before = list(core.children)
        if not before:
            break
        name = before[pick % len(before)]
        decision = core.on_failure(name, "err", normal_exit=normal)
        after = list(core.children)
        # Active children only ever shrink, keeping start order.
        assert after == [c for c in before if c in after]
        wants_restart = types[name] == "permanent" or (types[name] == "transient" and not normal)
        if not wants_restart:
            assert not decision.escalate and decision.restart == () and decision.removed == (name,)
            continue
        in_window = [t for t in restart_times if clock.now - t < within]
        if len(in_window) >= max_restarts:
            assert decision.escalate, (restart_times, clock.now)
            assert decision.stop == tuple(reversed(before)) and decision.restart == ()
            assert core.children == ()
            escalated = True
            break
        assert not decision.escalate
        restart_times.append(clock.now)
        # Never more than max_restarts restarts inside any window without escalation.
        assert len([t for t in restart_times if clock.now - t < within]) <= max_restarts
        affected = list(reversed(decision.stop))
        if strategy is Strategy.ONE_FOR_ONE:
            assert affected == [name]
        elif strategy is Strategy.ONE_FOR_ALL:
            assert affected == before
        else:  # REST_FOR_ONE: a suffix of the start order, beginning at the failed child
            assert affected == before[before.index(name) :]
            assert affected == before[len(before) - len(affected) :]
        assert name in decision.restart
        assert list(decision.restart) == [c for c in affected if types[c] != "temporary"]
        assert set(decision.removed) == {c for c in affected if types[c] == "temporary"}
        assert backoff.initial <= decision.delay <= backoff.max or decision.delay == backoff.max
    assert core.escalated == escalated
