"""Service-time models: constant, exponential, lognormal and empirical (resampled) execution times."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gpuserve.core.errors import ConfigError

__all__ = ["Constant", "Empirical", "Exponential", "Lognormal", "ServiceTime", "load_samples"]


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
