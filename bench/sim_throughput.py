"""Simulated requests per second: gpuserve's engine against SimFaaS on the same scale-per-request scenario.

Scenario (SimFaaS's own example): Poisson arrivals at 0.9 req/s, exponential service with mean
2.0 s warm and 2.2 s cold, keep-alive 600 s, one request per instance, no instance limit.
gpuserve models the cold request as a 0.2-s start stage plus the same exponential service
(mean 2.2 s in total), drives the real Controller with the fixed_keepalive policy, and records
every job and worker state interval. Both run in this process, one after the other.

    .venv/bin/python bench/sim_throughput.py [--requests 1000000] [--simfaas-requests 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from gpuserve.core.billing import BillingModel
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, SimEndpoint, Simulation
from gpuserve.sim.service import Exponential
from gpuserve.sim.workload import Poisson

RATE_PER_S = 0.9
WARM_MEAN_S = 2.0
COLD_MEAN_S = 2.2
KEEP_ALIVE_S = 600.0
BATCHES = 20


def batch_means(flags: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """Mean and its standard error from `batches` contiguous batch means (requests in arrival order)."""
    usable = flags[: flags.size - flags.size % batches].reshape(batches, -1).mean(axis=1)
    return float(flags.mean()), float(usable.std(ddof=1) / np.sqrt(batches))


def run_gpuserve(requests: int, seed: int) -> tuple[float, int, np.ndarray, int]:
    """Returns (seconds, requests, per-request 'started a worker' flags, controller calls)."""
    spec = EndpointSpec(
        "bench",
        scaling=ScalingSpec(
            min_workers=0, max_workers=1_000_000, idle_timeout_s=KEEP_ALIVE_S, scaler=ScalerType.REQUEST_COUNT, scaler_value=1
        ),
        policy=PolicySpec("fixed_keepalive", {"keep_alive_s": KEEP_ALIVE_S}),
        gpu_type="A100",
    )
    endpoint = SimEndpoint(
        spec,
        Poisson(RATE_PER_S),
        Exponential(WARM_MEAN_S),
        ColdStartProfile(container_start_s=COLD_MEAN_S - WARM_MEAN_S, flash_retention_s=0.0),
    )
    config = SimConfig((endpoint,), billing=BillingModel({"A100": 0.00076}), duration_s=requests / RATE_PER_S, seed=seed)
    t0 = time.perf_counter()
    raw = Simulation(config).run()
    elapsed = time.perf_counter() - t0
    # SimFaaS's P(cold) counts requests that found no idle instance and launched one. The
    # same here: requests whose arrival started a worker (every start happens at an arrival
    # in this scenario). Fewer *jobs* run cold (raw.job_cold), since a queued request can be
    # taken by a worker that frees before the new one is up.
    arrivals = raw.job_arrival_s
    created = np.array([w["created_s"] for w in raw.workers])
    flags = np.zeros(arrivals.size)
    flags[np.searchsorted(arrivals, created - 1e-9)] = 1.0
    return elapsed, arrivals.size, flags, raw.controller_calls


def run_simfaas(requests: int, seed: int) -> tuple[float, int, np.ndarray]:
    from simfaas.ServerlessSimulator import ServerlessSimulator

    np.random.seed(seed)  # SimFaaS draws from numpy's global generator
    sim = ServerlessSimulator(
        arrival_rate=RATE_PER_S,
        warm_service_rate=1 / WARM_MEAN_S,
        cold_service_rate=1 / COLD_MEAN_S,
        expiration_threshold=KEEP_ALIVE_S,
        max_time=requests / RATE_PER_S,
    )
    t0 = time.perf_counter()
    sim.generate_trace(debug_print=False, progress=False)
    elapsed = time.perf_counter() - t0
    order = np.argsort(np.concatenate([sim.hist_req_cold_idxs, sim.hist_req_warm_idxs]), kind="stable")
    flags = np.concatenate([np.ones(len(sim.hist_req_cold_idxs)), np.zeros(len(sim.hist_req_warm_idxs))])[order]
    return elapsed, sim.total_req_count, flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests for gpuserve")
    parser.add_argument("--simfaas-requests", type=int, default=200_000, help="requests for SimFaaS (it is slower)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each; medians are reported")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    g_times, s_times = [], []
    for k in range(args.repeat):
        # Interleaved, so load from anything else on the machine hits both alike.
        g_s, g_n, g_flags, calls = run_gpuserve(args.requests, args.seed + k)
        s_s, s_n, s_flags = run_simfaas(args.simfaas_requests, args.seed + k)
        g_times.append(g_n / g_s)
        s_times.append(s_n / s_s)
        print(f"run {k + 1}: gpuserve {g_n:,} req in {g_s:.2f} s ({g_n / g_s:,.0f} req/s); SimFaaS {s_n:,} req in {s_s:.2f} s ({s_n / s_s:,.0f} req/s)")
    g_rate, s_rate = float(np.median(g_times)), float(np.median(s_times))
    g_p, g_se = batch_means(g_flags)
    s_p, s_se = batch_means(s_flags)
    z = abs(g_p - s_p) / np.hypot(g_se, s_se)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"gpuserve: median {g_rate:,.0f} req/s over {args.repeat} runs of {args.requests:,} requests (last run: {calls:,} controller calls)")
    print(f"SimFaaS : median {s_rate:,.0f} req/s over {args.repeat} runs of {args.simfaas_requests:,} requests")
    print(f"ratio   : {g_rate / s_rate:.2f}x")
    print(f"P(cold) last run, {BATCHES} batch means: gpuserve {g_p:.5f} +- {g_se:.5f}   SimFaaS {s_p:.5f} +- {s_se:.5f}"
          f"   (|diff| = {z:.2f} combined SE)")


if __name__ == "__main__":
    main()
