"""SupervisorActor/SupervisedActor on simpleSystemBase: real restarts, escalation, nesting, error reports."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
from thespian.actors import Actor, ActorExitRequest, ActorSystem

from supervisors import (
    Backoff,
    ChildFailed,
    ChildRestarted,
    ChildSpec,
    Escalated,
    GetChildren,
    Intensity,
    Respawn,
    Strategy,
    Supervise,
    SupervisedActor,
    Supervising,
    SupervisorActor,
    SupervisorSpec,
)
from supervisors._messages import _Init

# Every (re)start of a Worker, keyed by test: [(child name, address), ...].
STARTS: dict[str, list[tuple[str, Any]]] = defaultdict(list)


class Worker(SupervisedActor):
    """Records its starts; fails, exits or answers on command."""

    def on_start(self, init: Any) -> None:
        self.key = init["key"]
        STARTS[self.key].append((self.name, self.myAddress))
        if init.get("fail_start"):
            raise RuntimeError(f"cannot start {self.name}")

    def handle(self, message: Any, sender: Any) -> None:
        if message == "boom":
            raise ValueError(f"kaboom {self.name}")
        if message == "exit":
            self.exit_normally()
        elif message == "ping":
            self.send(sender, ("pong", self.name))
        elif message == "tick-boom":
            self.wakeup_after(0.0, "tick-boom")

    def on_wakeup(self, payload: Any) -> None:
        raise RuntimeError(f"wakeup {payload} failed")


class BrokenInit(SupervisedActor):
    """Cannot even be constructed: createActor yields a dead address (ChildActorExited)."""

    def __init__(self) -> None:
        raise RuntimeError("no constructor for you")


class Collector(Actor):  # type: ignore[misc]
    """Listener that keeps what it hears until drained."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[Any] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "drain":
            self.send(sender, list(self.heard))
            self.heard.clear()
        elif message != "noop":
            self.heard.append(message)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> Any:
    name = request.node.nodeid
    STARTS.pop(name, None)
    yield name
    STARTS.pop(name, None)


def drain(asys: ActorSystem, collector: Any) -> list[Any]:
    """Run every pending message to completion (tell does), then read what the listener heard."""
    asys.tell(collector, "noop")
    heard = asys.ask(collector, "drain", 5)
    assert isinstance(heard, list)
    return heard


def children(asys: ActorSystem, sup: Any) -> dict[str, Any]:
    reply = asys.ask(sup, GetChildren(), 5)
    assert isinstance(reply, Supervising)
    return reply.addresses


def started(key: str) -> list[str]:
    return [name for name, _ in STARTS[key]]


def start(
    asys: ActorSystem,
    key: str,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    names: str = "abc",
    intensity: Intensity | None = None,
    backoff: Backoff | None = None,
    restart: dict[str, Any] | None = None,
    name: str = "sup",
) -> tuple[Any, Any, dict[str, Any]]:
    restart = restart or {}
    spec = SupervisorSpec(
        strategy=strategy,
        intensity=intensity or Intensity(max_restarts=10, within=60.0),
        backoff=backoff or Backoff(),
        children=[ChildSpec(n, Worker, {"key": key}, restart.get(n, "permanent")) for n in names],
        name=name,
    )
    collector = asys.createActor(Collector)
    sup = asys.createActor(SupervisorActor)
    reply = asys.ask(sup, Supervise(spec, collector), 5)
    assert isinstance(reply, Supervising)
    return sup, collector, reply.addresses


def assert_alive(asys: ActorSystem, address: Any, name: str) -> None:
    assert asys.ask(address, "ping", 5) == ("pong", name)


def assert_dead(asys: ActorSystem, address: Any) -> None:
    assert asys.ask(address, "ping", 0.2) is None


# -- start -----------------------------------------------------------------------------------------


def test_starts_children_in_order_and_reports_addresses(asys: ActorSystem, key: str) -> None:
    sup, collector, addresses = start(asys, key)
    assert list(addresses) == ["a", "b", "c"]
    assert started(key) == ["a", "b", "c"]
    assert [addr for _, addr in STARTS[key]] == list(addresses.values())
    assert children(asys, sup) == addresses
    for name, address in addresses.items():
        assert_alive(asys, address, name)
    # A second Supervise does not start anything again.
    again = asys.ask(sup, Supervise(SupervisorSpec(children=[ChildSpec("z", Worker, {"key": key})])), 5)
    assert again == Supervising(addresses)
    assert started(key) == ["a", "b", "c"]
    assert drain(asys, collector) == []


