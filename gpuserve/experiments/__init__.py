"""Simulation experiments as functions that return data: load a scenario, run it, replicate it or sweep it, write the results."""

from gpuserve.config.scenario import Scenario, load_scenario
from gpuserve.experiments.provenance import load_provenance, rerun_scenario, write_provenance
from gpuserve.experiments.replicate import aggregate, default_jobs, replication_seeds
from gpuserve.experiments.run import Progress, run_scenario, write_run
from gpuserve.experiments.sweep import (
    Replicated,
    SweepProgress,
    SweepResult,
    run_replicated,
    run_sweep,
    write_replicated,
    write_sweep,
)
from gpuserve.sim.records import SimResult

__all__ = [
    "Progress",
    "Replicated",
    "Scenario",
    "SimResult",
    "SweepProgress",
    "SweepResult",
    "aggregate",
    "default_jobs",
    "load_provenance",
    "load_scenario",
    "replication_seeds",
    "rerun_scenario",
    "run_replicated",
    "run_scenario",
    "run_sweep",
    "write_provenance",
    "write_replicated",
    "write_run",
    "write_sweep",
]
