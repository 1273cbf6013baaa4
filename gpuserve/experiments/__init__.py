"""Simulation experiments as functions that return data: load a scenario, run it, replicate it or sweep it, write and read the results."""

from gpuserve.config.scenario import Scenario, load_scenario
from gpuserve.experiments.analysis import cheapest_meeting, pareto_front, upper_bound
from gpuserve.experiments.api import simulate
from gpuserve.experiments.provenance import load_provenance, rerun_scenario, write_provenance
from gpuserve.experiments.replicate import aggregate, default_jobs, replication_seeds
from gpuserve.experiments.results import Results, load_results
from gpuserve.experiments.run import Progress, Records, run_scenario, write_run
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
    "Records",
    "Replicated",
    "Results",
    "Scenario",
    "SimResult",
    "SweepProgress",
    "SweepResult",
    "aggregate",
    "cheapest_meeting",
    "default_jobs",
    "load_provenance",
    "load_results",
    "load_scenario",
    "pareto_front",
    "replication_seeds",
    "rerun_scenario",
    "run_replicated",
    "run_scenario",
    "run_sweep",
    "simulate",
    "upper_bound",
    "write_provenance",
    "write_replicated",
    "write_run",
    "write_sweep",
]
