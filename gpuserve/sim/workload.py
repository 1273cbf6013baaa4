"""Arrival processes: Poisson, bursty (on/off MMPP), diurnal, fixed replays, per-minute counts and traced requests.

The trace files themselves are read by gpuserve.sim.traces; the workloads here turn what
they hold into arrival times (and, for per-request traces, each request's own demand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from gpuserve.core.errors import ConfigError

__all__ = [
    "AzureCounts",
    "Bursty",
    "Diurnal",
    "Poisson",
    "Replay",
    "TraceReplay",
    "Workload",
    "draw_jobs",
    "spread_minute_counts",
]


class Workload(Protocol):
    """An arrival process: all arrival times in [0, duration_s), sorted, drawn from `rng`."""

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray: ...

    @property
    def mean_rate_per_s(self) -> float: ...


def _poisson_times(rng: np.random.Generator, rate_per_s: float, start_s: float, end_s: float) -> np.ndarray:
    """Homogeneous Poisson arrivals on [start_s, end_s): a Poisson count, then sorted uniforms.

    Conditioned on its count a Poisson process is iid uniform, which vectorises in one call
    (1e6 arrivals in ~30 ms) instead of a Python loop over exponential gaps.
    """
    span_s = end_s - start_s
    if rate_per_s <= 0 or span_s <= 0:
        return np.empty(0)
    n = int(rng.poisson(rate_per_s * span_s))
    times = start_s + rng.random(n) * span_s
    times.sort()
    return times


@dataclass(frozen=True)
class Poisson:
    rate_per_s: float

    def __post_init__(self) -> None:
        if not self.rate_per_s >= 0:
            raise ConfigError("rate_per_s", self.rate_per_s, "cannot be negative")

    @property
    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        return _poisson_times(rng, self.rate_per_s, 0.0, duration_s)


@dataclass(frozen=True)
class Bursty:
    """Two-state MMPP (on/off): Poisson at rate_on_per_s during exponential ON periods, rate_off_per_s otherwise."""

    rate_on_per_s: float
    rate_off_per_s: float = 0.0
    mean_on_s: float = 60.0
    mean_off_s: float = 600.0
    start_on: bool = False

    def __post_init__(self) -> None:
        for name in ("rate_on_per_s", "rate_off_per_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, getattr(self, name), "cannot be negative")
        for name in ("mean_on_s", "mean_off_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, getattr(self, name), "must be positive")

    @property
    def mean_rate_per_s(self) -> float:
        on_share = self.mean_on_s / (self.mean_on_s + self.mean_off_s)
        return on_share * self.rate_on_per_s + (1 - on_share) * self.rate_off_per_s

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        parts: list[np.ndarray] = []
        t_s, on = 0.0, self.start_on
        while t_s < duration_s:
            length_s = float(rng.exponential(self.mean_on_s if on else self.mean_off_s))
            end_s = min(duration_s, t_s + length_s)
            parts.append(_poisson_times(rng, self.rate_on_per_s if on else self.rate_off_per_s, t_s, end_s))
            t_s, on = end_s, not on
        return np.concatenate(parts) if parts else np.empty(0)


@dataclass(frozen=True)
class Diurnal:
    """Sinusoidal rate mean*(1 + amplitude*sin(2*pi*(t - phase_s)/period_s)), drawn by thinning."""

    mean_rate_per_s: float
    amplitude: float = 0.8
    period_s: float = 86_400.0
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.mean_rate_per_s >= 0:
            raise ConfigError("mean_rate_per_s", self.mean_rate_per_s, "cannot be negative")
        if not 0 <= self.amplitude <= 1:
            raise ConfigError("amplitude", self.amplitude, "must be between 0 and 1")
        if not self.period_s > 0:
            raise ConfigError("period_s", self.period_s, "must be positive")

    def rate_at(self, t_s: np.ndarray) -> np.ndarray:
        return self.mean_rate_per_s * (1 + self.amplitude * np.sin(2 * math.pi * (t_s - self.phase_s) / self.period_s))

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        # Thinning (Lewis & Shedler): candidates at the peak rate, each kept with rate(t)/peak.
        peak = self.mean_rate_per_s * (1 + self.amplitude)
        candidates = _poisson_times(rng, peak, 0.0, duration_s)
        if peak <= 0:
            return candidates
        keep = rng.random(candidates.size) * peak < self.rate_at(candidates)
        return candidates[keep]


@dataclass(frozen=True)
class Replay:
    """Fixed arrival times (a CSV of timestamps, or one Azure function's minute counts already spread)."""

    times_s: tuple[float, ...]

    @property
    def mean_rate_per_s(self) -> float:
        if len(self.times_s) < 2:
            return 0.0
        return len(self.times_s) / max(self.times_s[-1] - self.times_s[0], 1e-9)

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        times = np.asarray(self.times_s, dtype=float)
        return times[(times >= 0) & (times < duration_s)]


def spread_minute_counts(
    counts: tuple[int, ...] | np.ndarray,
    rng: np.random.Generator,
    spread: Literal["uniform", "poisson", "even"] = "uniform",
) -> np.ndarray:
    """Turn per-minute counts into arrival times in seconds.

    uniform: each minute's count placed at iid uniform times in the minute (the order
    statistics of a Poisson process conditioned on that count); poisson: a Poisson process at
    rate count/60 within each minute (the count itself varies); even: evenly spaced.
    """
    counts_arr = np.asarray(counts, dtype=np.int64)
    if spread == "poisson":
        counts_arr = rng.poisson(counts_arr)
    minute_start = np.repeat(np.arange(counts_arr.size) * 60.0, counts_arr)
    if spread == "even":
        # Rank of each arrival within its minute, without a Python loop over minutes.
        per_arrival = np.repeat(counts_arr, counts_arr)
        first = np.repeat(np.cumsum(counts_arr) - counts_arr, counts_arr)
        offsets = (np.arange(minute_start.size) - first + 0.5) * 60.0 / np.maximum(per_arrival, 1)
    else:
        offsets = rng.random(minute_start.size) * 60.0
    times: np.ndarray = minute_start + offsets
    times.sort()
    return times


@dataclass(frozen=True)
class AzureCounts:
    """One Azure function's per-minute counts, spread into arrival times with the endpoint's own stream."""

    counts_per_minute: tuple[int, ...] | np.ndarray
    spread: Literal["uniform", "poisson", "even"] = "uniform"
    sample: float = 1.0  # the fraction of invocations kept (each one independently)

    def __post_init__(self) -> None:
        if not 0 < self.sample <= 1:
            raise ConfigError("sample", self.sample, "must be in (0, 1]")

    @property
    def mean_rate_per_s(self) -> float:
        return self.sample * float(np.sum(self.counts_per_minute)) / (60.0 * max(1, len(self.counts_per_minute)))

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        counts = np.asarray(self.counts_per_minute, dtype=np.int64)
        if self.sample < 1:
            counts = rng.binomial(counts, self.sample)
        times = spread_minute_counts(counts, rng, self.spread)
        kept: np.ndarray = times[times < duration_s]
        return kept


@dataclass(frozen=True, eq=False)
class TraceReplay:
    """Traced requests: fixed arrival times, each with its own demand (a duration, or tokens), optionally sampled.

    `demand` maps a name (`duration_s`, `context_tokens`, `generated_tokens`) to one value per
    arrival; the endpoint's service model turns it into a service time
    (gpuserve.sim.service.demand_service_s). Without demand the service model draws as usual.
    """

    times_s: np.ndarray
    demand: Mapping[str, np.ndarray] = field(default_factory=dict)
    sample: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.sample <= 1:
            raise ConfigError("sample", self.sample, "must be in (0, 1]")
        for name, values in self.demand.items():
            if len(values) != len(self.times_s):
                raise ConfigError(f"demand.{name}", len(values), f"must have one value per arrival ({len(self.times_s)})")

    @property
    def end_s(self) -> float:
        return float(self.times_s[-1]) if len(self.times_s) else 0.0

    @property
    def mean_rate_per_s(self) -> float:
        if len(self.times_s) < 2:
            return 0.0
        return self.sample * len(self.times_s) / max(float(self.times_s[-1] - self.times_s[0]), 1e-9)

    def arrivals_and_demand(self, rng: np.random.Generator, duration_s: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        times = np.asarray(self.times_s, dtype=float)
        keep = (times >= 0) & (times < duration_s)
        if self.sample < 1:
            keep &= rng.random(times.size) < self.sample
        return times[keep], {name: np.asarray(v)[keep] for name, v in self.demand.items()}

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        return self.arrivals_and_demand(rng, duration_s)[0]


def draw_jobs(workload: Workload, rng: np.random.Generator, duration_s: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A workload's arrivals in [0, duration_s) and each one's traced demand (empty for synthetic workloads)."""
    traced = getattr(workload, "arrivals_and_demand", None)
    if traced is not None:
        times, demand = traced(rng, duration_s)
        return np.asarray(times, dtype=float), dict(demand)
    return np.asarray(workload.arrivals(rng, duration_s), dtype=float), {}
