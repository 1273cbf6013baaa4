"""Failures and rolling updates in the simulator: worker crashes (per start, per running hour, traced), host failures, updates.

A crashed worker goes UNHEALTHY (never billed by the presets) and the job it held is
requeued, or ends FAILED past `max_retries`, as the live runtime does. Its replacement then
waits its slot's crash back-off, as the live backends' do (`core.crashslots.CrashSlots` over
`core.backoff.CRASH_BACKOFF`: 1, 2, 4, ... 60 s after each crash in a row of that slot; a worker
that lived 60 s resets the streak); other starts of the endpoint wait nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core.errors import ConfigError

__all__ = ["FAILING_STREAK", "FailureModel", "HostFailure", "Update"]

# An endpoint whose workers crash this many times in a row is shown as failing in the summary.
FAILING_STREAK = 3


@dataclass(frozen=True)
class FailureModel:
    """How one endpoint's workers crash.

    - `crash_per_start`: probability that a start fails before the worker is ready (a bad
      image, a fitness check, out of memory while loading); it crashes when it would be ready.
    - `crash_per_running_hour`: crashes per hour a worker spends RUNNING (a Poisson rate:
      1.0 crashes a worker after an hour of work on average).
    - `crash_times_s`: a trace of failure times; at each, one worker of the endpoint crashes
      (a busy one first, the oldest among equals), if it has any.
    """

    crash_per_start: float = 0.0
    crash_per_running_hour: float = 0.0
    crash_times_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.crash_per_start, int | float) and 0 <= self.crash_per_start <= 1):
            raise ConfigError("failures.crash_per_start", self.crash_per_start, "must be a probability between 0 and 1")
        if not (isinstance(self.crash_per_running_hour, int | float) and 0 <= self.crash_per_running_hour < math.inf):
            raise ConfigError("failures.crash_per_running_hour", self.crash_per_running_hour, "cannot be negative")
        times = tuple(float(t) for t in self.crash_times_s)
        for t in times:
            if not t >= 0:
                raise ConfigError("failures.crash_times_s", t, "cannot be negative")
        object.__setattr__(self, "crash_times_s", tuple(sorted(times)))

    @property
    def enabled(self) -> bool:
        return bool(self.crash_per_start or self.crash_per_running_hour or self.crash_times_s)


@dataclass(frozen=True)
class HostFailure:
    """At `at_s` the host fails: every worker on it crashes; it takes no worker for `down_s`."""

    host: str
    at_s: float
    down_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.at_s >= 0:
            raise ConfigError("host_failures.at_s", self.at_s, "cannot be negative")
        if not self.down_s >= 0:
            raise ConfigError("host_failures.down_s", self.down_s, "cannot be negative")


@dataclass(frozen=True)
class Update:
    """A rolling update of one endpoint at `at_s`: its workers turn OUTDATED and are replaced.

    Idle and starting workers stop at once; a busy one is OUTDATED (billed while it
    finishes its jobs, then stopped) and takes no new job. Replacements start through the
    normal cold start, as the policy asks for them.
    """

    at_s: float
    endpoint: str

    def __post_init__(self) -> None:
        if not self.at_s >= 0:
            raise ConfigError("updates.at_s", self.at_s, "cannot be negative")
