"""Replications: seeds derived from a base seed, runs in parallel processes, and the mean with a 95% confidence interval per metric."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gpuserve.config.scenario import scenario_from_dict
from gpuserve.core.errors import ConfigError
from gpuserve.sim.records import SimResult

__all__ = ["CI_SUFFIX", "RunTask", "TaskProgress", "aggregate", "default_jobs", "replication_seeds", "run_one", "run_tasks", "t_975"]

CI_SUFFIX = "_ci95"  # `latency_p99_s_ci95`: the half-width of the 95% confidence interval of the mean

# progress(task, tasks, now_s, horizon_s): task index from 0, then simulated seconds within it.
TaskProgress = Callable[[int, int, float, float], None]

# Student's t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom.
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (5 replications: df 4, 2.776).

    Past 30 the Cornish-Fisher expansion around z = 1.96 is within 1e-4 of the exact value."""
    if df < 1:
        return math.nan
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def replication_seeds(base_seed: int, replications: int) -> list[int]:
    """Seeds of `replications` runs: the first is the base seed itself (one replication is the
    plain run); run k > 0 draws a 32-bit seed from SeedSequence(base_seed, spawn_key=(k,)),
    so the whole set follows from the base seed and adding runs never changes earlier ones."""
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise ConfigError("replications", replications, "must be an integer >= 1")
    seeds = [int(base_seed)]
    for k in range(1, replications):
        seeds.append(int(np.random.SeedSequence(base_seed, spawn_key=(k,)).generate_state(1, dtype=np.uint32)[0]))
    return seeds


def default_jobs() -> int:
    """Worker processes when none are asked for: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunTask:
    """One simulation to run: a resolved scenario (after overrides) and the seed to run it with;
    with `records_dir`, the process that runs it also writes its records there (writing a
    run's CSVs takes about as long as simulating it, so it is parallel work too)."""

    raw: dict[str, Any]
    base_dir: Path
    seed: int
    records_dir: Path | None = None
    fmt: Literal["csv", "parquet"] = "csv"
    plots: bool = False
    records: Literal["all", "summary", "none"] = "all"


def _run(task: RunTask, progress: Callable[[float, float], None] | None = None) -> SimResult:
    return run_one(task, progress)


def run_one(task: RunTask, progress: Callable[[float, float], None] | None = None, result: SimResult | None = None) -> SimResult:
    """Simulate one task (unless its `result` is given, simulated elsewhere) and write its records where it says."""
    from gpuserve.experiments.run import run_scenario, write_run

    if result is None:
        result = run_scenario(scenario_from_dict(task.raw, task.base_dir, seed=task.seed), progress)
    if task.records_dir is not None:
        write_run(result, task.records_dir, task.fmt, plots=task.plots, records=task.records, scenario=task.raw.get("name"))
    return result


def run_tasks(
    tasks: Sequence[RunTask], jobs: int = 1, progress: TaskProgress | None = None, ray_address: str | None = None
) -> list[SimResult]:
    """Run every task, in `jobs` processes (or as Ray tasks on the cluster at `ray_address`); results come back
    in task order, identical to a serial run.

    Each run depends only on its scenario and seed, so where it runs changes nothing. Processes
    are spawned, not forked: a fork would copy the parent's threads' locks (a progress bar's
    refresh thread) in whatever state they are in."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("jobs", jobs, "must be an integer >= 1")
    n = len(tasks)
    if ray_address is not None:
        from gpuserve.experiments.cluster import run_tasks_on_ray

        return run_tasks_on_ray(tasks, ray_address, progress)
    if jobs == 1 or n <= 1:
        results = []
        for i, task in enumerate(tasks):

            def step(now_s: float, horizon_s: float, i: int = i) -> None:
                if progress:
                    progress(i, n, now_s, horizon_s)

            results.append(_run(task, step))
        return results
    out: list[SimResult | None] = [None] * n
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, n), mp_context=context) as pool:
        futures = {pool.submit(_run, task): i for i, task in enumerate(tasks)}
        for done, future in enumerate(as_completed(futures)):
            out[futures[future]] = future.result()
            if progress:
                progress(done, n, 1.0, 1.0)  # a whole task finished: the bar moves in task steps
    return [r for r in out if r is not None]


def aggregate(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean and 95% CI half-width of every numeric metric over the runs of each group, in first-seen order.

    Columns: the `by` keys, `replications`, then per metric its mean (same name) and
    `<metric>_ci95` = t_975(n - 1) x sd / sqrt(n), NaN for one run. Three runs at p99 10, 12,
    14 s: mean 12, sd 2, half-width 4.303 x 2 / 1.732 = 4.97 s."""
    skip = set(by) | {"replication", "seed"}
    metrics = [c for c in runs.columns if c not in skip and pd.api.types.is_numeric_dtype(runs[c]) and not pd.api.types.is_bool_dtype(runs[c])]
    rows = []
    for key, group in runs.groupby(list(by), sort=False, dropna=False):
        keys = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, keys, strict=True))
        n = len(group)
        row["replications"] = n
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            finite = values[~np.isnan(values)]
            row[metric] = float(finite.mean()) if finite.size else math.nan
            if finite.size > 1:
                row[metric + CI_SUFFIX] = t_975(finite.size - 1) * float(finite.std(ddof=1)) / math.sqrt(finite.size)
            else:
                row[metric + CI_SUFFIX] = math.nan
        rows.append(row)
    return pd.DataFrame(rows)
