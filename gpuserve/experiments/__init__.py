"""Simulation experiments as functions that return data: load a scenario, run it or sweep it, write the results."""

from gpuserve.config.scenario import Scenario, load_scenario
from gpuserve.experiments.run import Progress, run_scenario, write_run
from gpuserve.experiments.sweep import SweepProgress, run_sweep, write_sweep
from gpuserve.sim.records import SimResult

__all__ = [
    "Progress",
    "Scenario",
    "SimResult",
    "SweepProgress",
    "load_scenario",
    "run_scenario",
    "run_sweep",
    "write_run",
    "write_sweep",
]
