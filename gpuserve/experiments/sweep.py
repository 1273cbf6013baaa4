"""Sweeps and replications over a scenario: one row per setting (mean and 95% CI over replications) and its results folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from gpuserve.config.scenario import Scenario, apply_overrides, sweep_points
from gpuserve.core.errors import ConfigError
from gpuserve.experiments.replicate import RunTask, TaskProgress, aggregate, replication_seeds, run_tasks
from gpuserve.experiments.run import Records, write_run, write_table
from gpuserve.sim.records import SimResult

__all__ = ["Replicated", "SweepProgress", "SweepResult", "run_replicated", "run_sweep", "write_replicated", "write_sweep"]

# progress(task, tasks, now_s, horizon_s): task index from 0, then simulated seconds within it
# (in parallel runs, whole tasks: now_s == horizon_s as each one finishes).
SweepProgress = TaskProgress

# Scenario keys that make no sense to sweep, and what to use instead.
_NOT_SWEPT = {
    "seed": "use --replications N (or `replications: N`): N seeds derived from the base seed, "
    "with the mean and 95% confidence interval of every metric",
    "replications": "set it once, for every setting",
    "sweep": "a sweep cannot sweep itself",
}


@dataclass
class SweepResult:
    """A sweep's data. `table`: one row per setting, a column per swept parameter, `point` (its
    index, the pointNN/ folder), `setting` (a label), `replications`, then every summary metric (the mean over replications, with
    `<metric>_ci95` beside it when there are several). `runs`: one row per run (setting,
    replication, seed, metrics). `results`: every run's records, setting-major."""

    table: pd.DataFrame
    runs: pd.DataFrame
    results: list[SimResult]
    params: list[str]
    replications: int = 1
    seeds: list[int] = field(default_factory=list)
    records_written: bool = False  # each run's folder was written where it ran (run_sweep's records_dir)


@dataclass
class Replicated:
    """N replications of one scenario. `summary`: per endpoint (and ALL), the mean and 95% CI of
    each metric; `runs`: every replication's summary rows with `replication` and `seed`."""

    summary: pd.DataFrame
    runs: pd.DataFrame
    results: list[SimResult]
    seeds: list[int]
    records_written: bool = False


def _check_sweep(sweep: dict[str, list[Any]]) -> None:
    for key in sweep:
        if key in _NOT_SWEPT:
            raise ConfigError(f"sweep.{key}", sweep[key], f"cannot be swept: {_NOT_SWEPT[key]}")


def run_sweep(
    scenario: Scenario,
    sweep: dict[str, list[Any]],
    progress: SweepProgress | None = None,
    seed: int | None = None,
    replications: int | None = None,
    jobs: int = 1,
    records_dir: Path | None = None,
    fmt: Literal["csv", "parquet"] = "csv",
    records: Records = "all",
    ray_address: str | None = None,
) -> SweepResult:
    """Run every point of the sweep, `replications` times each (default: the scenario's), in `jobs`
    processes (or as Ray tasks on the cluster at `ray_address`); with `records_dir`, each run's records are
    written to its pointNN/[repKK/] there."""
    _check_sweep(sweep)
    reps = scenario.replications if replications is None else replications
    seeds = replication_seeds(scenario.config.seed if seed is None else seed, reps)
    points = sweep_points(sweep)
    tasks = []
    for p, (_label, assignments) in enumerate(points):
        raw = apply_overrides(scenario.raw, list(assignments))
        for k, s in enumerate(seeds):
            where = None if records_dir is None else _sweep_run_dir(records_dir, p, k, reps)
            tasks.append(RunTask(raw, scenario.base_dir, s, where, fmt, records=records))
    results = run_tasks(tasks, jobs, progress, ray_address)
    params = list(sweep)
    rows = []
    for p, (label, assignments) in enumerate(points):
        for k, s in enumerate(seeds):
            head: dict[str, Any] = dict(assignments)
            head.update({"point": p, "setting": label, "replication": k, "seed": s})
            metrics = results[p * reps + k].summary.iloc[-1]
            rows.append({**head, **{str(c): metrics[c] for c in metrics.index}})
    runs = pd.DataFrame(rows)
    if reps == 1:
        table = runs.drop(columns=["replication"]).assign(replications=1)
    else:
        # Grouped by point, not by the values: a swept value may be a mapping (`params={}`).
        table = aggregate(runs.drop(columns=["endpoint", *params]), ["point", "setting"])
        for key in reversed(params):
            table.insert(0, key, [dict(points[p][1])[key] for p in table["point"]])
    first = [*params, "point", "setting", "replications"]
    table = table[[*first, *[c for c in table.columns if c not in first]]]
    return SweepResult(table, runs, results, params, reps, seeds, records_dir is not None)


