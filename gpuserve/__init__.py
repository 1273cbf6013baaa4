"""gpuserve: an open-source serverless GPU platform, simulation-first.

The research API, loaded on first use (so `import gpuserve` stays light inside a worker image):

    import gpuserve
    result = gpuserve.simulate("scenarios/bursty.yaml", {"duration_s": 3600}, replications=5)
    results = gpuserve.load_results("out/bursty")          # typed DataFrames of a results folder
    gpuserve.plot_sweep_cost_vs_p99(sweep.table)           # and the other plotting helpers
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it. Nothing here is imported until it is asked for.
_LAZY = {
    "serverless": None,
    "simulate": "gpuserve.experiments.api",
    "load_results": "gpuserve.experiments.results",
    "Results": "gpuserve.experiments.results",
    "load_scenario": "gpuserve.config.scenario",
    "pareto_front": "gpuserve.experiments.analysis",
    "cheapest_meeting": "gpuserve.experiments.analysis",
    "binned_series": "gpuserve.sim.timeseries",
    "plot_run": "gpuserve.sim.plots",
    "plot_latency_cdf": "gpuserve.sim.plots",
    "plot_workers_by_state": "gpuserve.sim.plots",
    "plot_queue_and_workers": "gpuserve.sim.plots",
    "plot_sweep": "gpuserve.experiments.plots",
    "plot_sweep_cost_vs_p99": "gpuserve.experiments.plots",
    "plot_comparison": "gpuserve.experiments.plots",
    "calibrate": "gpuserve.fidelity.calibrate",
    "replay": "gpuserve.fidelity.replay",
    "compare_dirs": "gpuserve.fidelity.compare",
}

__all__ = ["__version__", *sorted(_LAZY)]  # their types: __init__.pyi

def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'gpuserve' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"gpuserve.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
