"""Azure Functions 2019: per-minute invocation counts, per-function duration percentiles, per-app memory percentiles.

The dataset (https://github.com/Azure/AzurePublicDataset, AzureFunctionsDataset2019.md) has,
per day dNN, `invocations_per_function_md.anon.dNN.csv` (HashOwner, HashApp, HashFunction,
Trigger, then 1..1440: invocations in each minute), `function_durations_percentiles.anon.dNN.csv`
(Average, Count, Minimum, Maximum and percentile_Average_{0,1,25,50,75,99,100}, in ms) and
`app_memory_percentiles.anon.dNN.csv` (SampleCount, AverageAllocatedMb and its _pct1.._pct100).
Files are read with pandas' C parser into numpy arrays: no Python loop per minute or per count.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError
from gpuserve.sim.service import Percentiles

__all__ = [
    "DURATION_PERCENTILES",
    "ID_COLUMNS",
    "MEMORY_COLUMNS",
    "Invocations2019",
    "read_durations",
    "read_invocations",
    "read_memory",
    "write_synthetic",
    "write_synthetic_durations",
    "write_synthetic_memory",
]

ID_COLUMNS = ["HashOwner", "HashApp", "HashFunction", "Trigger"]
# percentile_Average_P: the P-th weighted percentile of 30-second average durations (ms).
DURATION_PERCENTILES = (0, 1, 25, 50, 75, 99, 100)
MEMORY_COLUMNS = (
    "AverageAllocatedMb",
    *(f"AverageAllocatedMb_pct{p}" for p in (1, 5, 25, 50, 75, 95, 99, 100)),
)


@dataclass(frozen=True, eq=False)
class Invocations2019:
    """One invocation file: ids per function (row) and `counts[function, minute]`."""

    owners: tuple[str, ...]
    apps: tuple[str, ...]
    functions: tuple[str, ...]
    triggers: tuple[str, ...]
    counts: np.ndarray  # int32, shape (functions, minutes)

    def window(self, start_minute: int = 0, minutes: int | None = None) -> np.ndarray:
        """The counts of minutes [start_minute, start_minute + minutes)."""
        end = None if minutes is None else start_minute + minutes
        if start_minute >= self.counts.shape[1]:
            raise ConfigError("trace.start_s", start_minute * 60, f"is past the file's {self.counts.shape[1]} minutes")
        window: np.ndarray = self.counts[:, start_minute:end]
        return window


def _header(path: Path, field: str) -> list[str]:
    if not path.is_file():
        raise ConfigError(field, str(path), "is not a file")
    with path.open(newline="") as fh:
        return next(csv.reader(fh), [])


def _read(path: Path, field: str, dtype: Mapping[str, type[str] | type[np.float64]]) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(field, str(path), f"could not be read ({str(exc).splitlines()[0]})") from None


def read_invocations(path: Path, field: str = "trace.path") -> Invocations2019:
    """Parse `HashOwner,HashApp,HashFunction,Trigger,1..N` (invocations per minute; N is 1440 for a day)."""
    header = _header(path, field)
    minutes = header[4:]
    if header[:4] != ID_COLUMNS:
        raise ConfigError(field, str(path), "does not start with the header HashOwner,HashApp,HashFunction,Trigger,1..1440")
    if not minutes or minutes != [str(i) for i in range(1, len(minutes) + 1)]:
        raise ConfigError(field, str(path), "minute columns must be 1..N")
    frame = _read(path, field, {**{c: str for c in ID_COLUMNS}, **{m: np.float64 for m in minutes}})
    values = frame[minutes].to_numpy()
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values).any(axis=1))[0])
        raise ConfigError(f"{field} line {row + 2}", "", "has an empty count")
    if (values < 0).any() or (values != np.floor(values)).any():
        row = int(np.flatnonzero(((values < 0) | (values != np.floor(values))).any(axis=1))[0])
        raise ConfigError(f"{field} line {row + 2}", values[row][(values[row] < 0) | (values[row] != np.floor(values[row]))][0], "counts must be non-negative integers")
    ids = [tuple(frame[c].fillna("").astype(str)) for c in ID_COLUMNS]
    return Invocations2019(ids[0], ids[1], ids[2], ids[3], values.astype(np.int32))


def read_durations(path: Path, field: str = "trace.durations_path") -> dict[tuple[str, str, str], Percentiles]:
    """Each function's execution time as a Percentiles model (seconds), keyed by (owner, app, function)."""
    header = _header(path, field)
    columns = [f"percentile_Average_{p}" for p in DURATION_PERCENTILES]
    missing = [c for c in ID_COLUMNS[:3] + columns if c not in header]
    if missing:
        raise ConfigError(field, str(path), f"has no column {missing[0]} (a function_durations_percentiles file)")
    frame = _read(path, field, {**{c: str for c in ID_COLUMNS[:3]}, **{c: np.float64 for c in columns}})
    values_ms = frame[columns].to_numpy()
    ok = np.isfinite(values_ms).all(axis=1) & (values_ms >= 0).all(axis=1)
    # Percentiles of averages rise with p; a row that dips (rounding in the export) is made monotone.
    values_s = np.maximum.accumulate(values_ms, axis=1) / 1000.0
    probs = tuple(p / 100 for p in DURATION_PERCENTILES)
    keys = zip(frame["HashOwner"], frame["HashApp"], frame["HashFunction"], strict=True)
    return {key: Percentiles(probs, tuple(row)) for key, row, good in zip(keys, values_s.tolist(), ok.tolist(), strict=True) if good}


