"""The discrete-event simulator: simpy engine, workloads, service/cold-start/billing models, records, plots."""

from gpuserve.sim.engine import SimBackend, SimClock, SimConfig, SimEndpoint, SimQueue, Simulation
from gpuserve.sim.records import SimResult, build_result

__all__ = [
    "SimBackend",
    "SimClock",
    "SimConfig",
    "SimEndpoint",
    "SimQueue",
    "SimResult",
    "Simulation",
    "build_result",
]