# -- strategies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, ["b"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c"]),
        (Strategy.REST_FOR_ONE, ["b", "c"]),
    ],
)
def test_strategy_restarts_exactly_the_right_children(
    asys: ActorSystem, key: str, strategy: Strategy, restarted: list[str]
) -> None:
    sup, collector, before = start(asys, key, strategy)
    asys.tell(before["b"], "boom")
    heard = drain(asys, collector)
    after = children(asys, sup)

    assert started(key) == ["a", "b", "c"] + restarted
    assert list(after) == ["a", "b", "c"]
    for name in "abc":
        if name in restarted:
            assert after[name] != before[name]
            assert_dead(asys, before[name])
        else:
            assert after[name] == before[name]
        assert_alive(asys, after[name], name)

    assert [m.name for m in heard] == restarted
    for message in heard:
        assert isinstance(message, ChildRestarted)
        assert message.address == after[message.name]
        assert message.restarts == 1
        assert message.failed_child == "b"
        assert "ValueError('kaboom b')" in message.error


def test_failure_in_wakeup_and_on_start_are_reported(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key)
    asys.tell(before["a"], "tick-boom")
    heard = drain(asys, collector)
    assert [type(m) for m in heard] == [ChildRestarted]
    assert "wakeup tick-boom failed" in heard[0].error
    assert started(key) == ["a", "b", "c", "a"]


def test_restart_counts_accumulate(asys: ActorSystem, key: str) -> None:
    sup, collector, _ = start(asys, key)
    for expected in (1, 2, 3):
        asys.tell(children(asys, sup)["c"], "boom")
        (message,) = drain(asys, collector)
        assert (message.name, message.restarts) == ("c", expected)


# -- ChildFailed -----------------------------------------------------------------------------------


def test_child_failed_carries_error_and_traceback_and_child_goes_quiet(asys: ActorSystem, key: str) -> None:
    worker = asys.createActor(Worker)
    # Act as the supervisor ourselves: the external requester sends _Init, so it receives the report.
    asys.tell(worker, _Init("lonely", {"key": key}))
    assert started(key) == ["lonely"]
    assert_alive(asys, worker, "lonely")
    asys.tell(worker, "boom")
    report = asys.listen(5)
    assert isinstance(report, ChildFailed)
    assert report.name == "lonely"
    assert report.error == "ValueError('kaboom lonely')"
    assert "Traceback" in report.traceback and "kaboom lonely" in report.traceback
    # After failing it drops everything (no PoisonMessage, no reply) until replaced.
    assert asys.ask(worker, "ping", 0.2) is None


def test_messages_that_overtake_the_init_wait_for_on_start(asys: ActorSystem, key: str) -> None:
    """Multiproc bases may deliver work before the supervisor's init; it must not run (or fail) unsupervised."""
    worker = asys.createActor(Worker)
    asys.tell(worker, "ping")
    asys.tell(worker, "boom")
    asys.tell(worker, "ping")
    assert STARTS[key] == []
    # The init arrives last: on_start runs first, then the held messages in order; the second ping is never
    # handled because "boom" failed the actor (and the failure is reported, to us as the stand-in supervisor).
    asys.tell(worker, _Init("late", {"key": key}))
    assert asys.listen(5) == ("pong", "late")
    report = asys.listen(5)
    assert isinstance(report, ChildFailed) and report.error == "ValueError('kaboom late')"
    assert asys.listen(0.2) is None
    assert started(key) == ["late"]


def test_stale_and_foreign_reports_are_ignored(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key)
    asys.tell(sup, ChildFailed("a", "forged"))
    assert drain(asys, collector) == []
    assert children(asys, sup) == before
    assert started(key) == ["a", "b", "c"]


# -- intensity -------------------------------------------------------------------------------------


def test_intensity_exceeded_escalates_and_stops_everything(asys: ActorSystem, key: str) -> None:
    sup, collector, first = start(asys, key, intensity=Intensity(max_restarts=2, within=60.0))
    for _ in range(2):
        asys.tell(children(asys, sup)["b"], "boom")
    live = children(asys, sup)
    asys.tell(live["b"], "boom")
    heard = drain(asys, collector)
    assert [type(m).__name__ for m in heard] == ["ChildRestarted", "ChildRestarted", "Escalated"]
    escalated = heard[-1]
    assert escalated == Escalated("sup", "b", "ValueError('kaboom b')")
    assert children(asys, sup) == {}
    for name in "ac":
        assert_dead(asys, live[name])
    assert started(key) == ["a", "b", "c", "b", "b"]
    # An escalated supervisor does nothing more.
    asys.tell(live["a"], "boom")
    assert drain(asys, collector) == []


