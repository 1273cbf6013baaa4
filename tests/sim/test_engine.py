"""Engine behaviour beyond single timelines: determinism, the controller seams, fast-path equivalence."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import pytest

from gpuserve.controller import Controller
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision, WorkerState
from gpuserve.policies import Policy, register
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, SimEndpoint, Simulation
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.service import Constant, Exponential, Lognormal
from gpuserve.sim.workload import Bursty, Poisson
from tests.sim.sim_builders import endpoint, run

COLD = ColdStartProfile(image_size_gb=2.0, pull_bandwidth_gb_s=1.0, container_start_s=1.0, runtime_init_s=2.0, flash_resume_s=0.5)


# Two user policies, registered here as a user's module would: the same idea (one worker per
# concurrency_per_worker jobs in the system), once declaring the schedule attributes and
# once declaring nothing.


@dataclass(frozen=True)
class _PerDemandParams:
    pass


@dataclass(frozen=True)
class _NoState:
    pass


def _per_demand(snapshot: EndpointSnapshot, _params: _PerDemandParams, state: _NoState) -> tuple[ScaleDecision, _NoState]:
    desired = math.ceil(snapshot.demand / snapshot.endpoint.concurrency_per_worker)
    return ScaleDecision(desired, f"{desired} for demand {snapshot.demand}"), state


def _no_state(_params: _PerDemandParams, _endpoint: EndpointSpec) -> _NoState:
    return _NoState()


USER_DECLARED = "test_user_per_demand_declared"
USER_PLAIN = "test_user_per_demand_plain"
register(Policy(USER_DECLARED, _PerDemandParams, _no_state, _per_demand, sized_by_demand=True, stateless_no_wake=True))
register(Policy(USER_PLAIN, _PerDemandParams, _no_state, _per_demand))


def _bursty_endpoint(policy: str = "runpod_request_count", **kw: object) -> object:
    return endpoint(
        workload=Bursty(rate_on_per_s=3.0, rate_off_per_s=0.2, mean_on_s=30.0, mean_off_s=120.0),
        service=Lognormal(1.5, 0.5),
        cold=COLD,
        max_workers=6,
        idle_timeout_s=10.0,
        flash_boot=True,
        policy=policy,
        **kw,  # type: ignore[arg-type]
    )


def test_same_seed_same_records_and_different_seed_different_records() -> None:
    a = run(_bursty_endpoint(), duration_s=2000.0, seed=42)  # type: ignore[arg-type]
    b = run(_bursty_endpoint(), duration_s=2000.0, seed=42)  # type: ignore[arg-type]
    c = run(_bursty_endpoint(), duration_s=2000.0, seed=43)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(a.jobs, b.jobs)
    pd.testing.assert_frame_equal(a.intervals, b.intervals)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    assert len(a.jobs) > 100
    assert not a.jobs["arrival_s"].equals(c.jobs["arrival_s"])


def test_arrival_and_service_streams_are_separate() -> None:
    # Changing the service model must not move a single arrival.
    a = run(endpoint(workload=Poisson(1.0), service=Exponential(1.0)), duration_s=500.0, seed=3)
    b = run(endpoint(workload=Poisson(1.0), service=Lognormal(3.0, 1.0)), duration_s=500.0, seed=3)
    assert a.jobs["arrival_s"].tolist() == b.jobs["arrival_s"].tolist()
    assert a.jobs["execution_s"].tolist() != b.jobs["execution_s"].tolist()


@pytest.mark.parametrize(
    ("policy", "params", "concurrency"),
    [
        ("runpod_request_count", {}, 1),
        ("runpod_request_count", {"requests_per_worker": 2.0}, 2),
        ("fixed_keepalive", {"keep_alive_s": 20.0}, 1),
        ("fixed_keepalive", {"keep_alive_s": 20.0}, 3),
        ("runpod_queue_delay", {"queue_delay_s": 2.0}, 1),
    ],
)
def test_skipping_no_op_controller_calls_changes_nothing(policy: str, params: dict[str, object], concurrency: int) -> None:
    """The fast path (no controller call when a ready worker takes the job at once, or at
    max_workers) must give exactly the records of consulting the controller on every arrival."""
    _assert_fast_path_changes_nothing(policy, params, concurrency)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_user_policy_that_declares_the_schedule_attributes_gets_the_fast_path(concurrency: int) -> None:
    # No policy name in the engine: the declaration alone earns the skips, and they change nothing.
    _assert_fast_path_changes_nothing(USER_DECLARED, {}, concurrency)


def test_an_undeclared_user_policy_is_consulted_on_every_arrival() -> None:
    # Ten arrivals 10 s apart, each taken at once by a warm worker (1-s jobs, a keep-alive
    # longer than the run): besides the first pass at t=0 every controller call is an arrival.
    times = tuple(10.0 * k for k in range(10))

    def ep(policy: str) -> SimEndpoint:
        return endpoint(times=times, service=Constant(1.0), idle_timeout_s=10_000.0, policy=policy)

    plain = run(ep(USER_PLAIN), duration_s=100.0)
    declared = run(ep(USER_DECLARED), duration_s=100.0)
    assert (plain.jobs["status"] == "COMPLETED").all() and len(plain.jobs) == 10
    assert plain.controller_calls == 1 + len(times)
    assert run(ep(USER_PLAIN), duration_s=100.0, consult="always").controller_calls == plain.controller_calls
    # The same idea, declared: only the first arrival (zero workers, the job waits) is shown.
    assert declared.controller_calls == 1 + 1
    pd.testing.assert_frame_equal(plain.jobs, declared.jobs)
    pd.testing.assert_frame_equal(plain.intervals, declared.intervals)


def _assert_fast_path_changes_nothing(policy: str, params: dict[str, object], concurrency: int) -> None:
    hosts = (HostSpec("h0", {"A100": 2}), HostSpec("h1", {"A100": 2}))
    kw = {"params": params, "concurrency": concurrency}
    fast = run(_bursty_endpoint(policy, **kw), duration_s=3000.0, hosts=hosts, seed=9)  # type: ignore[arg-type]
    every = run(_bursty_endpoint(policy, **kw), duration_s=3000.0, hosts=hosts, seed=9, consult="always")  # type: ignore[arg-type]
    assert len(fast.jobs) > 300
    pd.testing.assert_frame_equal(fast.jobs, every.jobs)
    pd.testing.assert_frame_equal(fast.intervals, every.intervals)
    assert fast.controller_calls < every.controller_calls


def test_the_simulator_drives_the_real_controller_through_its_seams() -> None:
    config = SimConfig((endpoint(times=(0.0, 0.5), cold=ColdStartProfile(container_start_s=1.0)),), duration_s=10.0)
    sim = Simulation(config)
    assert type(sim.controller) is Controller
    assert sim.controller.backend is sim.backend and sim.controller.queue is sim.queue
    sim.start()
    sim.env.run(until=0.75)
    # The first arrival at zero workers started one at once (not at a tick); the second
    # arrival, with the first job still queued, asked request_count for a second worker.
    views = sim.backend.workers("ep")
    assert [v.state for v in views] == [WorkerState.INITIALIZING, WorkerState.INITIALIZING]
    stats = sim.queue.stats("ep", 0.75)
    assert (stats.in_queue, stats.in_progress, stats.submitted_total, stats.last_arrival_s) == (2, 0, 2, 0.5)
    assert stats.oldest_queued_age_s == 0.75
    assert sim.clock.now_s() == 0.75


@pytest.mark.parametrize("policy", ["knative_kpa", "ray_serve", "hybrid_histogram", "runpod_queue_delay", "fixed_keepalive"])
def test_every_policy_serves_every_job(policy: str) -> None:
    result = run(_bursty_endpoint(policy), duration_s=1500.0, seed=5)  # type: ignore[arg-type]
    assert len(result.jobs) > 100
    assert (result.jobs["status"] == "COMPLETED").all()
    assert result.summary.iloc[0].workers_started >= 1


def test_event_driven_policies_cost_no_ticks_while_nothing_happens() -> None:
    # Two jobs an hour apart: the controller is consulted on the arrivals and at the expiry
    # wakes it asked for, not once a second in between.
    result = run(endpoint(times=(0.0, 3600.0), idle_timeout_s=5.0), duration_s=4000.0)
    assert (result.jobs["status"] == "COMPLETED").all()
    assert result.controller_calls <= 8


def test_several_endpoints_compete_for_one_hosts_gpus() -> None:
    hosts = (HostSpec("h", {"A100": 2}),)
    eps = [
        endpoint(f"e{i}", workload=Poisson(0.3), service=Exponential(4.0), cold=COLD, max_workers=2, idle_timeout_s=30.0)
        for i in range(3)
    ]
    result = run(*eps, duration_s=2000.0, hosts=hosts, seed=1)
    assert set(result.summary["endpoint"]) == {"e0", "e1", "e2", "ALL"}
    assert (result.jobs["status"] == "COMPLETED").all()
    # Never more than 2 GPUs held at once: count workers past their GPU wait (not INITIALIZING-before-GPU).
    held = result.intervals[result.intervals["state"].isin(["IDLE", "RUNNING"])]
    events = sorted([(t, 1) for t in held["start_s"]] + [(t, -1) for t in held["end_s"]], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2
    assert result.summary.set_index("endpoint").loc["ALL", "mean_throttled"] > 0
