"""Run a sweep of settings over a scenario (one summary row per setting) and write its results folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from gpuserve.config.scenario import Scenario, apply_overrides, scenario_from_dict, sweep_points
from gpuserve.experiments.run import run_scenario, write_run
from gpuserve.sim.records import SimResult

__all__ = ["SweepProgress", "run_sweep", "write_sweep"]

# progress(point, points, now_s, horizon_s): point index from 0, then simulated seconds within that point.
SweepProgress = Callable[[int, int, float, float], None]


def run_sweep(
    scenario: Scenario,
    sweep: dict[str, list[Any]],
    progress: SweepProgress | None = None,
    seed: int | None = None,
) -> tuple[pd.DataFrame, list[SimResult]]:
    """Run every point of the sweep; returns the per-setting ALL-endpoint summary rows and results."""
    points = sweep_points(sweep)
    rows = []
    results = []
    for i, (label, assignments) in enumerate(points):
        raw = apply_overrides(scenario.raw, _as_assignments(assignments))
        point = scenario_from_dict(raw, scenario.base_dir, seed=scenario.config.seed if seed is None else seed)

        def step(now_s: float, horizon_s: float, i: int = i) -> None:
            if progress:
                progress(i, len(points), now_s, horizon_s)

        result = run_scenario(point, step)
        row = result.summary.iloc[-1].to_dict()
        row = {"setting": label, **row}
        rows.append(row)
        results.append(result)
    return pd.DataFrame(rows), results


def write_sweep(
    table: pd.DataFrame,
    results: Sequence[SimResult],
    out_dir: Path,
    fmt: Literal["csv", "parquet"] = "csv",
    plots: bool = True,
) -> list[Path]:
    """Write sweep.csv (one row per setting), each point's results in pointNN/, and the cost-vs-p99 plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / f"sweep.{fmt}"
    if fmt == "parquet":
        table.to_parquet(table_path, index=False)
    else:
        table.to_csv(table_path, index=False)
    paths = [table_path]
    for k, result in enumerate(results):
        paths += write_run(result, out_dir / f"point{k:02d}", fmt, plots=False)
    if plots:
        from gpuserve.sim.plots import plot_sweep

        paths.append(plot_sweep(table, out_dir))
    return paths


def _as_assignments(assignments: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in assignments]
