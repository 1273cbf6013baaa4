"""Service-time models: constant, exponential, lognormal, empirical, per-function percentiles, LLM tokens, and batching."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gpuserve.core.errors import ConfigError

__all__ = [
    "Batched",
    "BatchingCurve",
    "Constant",
    "Empirical",
    "Exponential",
    "Lognormal",
    "Percentiles",
    "ServiceTime",
    "Tokens",
    "batching_slowdowns",
    "demand_service_s",
    "load_samples",
]


class ServiceTime(Protocol):
    """Draws n execution times (seconds) at once; the engine buffers them."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    @property
    def mean_s(self) -> float: ...


@dataclass(frozen=True)
class Constant:
    value_s: float

    def __post_init__(self) -> None:
        if not self.value_s >= 0:
            raise ConfigError("value_s", self.value_s, "cannot be negative")

    @property
    def mean_s(self) -> float:
        return self.value_s

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value_s)


@dataclass(frozen=True)
class Exponential:
    mean_s: float

    def __post_init__(self) -> None:
        if not self.mean_s > 0:
            raise ConfigError("mean_s", self.mean_s, "must be positive")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_s, n)


@dataclass(frozen=True)
class Lognormal:
    """Lognormal with the given mean and shape sigma (the std of the underlying normal)."""

    mean_s: float
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if not self.mean_s > 0:
            raise ConfigError("mean_s", self.mean_s, "must be positive")
        if not self.sigma >= 0:
            raise ConfigError("sigma", self.sigma, "cannot be negative")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # E[X] = exp(mu + sigma^2/2), so mu = ln(mean) - sigma^2/2 keeps the stated mean.
        mu = math.log(self.mean_s) - self.sigma**2 / 2
        return rng.lognormal(mu, self.sigma, n)


@dataclass(frozen=True)
class Empirical:
    """Resamples measured execution times uniformly with replacement."""

    samples_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_s:
            raise ConfigError("samples_s", self.samples_s, "needs at least one sample")
        bad = [s for s in self.samples_s if not s >= 0]
        if bad:
            raise ConfigError("samples_s", bad[0], "cannot contain negative values")

    @property
    def mean_s(self) -> float:
        return sum(self.samples_s) / len(self.samples_s)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = np.asarray(self.samples_s, dtype=float)
        return values[rng.integers(0, values.size, n)]


def load_samples(path: Path) -> tuple[float, ...]:
    """Read one number per line (seconds); lines that are not numbers (a header) are skipped."""
    if not path.is_file():
        raise ConfigError("service.path", str(path), "is not a file")
    out = []
    for line in path.read_text().splitlines():
        cell = line.split(",")[0].strip()
        try:
            out.append(float(cell))
        except ValueError:
            continue
    return tuple(out)


@dataclass(frozen=True)
class Percentiles:
    """Draws by interpolating the inverse CDF through published percentiles (Azure 2019's per-function durations).

    `probs` are cumulative probabilities from 0 to 1 and `values_s` the matching quantiles;
    between two points the quantile is linear, so a draw is one `np.interp` of a uniform.
    """

    probs: tuple[float, ...]
    values_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.probs) != len(self.values_s) or len(self.probs) < 2:
            raise ConfigError("service.probs", self.probs, "needs at least two points, one value per probability")
        if self.probs[0] != 0.0 or self.probs[-1] != 1.0 or any(b <= a for a, b in itertools.pairwise(self.probs)):
            raise ConfigError("service.probs", self.probs, "must rise strictly from 0 to 1")
        if not all(v >= 0 for v in self.values_s) or any(b < a for a, b in itertools.pairwise(self.values_s)):
            raise ConfigError("service.values_s", self.values_s, "must be non-negative and non-decreasing")

    @property
    def mean_s(self) -> float:
        # The integral of a piecewise-linear quantile function: one trapezoid per segment.
        p, v = np.asarray(self.probs), np.asarray(self.values_s)
        return float(np.sum(np.diff(p) * (v[1:] + v[:-1]) / 2))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.interp(rng.random(n), self.probs, self.values_s)


@dataclass(frozen=True)
class BatchingCurve:
    """Per-request speed against concurrency on one worker: 1.0 alone, lower as more requests share it.

    `points` are (concurrency, relative speed) pairs, linear in between and flat past the
    ends; a request's service time is divided by the speed at the concurrency it starts at.
    """

    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError("service.batching", self.points, "needs at least one (concurrency, speed) point")
        levels = [c for c, _ in self.points]
        if any(c < 1 for c in levels) or any(b <= a for a, b in itertools.pairwise(levels)):
            raise ConfigError("service.batching", levels, "concurrency levels must be >= 1 and rising")
        bad = [s for _, s in self.points if not s > 0]
        if bad:
            raise ConfigError("service.batching", bad[0], "speeds must be positive")

    def speed(self, concurrency: int) -> float:
        levels = [float(c) for c, _ in self.points]
        speeds = [s for _, s in self.points]
        return float(np.interp(float(concurrency), levels, speeds))


@dataclass(frozen=True)
class Batched:
    """Any service model plus a batching curve (requests that share a worker each run slower)."""

    inner: ServiceTime
    batching: BatchingCurve

    @property
    def mean_s(self) -> float:
        return self.inner.mean_s

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.inner.sample(rng, n)


@dataclass(frozen=True)
class Tokens:
    """An LLM request's time from its tokens: context at the prefill rate plus generated tokens at the decode rate.

    Needs a trace that gives each request its tokens (trace format `azure_llm`); `batching`
    says how much slower each request runs when several share a worker.
    """

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    overhead_s: float = 0.0
    batching: BatchingCurve | None = None

    def __post_init__(self) -> None:
        for name in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"service.{name}", getattr(self, name), "must be positive")
        if not self.overhead_s >= 0:
            raise ConfigError("service.overhead_s", self.overhead_s, "cannot be negative")

    @property
    def mean_s(self) -> float:
        return math.nan  # depends on the trace's tokens

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise ConfigError("service.kind", "tokens", "needs a workload whose requests carry tokens (trace format azure_llm)")

    def job_s(self, demand: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [k for k in ("context_tokens", "generated_tokens") if k not in demand]
        if missing:
            raise ConfigError("service.kind", "tokens", f"needs a workload whose requests carry {missing[0]}")
        context = np.asarray(demand["context_tokens"], dtype=float)
        generated = np.asarray(demand["generated_tokens"], dtype=float)
        out: np.ndarray = self.overhead_s + context / self.prefill_tokens_per_s + generated / self.decode_tokens_per_s
        return out


def demand_service_s(service: ServiceTime, demand: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each traced request's service time (speed 1): from its tokens for `Tokens`, else the trace's own duration."""
    job_s = getattr(service, "job_s", None)
    if job_s is not None:
        out: np.ndarray = job_s(demand)
        return out
    if "duration_s" not in demand:
        raise ConfigError("service", type(service).__name__, f"cannot time requests that carry only {sorted(demand)}")
    return np.asarray(demand["duration_s"], dtype=float)


def batching_slowdowns(service: ServiceTime, capacity: int) -> tuple[float, ...] | None:
    """1/speed at concurrency 1..capacity from the service's batching curve; None without one (speed 1 always)."""
    curve = getattr(service, "batching", None)
    if curve is None:
        return None
    return tuple(1.0 / curve.speed(n) for n in range(1, capacity + 1))
