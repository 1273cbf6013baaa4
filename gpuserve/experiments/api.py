"""`gpuserve.simulate`: one call for a run, its replications or a sweep, from a scenario file, optionally written to a folder."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from gpuserve.config.scenario import Scenario, load_scenario
from gpuserve.experiments.provenance import write_provenance
from gpuserve.experiments.run import Records, run_scenario, write_run
from gpuserve.experiments.sweep import (
    Replicated,
    SweepResult,
    run_replicated,
    run_sweep,
    write_replicated,
    write_sweep,
)
from gpuserve.sim.records import SimResult

__all__ = ["simulate"]


def _assignments(overrides: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    return [(str(k), v) for k, v in overrides]


def simulate(
    scenario: str | Path | Scenario,
    overrides: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    *,
    seed: int | None = None,
    replications: int | None = None,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    jobs: int = 1,
    out: str | Path | None = None,
    fmt: Literal["csv", "parquet"] = "csv",
    records: Records = "all",
    plots: bool = True,
) -> SimResult | Replicated | SweepResult:
    """Simulate a scenario as `gpuserve simulate` does, and return the data.

    `overrides` are `--set`s (`{"endpoint.scaling.max_workers": 5}`); `sweep` maps a key to its
    values (one setting per combination); `replications` runs each setting with that many seeds
    derived from the base seed. Returns a `SimResult` (one run: `.summary`, `.jobs`, ...), a
    `Replicated` (`.summary` with mean and `_ci95` columns) or a `SweepResult` (`.table`, one row
    per setting). With `out`, writes the results folder the CLI writes (`load_results` reads it)."""
    if isinstance(scenario, Scenario):
        from gpuserve.config.scenario import apply_overrides, scenario_from_dict

        scn = scenario_from_dict(apply_overrides(scenario.raw, _assignments(overrides)), scenario.base_dir, seed=seed)
    else:
        scn = load_scenario(Path(scenario), _assignments(overrides), seed=seed)
    for note in scn.warnings:
        warnings.warn(note, UserWarning, stacklevel=2)
    swept = {k: list(v) for k, v in (sweep or {}).items()} or scn.sweep
    reps = scn.replications if replications is None else replications
    out_dir = None if out is None else Path(out)
    result: SimResult | Replicated | SweepResult
    if swept:
        result = run_sweep(scn, swept, replications=reps, jobs=jobs, records_dir=out_dir, fmt=fmt, records=records)
        seeds = result.seeds
        if out_dir is not None:
            write_sweep(result, out_dir, fmt, plots, records=records, scenario=scn.name)
    elif reps > 1:
        result = run_replicated(scn, reps, jobs, records_dir=out_dir, fmt=fmt, plots=plots, records=records)
        seeds = result.seeds
        if out_dir is not None:
            write_replicated(result, out_dir, fmt, plots, records=records, scenario=scn.name)
    else:
        result = run_scenario(scn)
        seeds = [scn.config.seed]
        if out_dir is not None:
            write_run(result, out_dir, fmt, plots, records=records, scenario=scn.name)
    if out_dir is not None:
        command = ["gpuserve.simulate", str(scenario if not isinstance(scenario, Scenario) else scn.name)]
        command += [f"--set {k}={v}" for k, v in _assignments(overrides)]
        write_provenance(out_dir, scn, seeds, swept or None, command)
    return result
