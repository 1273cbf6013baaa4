"""The simulator against queueing theory: Erlang C for M/M/c, Little's law for scale-per-request.

Run lengths are chosen so the estimates' standard error is about 1% or less (measured over
six seeds per case), making the 3% and 2% bands a 3-sigma check; the seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpuserve.core.billing import BillingModel
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, Simulation
from gpuserve.sim.service import Exponential
from gpuserve.sim.workload import Poisson
from tests.sim.sim_builders import endpoint, run


def erlang_c(c: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = lambda/mu (a < c)."""
    head = sum(offered**k / math.factorial(k) for k in range(c))
    tail = offered**c / math.factorial(c) * c / (c - offered)
    return tail / (head + tail)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("servers", "utilisation", "jobs"),
    [
        (1, 0.5, 500_000),
        (1, 0.9, 4_000_000),
        (2, 0.5, 500_000),
        (2, 0.9, 5_000_000),
        (8, 0.5, 3_000_000),
        (8, 0.9, 3_000_000),
    ],
)
def test_mmc_with_always_warm_workers_matches_erlang_c(servers: int, utilisation: float, jobs: int) -> None:
    arrival_rate = utilisation * servers  # service rate 1/s
    ep = endpoint(
        workload=Poisson(arrival_rate),
        service=Exponential(1.0),
        cold=ColdStartProfile(),  # no cold start: the c workers are ready at t=0
        min_workers=servers,
        max_workers=servers,
    )
    config = SimConfig((ep,), billing=BillingModel({}), duration_s=jobs / arrival_rate, seed=1)
    raw = Simulation(config).run()
    arrivals = raw.job_arrival_s
    starts = np.asarray(raw.job_start_s)
    warmup = arrivals.size // 100  # the run starts empty; drop the first 1% of jobs
    waits = np.clip(starts - arrivals, 0.0, None)[warmup:]
    p_wait = erlang_c(servers, arrival_rate)
    mean_wait_s = p_wait / (servers - arrival_rate)
    assert np.mean(waits > 1e-9) == pytest.approx(p_wait, rel=0.03)
    assert np.mean(waits) == pytest.approx(mean_wait_s, rel=0.03)
    assert len(raw.workers) == servers  # always warm: no worker ever started or stopped


@pytest.mark.parametrize(
    ("policy", "params"),
    [("fixed_keepalive", {"keep_alive_s": 30.0}), ("runpod_request_count", {})],
)
def test_scale_per_request_busy_workers_follow_littles_law(policy: str, params: dict[str, object]) -> None:
    arrival_rate, mean_service_s, duration_s = 4.0, 2.5, 50_000.0
    result = run(
        endpoint(
            workload=Poisson(arrival_rate),
            service=Exponential(mean_service_s),
            cold=ColdStartProfile(container_start_s=1.0),
            max_workers=1_000_000,
            idle_timeout_s=30.0,
            scaler_value=1.0,
            policy=policy,
            params=params,
        ),
        duration_s=duration_s,
        seed=2,
    )
    running = result.intervals[result.intervals["state"] == "RUNNING"]
    busy_s = (running["end_s"].clip(upper=duration_s) - running["start_s"].clip(upper=duration_s)).sum()
    assert busy_s / duration_s == pytest.approx(arrival_rate * mean_service_s, rel=0.02)
    # Scale-per-request with no limit: a job waits at most one cold start (1 s), never behind busy workers.
    assert result.jobs["delay_s"].max() <= 1.0 + 1e-9
    assert result.jobs["cold"].any()
