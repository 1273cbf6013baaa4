"""Read a results folder back (a run, replications or a sweep, CSV or parquet) as typed DataFrames."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gpuserve.core.errors import ConfigError
from gpuserve.experiments.provenance import PROVENANCE_FILE, SCENARIO_FILE
from gpuserve.sim.records import JOB_STATUS_DTYPE, WORKER_STATE_DTYPE

__all__ = ["JOB_STATUS_DTYPE", "TABLES", "WORKER_STATE_DTYPE", "Results", "load_results", "typed"]

# The tables a folder may hold; a run has the first five, replications and sweeps the last two.
TABLES = ("jobs", "intervals", "parked", "workers", "summary", "sweep", "runs")


_CATEGORIES = {"endpoint", "host", "gpu_type"}
_BOOLS = {"cold", "active", "billed", "flash_resumed"}
_JOB_FLAGS = {"load_balancer", "held", "rejected"}  # flags in jobs; `held` and `rejected` are counts in a summary
_INTS = {"job_id", "worker", "gpus", "jobs", "completed", "timed_out", "cancelled", "workers_started",
         "flash_resumes", "point", "replication", "replications", "seed", "lb_requests", "held", "rejected"}  # fmt: skip
_FLOAT = re.compile(r"(_s|_usd|_fraction|_ci95|_gb)$|^mean_")


def typed(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The column types a table has in memory, whatever file it came from: states and statuses
    as categories with every value gpuserve knows, times, costs and fractions as floats, flags as
    bools, counts as ints, ids as strings."""
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if column == "status":
            out[column] = series.astype(str).astype(JOB_STATUS_DTYPE)
        elif column == "state":
            out[column] = series.astype(str).astype(WORKER_STATE_DTYPE)
        elif column in _CATEGORIES and name not in ("summary", "sweep", "runs"):
            out[column] = series.astype("category")
        elif column == "worker_id":
            out[column] = series.astype("string")
        elif column in _BOOLS or (name == "jobs" and column in _JOB_FLAGS):
            out[column] = series.astype(bool)
        elif column in _INTS and pd.api.types.is_numeric_dtype(series) and not series.isna().any():
            out[column] = series.astype("int64")
        elif _FLOAT.search(column) and pd.api.types.is_numeric_dtype(series):
            out[column] = series.astype("float64")
    return out


@dataclass
class Results:
    """One results folder. A run fills jobs, intervals, parked, workers and summary; replications
    fill summary (mean and 95% CI per endpoint) and runs; a sweep fills sweep (one row per
    setting) and runs. `folders` are the runs inside (rep00/, point03/, point03/rep01/), each
    readable with `load_results`; `scenario` is the resolved scenario as run."""

    path: Path
    jobs: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None
    parked: pd.DataFrame | None = None
    workers: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    sweep: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """`sweep`, `replications`, `run`, or `records` (a run's tables without provenance)."""
        if self.sweep is not None:
            return "sweep"
        if self.runs is not None:
            return "replications"
        return "run" if self.provenance else "records"

    @property
    def name(self) -> str:
        return str(self.provenance.get("scenario") or self.scenario.get("name") or self.path.name)

    @property
    def end_s(self) -> float:
        """The simulated span: the scenario's duration, or the last recorded moment if later (drain)."""
        ends = [float(self.scenario.get("duration_s") or 0.0)]
        for frame in (self.intervals, self.jobs):
            if frame is not None and len(frame) and "end_s" in frame:
                ends.append(float(frame["end_s"].max()))
        return max(ends)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def load_results(folder: str | Path) -> Results:
    """Every table in `folder` (CSV or parquet), typed as `typed` says, with its provenance."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError("results folder", str(path), "is not a folder")
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        for suffix in (".parquet", ".csv"):
            file = path / f"{name}{suffix}"
            if file.is_file():
                tables[name] = typed(name, _read(file))
                break
    provenance: dict[str, Any] = {}
    if (path / PROVENANCE_FILE).is_file():
        provenance = yaml.safe_load((path / PROVENANCE_FILE).read_text()) or {}
    scenario: dict[str, Any] = {}
    if (path / SCENARIO_FILE).is_file():
        scenario = yaml.safe_load((path / SCENARIO_FILE).read_text()) or {}
    folders = sorted(p for p in path.glob("point[0-9]*") if p.is_dir())
    folders = [sub for p in folders for sub in (sorted(p.glob("rep[0-9]*")) or [p])]
    folders += sorted(p for p in path.glob("rep[0-9]*") if p.is_dir())
    if not tables and not folders:
        raise ConfigError("results folder", str(path), f"holds no results table ({', '.join(TABLES)}, .csv or .parquet)")
    return Results(path, **tables, provenance=provenance, scenario=scenario, folders=folders)
