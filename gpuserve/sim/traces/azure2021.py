"""Azure Functions 2021: one row per invocation (`app, func, end_timestamp, duration`), each with its own duration.

The dataset (https://github.com/Azure/AzurePublicDataset, AzureFunctionsInvocationTrace2021.md)
is one file, AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt: `app` and `func` are hashed
ids (`func` unique only within its app), `end_timestamp` is when the invocation ended and
`duration` how long it ran, both in seconds. Arrival = end_timestamp - duration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError
from gpuserve.sim.traces.table import InvocationTable

__all__ = ["COLUMNS", "read_invocations_2021", "write_synthetic_2021"]

COLUMNS = ["app", "func", "end_timestamp", "duration"]


def read_invocations_2021(path: Path, field: str = "trace.path") -> InvocationTable:
    """Every invocation as (arrival, function, duration_s), sorted by arrival, the first at 0."""
    if not path.is_file():
        raise ConfigError(field, str(path), "is not a file")
    with path.open() as fh:
        first = fh.readline()
    sep = "\t" if "\t" in first and "," not in first else ","
    header = [c.strip() for c in first.strip().split(sep)]
    if header[:4] != COLUMNS:
        raise ConfigError(field, str(path), f"does not start with the header {','.join(COLUMNS)}")
    try:
        frame = pd.read_csv(path, sep=sep, usecols=COLUMNS, dtype={"app": str, "func": str, "end_timestamp": np.float64, "duration": np.float64})
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(field, str(path), f"could not be read ({str(exc).splitlines()[0]})") from None
    end = frame["end_timestamp"].to_numpy()
    duration = frame["duration"].to_numpy()
    bad = ~(np.isfinite(end) & np.isfinite(duration) & (duration >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{field} line {row + 2}", [end[row], duration[row]], "end_timestamp and duration must be numbers, duration >= 0")
    arrival = end - duration
    # A function is (app, func): func ids repeat across apps.
    keys = pd.MultiIndex.from_arrays([frame["app"].fillna(""), frame["func"].fillna("")])
    codes, uniques = pd.factorize(keys)
    order = np.argsort(arrival, kind="stable")
    times = arrival[order]
    return InvocationTable(
        times - (times[0] if times.size else 0.0),
        codes[order].astype(np.int32),
        tuple(f for _, f in uniques),
        tuple(a for a, _ in uniques),
        {"duration_s": duration[order]},
    )


def write_synthetic_2021(path: Path, n_functions: int = 4, invocations: int = 200, span_s: float = 3600.0, seed: int = 0) -> Path:
    """A small file in the 2021 format: Poisson arrivals over `span_s`, lognormal durations per function."""
    rng = np.random.default_rng(seed)
    fn = rng.integers(0, n_functions, invocations)
    apps = [f"{a:064x}" for a in rng.integers(0, 2**62, n_functions).tolist()]
    funcs = [f"{a:064x}" for a in rng.integers(0, 2**62, n_functions).tolist()]
    arrival = np.sort(rng.random(invocations) * span_s) + 5000.0  # the real file's clock does not start at 0
    duration = np.round(rng.lognormal(np.log(0.2) + fn * 0.5, 0.6), 3)
    frame = pd.DataFrame(
        {"app": [apps[i] for i in fn], "func": [funcs[i] for i in fn], "end_timestamp": arrival + duration, "duration": duration}
    )
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)  # the real file is ordered by end, not arrival
    return path