def read_memory(path: Path, column: str = "AverageAllocatedMb", field: str = "trace.memory_path") -> dict[tuple[str, str], float]:
    """Each app's memory in GB (the chosen column of MB, over 1024), keyed by (owner, app)."""
    if column not in MEMORY_COLUMNS:
        raise ConfigError("trace.memory_column", column, f"must be one of {', '.join(MEMORY_COLUMNS)}")
    header = _header(path, field)
    missing = [c for c in ["HashOwner", "HashApp", column] if c not in header]
    if missing:
        raise ConfigError(field, str(path), f"has no column {missing[0]} (an app_memory_percentiles file)")
    frame = _read(path, field, {"HashOwner": str, "HashApp": str, column: np.float64})
    mb = frame[column].to_numpy()
    return {
        (owner, app): value / 1024.0
        for owner, app, value in zip(frame["HashOwner"], frame["HashApp"], mb.tolist(), strict=True)
        if math.isfinite(value) and value > 0
    }


def _hashes(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2)).tolist()]


def write_synthetic(
    path: Path, n_functions: int = 8, seed: int = 0, minutes: int = 1440, total_invocations: int | None = None
) -> Path:
    """Write a synthetic invocation file in the 2019 format (for demos, tests and benchmarks).

    Without `total_invocations`, functions mix the trace's typical shapes (steady http, a timer
    every 5 minutes, bursty, rare), each with a diurnal swell. With it, popularity is
    heavy-tailed (Pareto, as in the real trace) and counts are Poisson around a diurnal rate
    that sums to about that many invocations; three functions share each app.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    swell = 1 + 0.6 * np.sin(2 * math.pi * (t - 360) / 1440)
    triggers = ["http", "timer", "queue", "event", "http", "storage", "http", "orchestration"]
    if total_invocations is None:
        rows = []
        for i in range(n_functions):
            kind = i % 4
            if kind == 0:  # steady
                counts = rng.poisson(6.0 * swell)
            elif kind == 1:  # timer: a few calls every 5 minutes
                counts = np.where(t % 5 == 0, 2, 0)
            elif kind == 2:  # bursty: on/off at minute grain
                on = np.convolve((rng.random(minutes) < 0.08).astype(float), np.ones(6), mode="same") > 0
                counts = rng.poisson(on * 20.0 * swell)
            else:  # rare
                counts = rng.poisson(0.15 * swell)
            rows.append(counts)
        matrix = np.vstack(rows) if rows else np.zeros((0, minutes), dtype=np.int64)
        owners, apps, functions = _hashes(rng, n_functions), _hashes(rng, n_functions), _hashes(rng, n_functions)
    else:
        weights = rng.pareto(1.0, n_functions) + 1.0
        weights /= weights.sum()
        shape = swell / swell.sum()
        matrix = rng.poisson(np.outer(weights * total_invocations, shape))
        app_ids = _hashes(rng, (n_functions + 2) // 3)
        owner_ids = _hashes(rng, (n_functions + 5) // 6)
        apps = [app_ids[i // 3] for i in range(n_functions)]
        owners = [owner_ids[i // 6] for i in range(n_functions)]
        functions = _hashes(rng, n_functions)
    frame = pd.DataFrame(matrix.astype(np.int64), columns=[str(m) for m in range(1, minutes + 1)])
    frame.insert(0, "Trigger", [triggers[i % len(triggers)] for i in range(n_functions)])
    frame.insert(0, "HashFunction", functions)
    frame.insert(0, "HashApp", apps)
    frame.insert(0, "HashOwner", owners)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_synthetic_durations(path: Path, invocations: Invocations2019, seed: int = 0) -> Path:
    """A function_durations_percentiles file for every function of `invocations`: lognormal
    durations whose medians spread from ~10 ms to ~10 s (the real trace's range)."""
    rng = np.random.default_rng(seed)
    n = len(invocations.functions)
    median_ms = np.exp(rng.uniform(np.log(10.0), np.log(10_000.0), n))
    sigma = rng.uniform(0.3, 1.5, n)
    z = {0: -3.5, 1: -2.326, 25: -0.674, 50: 0.0, 75: 0.674, 99: 2.326, 100: 3.5}
    frame = pd.DataFrame({"HashOwner": invocations.owners, "HashApp": invocations.apps, "HashFunction": invocations.functions})
    frame["Average"] = median_ms * np.exp(sigma**2 / 2)
    frame["Count"] = invocations.counts.sum(axis=1)
    frame["Minimum"] = median_ms * np.exp(sigma * z[0])
    frame["Maximum"] = median_ms * np.exp(sigma * z[100])
    for p in DURATION_PERCENTILES:
        frame[f"percentile_Average_{p}"] = np.round(median_ms * np.exp(sigma * z[p]), 3)
    frame.to_csv(path, index=False)
    return path


def write_synthetic_memory(path: Path, invocations: Invocations2019, seed: int = 0) -> Path:
    """An app_memory_percentiles file for every app of `invocations` (100 MB to 1.5 GB averages)."""
    rng = np.random.default_rng(seed)
    pairs = sorted(set(zip(invocations.owners, invocations.apps, strict=True)))
    average = rng.uniform(100.0, 1500.0, len(pairs))
    frame = pd.DataFrame({"HashOwner": [o for o, _ in pairs], "HashApp": [a for _, a in pairs]})
    frame["SampleCount"] = rng.integers(10, 10_000, len(pairs))
    frame["AverageAllocatedMb"] = np.round(average, 1)
    for p, factor in zip((1, 5, 25, 50, 75, 95, 99, 100), (0.6, 0.7, 0.9, 1.0, 1.1, 1.3, 1.4, 1.5), strict=True):
        frame[f"AverageAllocatedMb_pct{p}"] = np.round(average * factor, 1)
    frame.to_csv(path, index=False)
    return path
