"""RetryPolicy: constructors, delay formula, caps, jitter bounds, attempt counting, non_retryable."""

from __future__ import annotations

import random

import pytest

from actorflow import ConfigError, RetryPolicy


class Boom(Exception):
    pass


class Fatal(Boom):
    pass


def test_exponential_formula_and_cap() -> None:
    p = RetryPolicy.exponential(max_attempts=10, initial_delay=1.5, max_delay=20.0, multiplier=2.0, jitter=False)
    assert [p.delay(n) for n in range(1, 7)] == [1.5, 3.0, 6.0, 12.0, 20.0, 20.0]
    p3 = RetryPolicy.exponential(initial_delay=1.0, multiplier=3.0, jitter=False)
    assert [p3.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]


def test_exponential_defaults() -> None:
    p = RetryPolicy.exponential()
    assert p.max_attempts == 3 and p.initial_delay == 1.0 and p.max_delay == 300.0
    assert p.multiplier == 2.0 and p.jitter is True


def test_linear_and_custom_and_none() -> None:
    lin = RetryPolicy.linear(4, delay=7.0, jitter=False)
    assert lin.max_attempts == 4
    assert [lin.delay(n) for n in (1, 2, 3)] == [7.0, 7.0, 7.0]
    cus = RetryPolicy.custom(5, lambda n: n * n, max_delay=10.0)
    assert [cus.delay(n) for n in (1, 2, 3, 4)] == [1.0, 4.0, 9.0, 10.0]
    none = RetryPolicy.none()
    assert none.max_attempts == 1
    assert not none.should_retry(1, Boom())


@pytest.mark.parametrize(
    "policy,base",
    [
        (RetryPolicy.exponential(initial_delay=4.0, multiplier=2.0, max_delay=1000.0), lambda n: 4.0 * 2.0 ** (n - 1)),
        (RetryPolicy.linear(5, delay=3.0), lambda n: 3.0),
    ],
)
def test_jitter_within_half_to_full(policy: RetryPolicy, base: object) -> None:
    rng = random.Random(1234)
    for n in (1, 2, 3, 4):
        expected = base(n)  # type: ignore[operator]
        samples = [policy.delay(n, rng.random) for _ in range(400)]
        assert all(0.5 * expected <= s <= expected for s in samples)
        assert max(samples) - min(samples) > 0.3 * expected  # it really varies
    # the bounds themselves
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.5 * base(1))  # type: ignore[operator]
    assert policy.delay(1, lambda: 1.0) == pytest.approx(base(1))  # type: ignore[operator]


def test_jitter_applies_after_cap() -> None:
    p = RetryPolicy.exponential(initial_delay=100.0, max_delay=10.0, jitter=True)
    assert all(5.0 <= p.delay(5) <= 10.0 for _ in range(100))


def test_max_attempts_counts_first_try() -> None:
    p = RetryPolicy.exponential(max_attempts=3)
    assert p.should_retry(1, Boom())
    assert p.should_retry(2, Boom())
    assert not p.should_retry(3, Boom())


def test_non_retryable_on_every_constructor() -> None:
    for p in (
        RetryPolicy.exponential(max_attempts=5, non_retryable=(Fatal,)),
        RetryPolicy.linear(5, 1.0, non_retryable=(Fatal,)),
        RetryPolicy.custom(5, lambda n: 1.0, non_retryable=(Fatal,)),
    ):
        assert not p.should_retry(1, Fatal())
        assert p.should_retry(1, Boom())


def test_invalid_policies() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy.exponential(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy.linear(3, delay=-1.0)
    with pytest.raises(ConfigError):
        RetryPolicy.exponential(multiplier=0.5)
    with pytest.raises(ConfigError):
        RetryPolicy.custom(3, lambda n: -1.0).delay(1)
    with pytest.raises(ValueError):
        RetryPolicy.exponential().delay(0)
