"""Types of the lazily loaded public API in __init__.py (a stub, so that no layer's import of `gpuserve` depends on them)."""

from gpuserve import serverless as serverless
from gpuserve.config.scenario import load_scenario as load_scenario
from gpuserve.experiments.analysis import cheapest_meeting as cheapest_meeting
from gpuserve.experiments.analysis import pareto_front as pareto_front
from gpuserve.experiments.api import simulate as simulate
from gpuserve.experiments.plots import plot_comparison as plot_comparison
from gpuserve.experiments.plots import plot_sweep as plot_sweep
from gpuserve.experiments.plots import plot_sweep_cost_vs_p99 as plot_sweep_cost_vs_p99
from gpuserve.experiments.results import Results as Results
from gpuserve.experiments.results import load_results as load_results
from gpuserve.fidelity.calibrate import calibrate as calibrate
from gpuserve.fidelity.compare import compare_dirs as compare_dirs
from gpuserve.fidelity.replay import replay as replay
from gpuserve.sim.plots import plot_latency_cdf as plot_latency_cdf
from gpuserve.sim.plots import plot_queue_and_workers as plot_queue_and_workers
from gpuserve.sim.plots import plot_run as plot_run
from gpuserve.sim.plots import plot_workers_by_state as plot_workers_by_state
from gpuserve.sim.timeseries import binned_series as binned_series

__version__: str
__all__: list[str]
