"""A generic CSV of arrival times (seconds, other units, or ISO-8601), with optional duration and function columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError
from gpuserve.sim.traces.azure_llm import parse_times_s
from gpuserve.sim.traces.table import InvocationTable

__all__ = ["read_arrivals_csv"]


def _is_value(cell: str) -> bool:
    """A data cell, not a column name: a number or a timestamp."""
    try:
        float(cell)
        return True
    except ValueError:
        pass
    try:
        pd.Timestamp(cell)
        return True
    except ValueError:
        return False


def read_arrivals_csv(
    path: Path,
    time_column: str | None = None,
    duration_column: str | None = None,
    function_column: str | None = None,
    time_scale: float = 1.0,
    duration_scale: float = 1.0,
    field: str = "workload",
) -> InvocationTable:
    """Arrivals from one column (numbers times `time_scale` are seconds; text is parsed as ISO-8601),
    shifted so the first is at 0 and sorted. Without `time_column` the first column is used; a
    header row is recognised by a first cell that is neither a number nor a time. With
    `duration_column` each request carries its own service time (`duration_s`, times
    `duration_scale`); with `function_column` rows are grouped into functions."""
    if not path.is_file():
        raise ConfigError(f"{field}.path", str(path), "is not a file")
    with path.open() as fh:
        first = fh.readline().strip()
    if not first:
        raise ConfigError(f"{field}.path", str(path), "is empty")
    has_header = not _is_value(first.split(",")[0].strip())
    named = [c for c in (time_column, duration_column, function_column) if c is not None]
    if named and not has_header:
        raise ConfigError(f"{field}.path", str(path), f"needs a header row to find the column {named[0]!r}")
    try:
        frame = pd.read_csv(path, header=0 if has_header else None, dtype=str, skip_blank_lines=True, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"{field}.path", str(path), f"could not be read ({str(exc).splitlines()[0]})") from None
    columns = [str(c) for c in frame.columns]
    frame.columns = pd.Index(columns)
    for key, column in (("column", time_column), ("duration_column", duration_column), ("function_column", function_column)):
        if column is not None and column not in columns:
            raise ConfigError(f"{field}.{key}", column, f"is not a column of {path} (columns: {', '.join(columns)})")
    raw_times = frame[time_column or columns[0]].str.strip()
    keep = (raw_times != "").to_numpy()
    frame, raw_times = frame[keep], raw_times[keep]
    numbers = pd.to_numeric(raw_times, errors="coerce")
    if numbers.notna().all():
        times = numbers.to_numpy(dtype=float) * time_scale
        times = times - (times.min() if times.size else 0.0)
    elif numbers.notna().any():
        row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise ConfigError(f"{field}.path line {row + 1 + has_header}", raw_times.iloc[row], "is not a number (the column holds numbers)")
    else:
        times = parse_times_s(raw_times, f"{field}.path")
    demand: dict[str, np.ndarray] = {}
    if duration_column is not None:
        durations = pd.to_numeric(frame[duration_column], errors="coerce").to_numpy(dtype=float) * duration_scale
        bad = ~(np.isfinite(durations) & (durations >= 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"{field}.path line {row + 1 + has_header}", frame[duration_column].iloc[row], "duration must be a number >= 0")
        demand["duration_s"] = durations
    if function_column is not None:
        codes, names = pd.factorize(frame[function_column])
        functions = tuple(str(n) for n in names)
    else:
        codes, functions = np.zeros(times.size, dtype=np.int64), (path.stem,)
    order = np.argsort(times, kind="stable")
    return InvocationTable(
        times[order], codes[order].astype(np.int32), functions, ("",) * len(functions), {k: v[order] for k, v in demand.items()}
    )
