"""Waits between tries of something that fails: one frozen `Backoff` for every retry loop and crash back-off.

Pure: it computes waits and never sleeps or reads a clock; the caller sleeps (`time.sleep`,
`asyncio.sleep`) or compares timestamps (`next_start_s = now_s + policy.delay_s(streak)`).
A wait is a function of how many tries in a row have failed, so a loop keeps only that count:

    policy = Backoff(0.5, factor=2.0, max_s=30.0)   # 0.5, 1, 2, 4, 8, 16, 30, 30 ... s
    policy.delay_s(0)                                # 0.0: nothing failed, nothing to wait for
    policy.delay_s(3)                                # 2.0: the wait after the third failure in a row

    webhook = Backoff.fixed(10.0, attempts=3)        # one POST and two retries, 10 s apart
    for wait_s in webhook.tries():                   # 10.0, 10.0, then None after the last try
        if post():
            break
        if wait_s is None:
            give_up()
            break
        sleep(wait_s)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gpuserve.core.errors import ConfigError

__all__ = ["CRASH_BACKOFF", "HEALTHY_LIFETIME_S", "Backoff", "crash_streak_after"]


def _centre() -> float:
    return 0.5


@dataclass(frozen=True)
class Backoff:
    """The wait after `failures` consecutive failures, and how many tries to make in all.

    After the n-th failure in a row the wait is `base_s * factor**(n-1) + step_s * (n-1)`,
    capped at `max_s`: `Backoff(1.0, 2.0, 60.0)` waits 1, 2, 4, ... 32, 60, 60 s, and
    `Backoff(1.0, factor=1.0, step_s=1.0)` waits 1, 2, 3 s. `first_s`, when set, is one quicker
    wait put before that sequence: `Backoff(0.5, 2.0, 4.0, first_s=0.2)` waits 0.2, 0.5, 1, 2, 4 s
    (a POST whose connection dropped usually goes through at once). `jitter` spreads each
    wait by up to that fraction either way, from a draw in [0, 1] that the caller makes
    (`random.random()`); the default draw 0.5 is the unspread wait, so the policy stays
    deterministic. `attempts` bounds the tries, the first one included; None tries forever.
    """

    base_s: float
    factor: float = 2.0
    max_s: float = math.inf
    jitter: float = 0.0
    step_s: float = 0.0
    first_s: float | None = None
    attempts: int | None = None

    def __post_init__(self) -> None:
        for name in ("base_s", "max_s", "step_s"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ConfigError(name, value, "cannot be negative")
        if self.first_s is not None and not self.first_s >= 0:
            raise ConfigError("first_s", self.first_s, "cannot be negative")
        if not self.factor >= 1:
            raise ConfigError("factor", self.factor, "must be at least 1 (a back-off never shrinks)")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter", self.jitter, "must be a fraction between 0 and 1")
        if self.attempts is not None and self.attempts < 1:
            raise ConfigError("attempts", self.attempts, "must be at least 1")

    @classmethod
    def fixed(cls, delay_s: float, attempts: int | None = None) -> Backoff:
        """The same wait after every failure, e.g. `Backoff.fixed(10.0, attempts=3)` for Runpod's webhooks."""
        return cls(delay_s, factor=1.0, attempts=attempts)

    def delay_s(self, failures: int, draw: float = 0.5) -> float:
        """Seconds to wait after `failures` consecutive failures (0 for none); `draw` in [0, 1] places the jitter."""
        if not 0 <= draw <= 1:
            raise ValueError(f"draw must be between 0 and 1, was {draw}")
        if failures <= 0:
            return 0.0
        n = failures - 1
        if self.first_s is not None:
            if n == 0:
                return self._spread(min(self.max_s, self.first_s), draw)
            n -= 1
        try:
            grown = self.base_s * self.factor**n if self.base_s else 0.0
        except OverflowError:  # 2.0**1024 does not fit a float; the cap (if any) is what counts
            grown = math.inf
        return self._spread(min(self.max_s, grown + self.step_s * n), draw)

    def _spread(self, wait_s: float, draw: float) -> float:
        if not self.jitter or math.isinf(wait_s):
            return wait_s
        return wait_s * (1.0 + self.jitter * (2.0 * draw - 1.0))

    def gives_up(self, failures: int) -> bool:
        """True once `failures` tries in a row have failed and no try is left."""
        return self.attempts is not None and failures >= self.attempts

    def tries(self, draw: Callable[[], float] = _centre) -> Iterator[float | None]:
        """One item per try, in order: the wait before the next try should this one fail, None after the last.

        Endless when `attempts` is None. `draw` is called once per wait (pass `random.random`
        to spread them).
        """
        failures = 0
        while True:
            failures += 1
            if self.gives_up(failures):
                yield None
                return
            yield self.delay_s(failures, draw())


# Restarts after a worker crash, shared by the process backend and the simulator: no wait
# before the first spawn, then 1, 2, 4, ... s after each crash in a row, capped at 60 s
# (doubling from 1 s reaches the cap after 7 crashes in a row).
CRASH_BACKOFF = Backoff(1.0, factor=2.0, max_s=60.0)
HEALTHY_LIFETIME_S = 60.0  # a worker that crashes after living this long resets the streak


def crash_streak_after(streak: int, lived_s: float) -> int:
    """Crashes in a row once a worker that lived `lived_s` crashes: a long-lived one starts a new streak."""
    return 1 if lived_s >= HEALTHY_LIFETIME_S else streak + 1