def test_failing_start_loops_until_escalation(asys: ActorSystem, key: str) -> None:
    spec = SupervisorSpec(
        intensity=Intensity(max_restarts=3, within=60.0),
        children=[ChildSpec("bad", Worker, {"key": key, "fail_start": True})],
        name="loop",
    )
    collector = asys.createActor(Collector)
    sup = asys.createActor(SupervisorActor)
    asys.ask(sup, Supervise(spec, collector), 5)
    heard = drain(asys, collector)
    assert started(key) == ["bad"] * 4
    assert [type(m).__name__ for m in heard] == ["ChildRestarted"] * 3 + ["Escalated"]
    assert heard[-1].error == "RuntimeError('cannot start bad')"


def test_unconstructible_child_is_treated_as_failure(asys: ActorSystem) -> None:
    spec = SupervisorSpec(intensity=Intensity(max_restarts=1, within=60.0), children=[ChildSpec("x", BrokenInit)])
    collector = asys.createActor(Collector)
    sup = asys.createActor(SupervisorActor)
    asys.ask(sup, Supervise(spec, collector), 5)
    heard = drain(asys, collector)
    assert [type(m).__name__ for m in heard] == ["ChildRestarted", "Escalated"]
    assert "exited unexpectedly" in heard[-1].error


def test_unexpected_exit_is_restarted(asys: ActorSystem, key: str) -> None:
    """A child that dies without reporting (like a killed process) still gets restarted via ChildActorExited."""
    sup, collector, before = start(asys, key)
    asys.tell(before["a"], ActorExitRequest())
    heard = drain(asys, collector)
    assert [(m.name, type(m)) for m in heard] == [("a", ChildRestarted)]
    assert "exited unexpectedly" in heard[0].error
    assert children(asys, sup)["a"] != before["a"]
    assert started(key) == ["a", "b", "c", "a"]


# -- restart types ---------------------------------------------------------------------------------


def test_transient_child(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key, restart={"b": "transient"})
    asys.tell(before["b"], "boom")
    assert [m.name for m in drain(asys, collector)] == ["b"]
    current = children(asys, sup)["b"]
    asys.tell(current, "exit")
    assert drain(asys, collector) == []
    assert set(children(asys, sup)) == {"a", "c"}
    assert_dead(asys, current)
    assert started(key) == ["a", "b", "c", "b"]


def test_respawn_recreates_a_live_child_and_a_transient_one_that_exited(asys: ActorSystem, key: str) -> None:
    """Respawn (the listener knows a child is lost where Thespian cannot tell): the current incarnation
    is stopped, a new one created and announced; one that exited normally is supervised again; no
    restart budget is spent (more respawns than the intensity allows); an unknown name is ignored."""
    sup, collector, before = start(asys, key, restart={"b": "transient"}, intensity=Intensity(max_restarts=1, within=60.0))
    for _ in range(3):
        asys.tell(sup, Respawn("a", "node lost"))
    heard = drain(asys, collector)
    assert [(m.name, m.error, m.restarts) for m in heard] == [("a", "node lost", n) for n in (1, 2, 3)]
    assert_dead(asys, before["a"])
    assert_alive(asys, children(asys, sup)["a"], "a")
    asys.tell(before["b"], "exit")  # a transient child's normal exit: dropped
    assert drain(asys, collector) == [] and set(children(asys, sup)) == {"a", "c"}
    asys.tell(sup, Respawn("b"))
    asys.tell(sup, Respawn("zz"))
    heard = drain(asys, collector)
    assert [(m.name, type(m)) for m in heard] == [("b", ChildRestarted)]
    assert list(children(asys, sup)) == ["a", "b", "c"]  # in start order again
    assert_alive(asys, children(asys, sup)["b"], "b")
    assert started(key) == ["a", "b", "c", "a", "a", "a", "b"]


def test_permanent_child_restarts_after_normal_exit(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key)
    asys.tell(before["c"], "exit")
    heard = drain(asys, collector)
    assert [(m.name, m.error) for m in heard] == [("c", "normal")]
    assert started(key) == ["a", "b", "c", "c"]


