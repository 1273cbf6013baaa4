"""Per-job options of the live API in a simulated workload: executionTimeout, ttl, lowPriority, cancel, /runsync waits.

A workload says which fraction of its jobs carries each option; the engine draws, per job,
from its own random stream (so adding options never shifts arrivals or service times):

    JobOptions(low_priority_fraction=0.2, ttl_s=30.0, cancel_fraction=0.1, patience=Constant(20.0))

- `execution_timeout_s` on `execution_timeout_fraction` of jobs replaces the endpoint's
  timeout (Runpod's `policy.executionTimeout`): a longer run ends TIMED_OUT at the limit.
- `ttl_s` on `ttl_fraction` of jobs (Runpod's `policy.ttl`, from submission, queue time
  included): a job not ended by then is discarded, even mid-run, and recorded CANCELLED
  with end reason `ttl_expired` (the live server deletes it; /status answers 404).
- `low_priority_fraction` of jobs are lowPriority: they never trigger scale-up.
- `cancel_fraction` of clients cancel after a patience drawn from `patience` (seconds from
  submission) if the job has not ended: CANCELLED, end reason `client_cancel`.
- `runsync_fraction` of clients wait on /runsync for `runsync_wait_s` (Runpod: 90 s); one
  whose job ends later gives up (`client_gave_up`); the job itself runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuserve.core.errors import ConfigError
from gpuserve.sim.service import ServiceTime

__all__ = ["JobDraws", "JobOptions"]


def _fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 <= value <= 1):
        raise ConfigError(f"jobs.{name}", value, "must be a fraction between 0 and 1")


@dataclass(frozen=True)
class JobDraws:
    """Each job's options, drawn for one endpoint's arrivals (arrays of the arrivals' length)."""

    execution_timeout_s: np.ndarray | None  # NaN: the endpoint's timeout
    expires_s: np.ndarray | None  # absolute time the ttl discards the job; inf: never
    low_priority: np.ndarray | None  # bool
    cancel_at_s: np.ndarray | None  # absolute time the client cancels; inf: never
    runsync: np.ndarray | None  # bool


@dataclass(frozen=True)
class JobOptions:
    execution_timeout_s: float | None = None
    execution_timeout_fraction: float = 1.0
    ttl_s: float | None = None
    ttl_fraction: float = 1.0
    low_priority_fraction: float = 0.0
    cancel_fraction: float = 0.0
    patience: ServiceTime | None = None
    runsync_fraction: float = 0.0
    runsync_wait_s: float = 90.0

    def __post_init__(self) -> None:
        for name in ("execution_timeout_fraction", "ttl_fraction", "low_priority_fraction", "cancel_fraction", "runsync_fraction"):
            _fraction(name, getattr(self, name))
        if self.execution_timeout_s is not None and not self.execution_timeout_s > 0:
            raise ConfigError("jobs.execution_timeout_s", self.execution_timeout_s, "must be positive")
        if self.ttl_s is not None and not self.ttl_s > 0:
            raise ConfigError("jobs.ttl_s", self.ttl_s, "must be positive")
        if self.cancel_fraction > 0 and self.patience is None:
            raise ConfigError("jobs.patience", None, "is required when cancel_fraction is above 0")
        if not self.runsync_wait_s > 0:
            raise ConfigError("jobs.runsync_wait_s", self.runsync_wait_s, "must be positive")

    @property
    def enabled(self) -> bool:
        return bool(
            self.execution_timeout_s is not None
            or self.ttl_s is not None
            or self.low_priority_fraction
            or self.cancel_fraction
            or self.runsync_fraction
        )

    def draw(self, rng: np.random.Generator, arrival_s: np.ndarray) -> JobDraws:
        """Every option for jobs arriving at `arrival_s`, from `rng` (one stream per endpoint)."""
        n = arrival_s.size

        def carried(fraction: float) -> np.ndarray:
            return np.ones(n, dtype=bool) if fraction >= 1 else rng.random(n) < fraction

        timeout = expires = low = cancel = runsync = None
        if self.execution_timeout_s is not None:
            timeout = np.where(carried(self.execution_timeout_fraction), self.execution_timeout_s, np.nan)
        if self.ttl_s is not None:
            expires = np.where(carried(self.ttl_fraction), arrival_s + self.ttl_s, np.inf)
        if self.low_priority_fraction:
            low = carried(self.low_priority_fraction)
        if self.cancel_fraction and self.patience is not None:
            patience = self.patience.sample(rng, n) if n else np.zeros(0)
            cancel = np.where(carried(self.cancel_fraction), arrival_s + patience, np.inf)
        if self.runsync_fraction:
            runsync = carried(self.runsync_fraction)
        return JobDraws(timeout, expires, low, cancel, runsync)
