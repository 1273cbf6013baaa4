"""Run one scenario or a sweep of settings over it; a sweep gives one summary row per setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from gpuserve.config.scenario import Scenario, apply_overrides, scenario_from_dict, sweep_points
from gpuserve.sim.engine import Simulation
from gpuserve.sim.records import SimResult, build_result

__all__ = ["run_scenario", "run_sweep"]

Progress = Callable[[float, float], None]


def run_scenario(scenario: Scenario, progress: Progress | None = None) -> SimResult:
    return build_result(Simulation(scenario.config).run(progress=progress))


def run_sweep(
    scenario: Scenario,
    sweep: dict[str, list[Any]],
    progress: Callable[[int, int, float, float], None] | None = None,
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


def _as_assignments(assignments: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in assignments]
