"""Run one scenario in the simulator and write its records and plots to a results folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from gpuserve.config.scenario import Scenario
from gpuserve.sim.engine import Simulation
from gpuserve.sim.records import SimResult, build_result

__all__ = ["Progress", "run_scenario", "write_run"]

# progress(now_s, horizon_s): simulated seconds done out of the run's horizon.
Progress = Callable[[float, float], None]


def run_scenario(scenario: Scenario, progress: Progress | None = None) -> SimResult:
    """Simulate the scenario once; the result holds per-job records, worker intervals and the summary."""
    return build_result(Simulation(scenario.config).run(progress=progress))


def write_run(result: SimResult, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv", plots: bool = True) -> list[Path]:
    """Write jobs, intervals, workers and summary tables (and PNG plots) under out_dir; returns the files."""
    paths = result.write(out_dir, fmt)
    if plots:
        # matplotlib is imported only when plots are asked for: a sweep of 100 points need not pay for it.
        from gpuserve.sim.plots import plot_run

        paths += plot_run(result, out_dir)
    return paths
