"""Backoff: the waits of every retry loop, from the failure count alone."""

from __future__ import annotations

import itertools
import math

import pytest

from gpuserve.core.backoff import Backoff
from gpuserve.core.errors import ConfigError


def test_waits_double_from_the_base_up_to_the_cap() -> None:
    policy = Backoff(0.5, factor=2.0, max_s=30.0)
    assert [policy.delay_s(n) for n in range(0, 9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay_s(-3) == 0.0  # no failure, no wait


def test_a_long_streak_stays_at_the_cap_instead_of_overflowing() -> None:
    assert Backoff(1.0, max_s=60.0).delay_s(5000) == 60.0  # 2.0**4999 does not fit a float
    assert Backoff(1.0).delay_s(5000) == math.inf
    assert Backoff(0.0, max_s=1.0).delay_s(5000) == 0.0


def test_step_adds_per_failure_and_first_comes_before_the_sequence() -> None:
    assert [Backoff(1.0, factor=1.0, step_s=1.0).delay_s(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    quick_first = Backoff(0.5, factor=2.0, max_s=4.0, first_s=0.2)
    assert [quick_first.delay_s(n) for n in range(1, 8)] == [0.2, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_spreads_each_wait_by_the_callers_draw() -> None:
    policy = Backoff(2.0, factor=2.0, max_s=10.0, jitter=0.25)
    assert policy.delay_s(2) == 4.0  # the default draw is the centre: deterministic
    assert policy.delay_s(2, draw=0.0) == 3.0 and policy.delay_s(2, draw=1.0) == 5.0
    assert policy.delay_s(9, draw=1.0) == 12.5  # a quarter around the 10 s cap
    with pytest.raises(ValueError, match=r"draw must be between 0 and 1, was 1\.5"):
        policy.delay_s(1, draw=1.5)


def test_tries_yields_a_wait_per_failed_try_and_none_after_the_last() -> None:
    assert list(Backoff.fixed(10.0, attempts=3).tries()) == [10.0, 10.0, None]
    assert list(Backoff.fixed(10.0, attempts=1).tries()) == [None]
    endless = Backoff(1.0, max_s=4.0).tries()
    assert list(itertools.islice(endless, 5)) == [1.0, 2.0, 4.0, 4.0, 4.0]
    draws = iter([0.0, 1.0])
    assert list(Backoff(1.0, jitter=0.5, attempts=3).tries(lambda: next(draws))) == [0.5, 3.0, None]
    policy = Backoff(1.0, attempts=2)
    assert not policy.gives_up(1) and policy.gives_up(2) and not Backoff(1.0).gives_up(10**6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_s": -3.0}, "base_s cannot be negative, was -3.0"),
        ({"base_s": 1.0, "max_s": -1.0}, "max_s cannot be negative, was -1.0"),
        ({"base_s": 1.0, "step_s": math.nan}, "step_s cannot be negative, was nan"),
        ({"base_s": 1.0, "first_s": -0.1}, "first_s cannot be negative, was -0.1"),
        ({"base_s": 1.0, "factor": 0.5}, "factor must be at least 1 (a back-off never shrinks), was 0.5"),
        ({"base_s": 1.0, "jitter": 2.0}, "jitter must be a fraction between 0 and 1, was 2.0"),
        ({"base_s": 1.0, "attempts": 0}, "attempts must be at least 1, was 0"),
    ],
)
def test_a_bad_setting_names_the_field_and_the_value(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Backoff(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message