def run_replicated(
    scenario: Scenario,
    replications: int | None = None,
    jobs: int = 1,
    progress: SweepProgress | None = None,
    records_dir: Path | None = None,
    fmt: Literal["csv", "parquet"] = "csv",
    plots: bool = False,
    records: Records = "all",
    ray_address: str | None = None,
) -> Replicated:
    """Run the scenario once per seed derived from its own; summarise each endpoint's metrics as mean
    and 95% CI. With `records_dir`, each run writes its records to repKK/ there (plots for rep00)."""
    reps = scenario.replications if replications is None else replications
    seeds = replication_seeds(scenario.config.seed, reps)
    tasks = [
        RunTask(
            scenario.raw, scenario.base_dir, s, None if records_dir is None else records_dir / f"rep{k:02d}", fmt, plots and k == 0, records
        )
        for k, s in enumerate(seeds)
    ]
    results = run_tasks(tasks, jobs, progress, ray_address)
    frames = [r.summary.assign(replication=k, seed=s) for k, (r, s) in enumerate(zip(results, seeds, strict=True))]
    runs = pd.concat(frames, ignore_index=True)
    return Replicated(aggregate(runs, ["endpoint"]), runs, results, seeds, records_dir is not None)


def _sweep_run_dir(out_dir: Path, point: int, replication: int, replications: int) -> Path:
    folder = out_dir / f"point{point:02d}"
    return folder if replications == 1 else folder / f"rep{replication:02d}"


def write_sweep(
    sweep: SweepResult,
    out_dir: Path,
    fmt: Literal["csv", "parquet"] = "csv",
    plots: bool = True,
    records: Records = "all",
    scenario: str | None = None,
) -> list[Path]:
    """Write sweep.csv (one row per setting), runs.csv (one per run), each run's records in
    pointNN/ (pointNN/repKK/ with replications), and the cost-vs-p99 plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_table(sweep.table, out_dir / f"sweep.{fmt}", fmt), write_table(sweep.runs, out_dir / f"runs.{fmt}", fmt)]
    reps = sweep.replications
    for i, result in enumerate(sweep.results if not sweep.records_written else ()):
        paths += write_run(result, _sweep_run_dir(out_dir, i // reps, i % reps, reps), fmt, plots=False, records=records)
    if plots:
        from gpuserve.experiments.plots import plot_sweep

        paths.append(plot_sweep(sweep.table, out_dir, scenario=scenario))
    return paths


def write_replicated(
    rep: Replicated,
    out_dir: Path,
    fmt: Literal["csv", "parquet"] = "csv",
    plots: bool = True,
    records: Records = "all",
    scenario: str | None = None,
) -> list[Path]:
    """Write summary.csv (mean and CI per endpoint), runs.csv (one row per replication and endpoint),
    each replication's records in repKK/, and the first replication's plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_table(rep.summary, out_dir / f"summary.{fmt}", fmt), write_table(rep.runs, out_dir / f"runs.{fmt}", fmt)]
    for k, result in enumerate(rep.results if not rep.records_written else ()):
        paths += write_run(result, out_dir / f"rep{k:02d}", fmt, plots=plots and k == 0, records=records, scenario=scenario)
    return paths