def test_temporary_child_never_restarts(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key, Strategy.ONE_FOR_ALL, restart={"a": "temporary"})
    asys.tell(before["a"], "boom")
    assert drain(asys, collector) == []
    assert children(asys, sup) == {"b": before["b"], "c": before["c"]}
    assert_dead(asys, before["a"])
    # As a sibling under ONE_FOR_ALL, a temporary child is stopped but not restarted.
    sup2, collector2, before2 = start(asys, key, Strategy.ONE_FOR_ALL, restart={"a": "temporary"}, name="sup2")
    asys.tell(before2["b"], "boom")
    assert [m.name for m in drain(asys, collector2)] == ["b", "c"]
    assert set(children(asys, sup2)) == {"b", "c"}
    assert_dead(asys, before2["a"])


# -- backoff ---------------------------------------------------------------------------------------


def test_backoff_delays_the_restart(asys: ActorSystem, key: str) -> None:
    sup, collector, before = start(asys, key, backoff=Backoff(initial=0.05, multiplier=2.0, max=1.0))
    began = time.monotonic()
    asys.tell(before["b"], "boom")
    assert drain(asys, collector) == []  # stopped, not yet restarted
    assert set(children(asys, sup)) == {"a", "c"}
    assert_dead(asys, before["b"])
    asys.listen(2.0)  # drives the system until the pending wakeup has fired
    heard = drain(asys, collector)
    assert time.monotonic() - began >= 0.05
    assert [m.name for m in heard] == ["b"]
    assert set(children(asys, sup)) == {"a", "b", "c"}
    assert started(key) == ["a", "b", "c", "b"]


# -- nesting ---------------------------------------------------------------------------------------


def nested(asys: ActorSystem, key: str, outer_budget: int) -> tuple[Any, Any]:
    collector = asys.createActor(Collector)
    inner = SupervisorSpec(
        intensity=Intensity(max_restarts=0, within=60.0),
        children=[ChildSpec("leaf", Worker, {"key": key})],
        name="inner",
    )
    outer = SupervisorSpec(
        intensity=Intensity(max_restarts=outer_budget, within=60.0),
        children=[
            ChildSpec("inner", SupervisorActor, Supervise(inner, collector)),
            ChildSpec("w", Worker, {"key": key}),
        ],
        name="outer",
    )
    sup = asys.createActor(SupervisorActor)
    asys.ask(sup, Supervise(outer, collector), 5)
    asys.tell(collector, "noop")  # let the inner supervisor start its leaf
    return sup, collector


def test_nested_supervisor_escalation_restarts_the_subtree(asys: ActorSystem, key: str) -> None:
    sup, collector = nested(asys, key, outer_budget=5)
    assert sorted(started(key)) == ["leaf", "w"]
    top = children(asys, sup)
    leaf = children(asys, top["inner"])["leaf"]
    asys.tell(leaf, "boom")
    heard = drain(asys, collector)
    assert heard[0] == Escalated("inner", "leaf", "ValueError('kaboom leaf')")
    assert isinstance(heard[1], ChildRestarted) and heard[1].name == "inner"
    assert "escalated" in heard[1].error and "kaboom leaf" in heard[1].error
    assert len(heard) == 2
    new_top = children(asys, sup)
    assert new_top["w"] == top["w"] and new_top["inner"] != top["inner"]
    new_leaf = children(asys, new_top["inner"])["leaf"]
    assert new_leaf != leaf
    assert_alive(asys, new_leaf, "leaf")
    assert_dead(asys, leaf)
    assert sorted(started(key)) == ["leaf", "leaf", "w"]


def test_nested_escalation_propagates_upward(asys: ActorSystem, key: str) -> None:
    sup, collector = nested(asys, key, outer_budget=0)
    top = children(asys, sup)
    asys.tell(children(asys, top["inner"])["leaf"], "boom")
    heard = drain(asys, collector)
    assert [type(m).__name__ for m in heard] == ["Escalated", "Escalated"]
    assert (heard[0].supervisor_name, heard[0].child) == ("inner", "leaf")
    assert (heard[1].supervisor_name, heard[1].child) == ("outer", "inner")
    assert "kaboom leaf" in heard[1].error
    assert children(asys, sup) == {}
    assert_dead(asys, top["w"])
