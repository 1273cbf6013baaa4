"""Run one scenario in the simulator and write its records and plots to a results folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gpuserve.config.scenario import Scenario
from gpuserve.core.errors import ConfigError
from gpuserve.sim.engine import RawRecords, Simulation
from gpuserve.sim.records import SimResult, build_result, summary_of
from gpuserve.sim.shards import run_sharded

__all__ = ["RECORDS", "FileProgress", "Progress", "Records", "check_records", "run_scenario", "write_run", "write_table"]

# progress(now_s, horizon_s): simulated seconds done out of the run's horizon.
Progress = Callable[[float, float], None]
# on_file(name): called before each file is written (records, then plots), for a progress display.
FileProgress = Callable[[str], None]

# How much of a run is written: every table, the summary only, or no table (provenance and plots still are).
Records = Literal["all", "summary", "none"]
RECORDS: tuple[Records, ...] = ("all", "summary", "none")
_RUN_TABLES = ("jobs", "intervals", "parked", "workers", "summary")


def check_records(records: str) -> Records:
    for known in RECORDS:
        if records == known:
            return known
    raise ConfigError("records", records, f"must be one of {', '.join(RECORDS)}")


def run_scenario(
    scenario: Scenario,
    progress: Progress | None = None,
    processes: int = 1,
    tables: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> SimResult:
    """Simulate the scenario once; the result holds per-job records, worker intervals and the summary.

    `processes` > 1 splits endpoints that share nothing over that many processes (gpuserve.sim.
    shards: the same records as one process; `on_note` hears how it ran, or why in one).
    `tables=False` builds the summary only: the jobs, intervals and parked tables come back
    empty (what `--records summary` without plots writes needs no more)."""
    if processes > 1:
        sharded = run_sharded(scenario.config, processes)
        if on_note:
            on_note(sharded.note)
        raw = sharded.records
        if progress:
            progress(raw.end_s, raw.end_s)
    else:
        raw = Simulation(scenario.config).run(progress=progress)
    if tables:
        return build_result(raw)
    summary = summary_of(raw)
    empty = build_result(_no_rows(raw))
    return SimResult(empty.jobs, empty.intervals, empty.workers, summary, raw.end_s, raw.controller_calls, empty.parked)


def _no_rows(raw: RawRecords) -> RawRecords:
    """The same run's records with no job, interval, parked or worker row (the tables' columns, typed)."""
    empty_f: list[float] = []
    empty_i: list[int] = []
    return RawRecords(
        endpoint_ids=raw.endpoint_ids, job_endpoint=np.zeros(0, dtype=np.int32), job_arrival_s=np.zeros(0),
        job_start_s=empty_f, job_end_s=empty_f, job_worker=empty_i, job_cold=empty_i, job_status=empty_i,
        iv_worker=empty_i, iv_state=empty_i, iv_start_s=empty_f, iv_end_s=empty_f, iv_active=empty_i,
        workers=[], end_s=raw.end_s, config=raw.config, controller_calls=raw.controller_calls,
    )


def write_table(frame: pd.DataFrame, path: Path, fmt: Literal["csv", "parquet"]) -> Path:
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def write_run(
    result: SimResult,
    out_dir: Path,
    fmt: Literal["csv", "parquet"] = "csv",
    plots: bool = True,
    records: Records = "all",
    scenario: str | None = None,
    on_file: FileProgress | None = None,
) -> list[Path]:
    """Write jobs, intervals, parked, workers and summary tables (`records="summary"`: the summary
    only; `"none"`: no table) and the PNG plots, titled with `scenario`, under out_dir."""
    names = {"all": _RUN_TABLES, "summary": ("summary",), "none": ()}[check_records(records)]
    if names:
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        if on_file:
            on_file(f"{name}.{fmt}")
        paths.append(write_table(getattr(result, name), out_dir / f"{name}.{fmt}", fmt))
    if plots:
        # matplotlib is imported only when plots are asked for: a sweep of 100 points need not pay for it.
        from gpuserve.sim.plots import plot_run

        if on_file:
            on_file("plots")
        paths += plot_run(result, out_dir, scenario=scenario)
    return paths
