"""Load-balancing endpoints in the simulator: hand-checked timelines, routing, the cap, holds and their timeout."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.core.types import LoadBalancingSpec
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.loadbalancer import LoadBalancer
from gpuserve.sim.service import Constant, Exponential
from tests.sim.sim_builders import endpoint, run

LB_VS_QUEUE = Path(__file__).resolve().parents[2] / "scenarios" / "lb_vs_queue.yaml"
COLD_10S = ColdStartProfile(container_start_s=10.0)  # a worker is ready 10 s after it starts


def _job(result: object, i: int) -> pd.Series:
    jobs = result.jobs  # type: ignore[attr-defined]
    return jobs[jobs["job_id"] == i].iloc[0]


def test_a_request_at_zero_workers_is_held_and_served_when_the_worker_is_ready() -> None:
    result = run(
        endpoint(times=(0.0,), cold=COLD_10S, service=Constant(5.0), load_balancing=LoadBalancingSpec()),
        duration_s=50.0,
    )
    job = _job(result, 0)
    # Held from 0 s while the held request (demand 1) starts a worker; ready at 10 s, runs 10 -> 15.
    assert (job.start_s, job.end_s, job.status) == (10.0, 15.0, "COMPLETED")
    assert bool(job.held) and job.held_s == 10.0 and not job.rejected and bool(job.cold)
    summary = result.summary.iloc[0]
    assert (summary.lb_requests, summary.held, summary.rejected) == (1, 1, 0)
    assert summary.hold_p50_s == 10.0


def test_a_request_held_past_the_hold_timeout_is_rejected() -> None:
    lb = LoadBalancingSpec(concurrency_target=1, max_concurrency=1, hold_timeout_s=30.0)
    result = run(
        endpoint(times=(0.0, 1.0, 50.0), cold=COLD_10S, service=Constant(100.0), max_workers=1, load_balancing=lb),
        duration_s=200.0,
    )
    first, second, third = (_job(result, i) for i in range(3))
    # The one worker (max_workers 1) is ready at 10 s and busy 10 -> 110 with the first request.
    assert (first.start_s, first.end_s, first.status, first.held_s) == (10.0, 110.0, "COMPLETED", 10.0)
    # The second waits from 1 s and is refused at 31 s; the third from 50 s, refused at 80 s.
    assert (second.end_s, second.status, bool(second.rejected), second.held_s) == (31.0, "FAILED", True, 30.0)
    assert (third.end_s, third.status, bool(third.rejected), third.held_s) == (80.0, "FAILED", True, 30.0)
    assert math.isnan(second.start_s) and second.worker_id == ""
    summary = result.summary.iloc[0]
    assert (summary.held, summary.rejected, summary.completed) == (3, 2, 1)
    assert summary.hold_p50_s == 30.0
    assert summary.latency_p50_s == 110.0  # rejected requests are not in the latency of served ones


def test_a_zero_hold_timeout_rejects_at_once() -> None:
    lb = LoadBalancingSpec(max_concurrency=1, hold_timeout_s=0.0)
    result = run(
        endpoint(times=(20.0, 21.0), cold=COLD_10S, service=Constant(10.0), min_workers=1, max_workers=1, load_balancing=lb),
        duration_s=100.0,
    )
    assert _job(result, 0).status == "COMPLETED"
    refused = _job(result, 1)
    assert (refused.end_s, refused.status, bool(refused.rejected), refused.held_s) == (21.0, "FAILED", True, 0.0)


def test_the_cap_holds_the_request_that_finds_every_worker_full() -> None:
    lb = LoadBalancingSpec(concurrency_target=2, max_concurrency=2)
    result = run(
        endpoint(times=(20.0, 21.0, 22.0), cold=COLD_10S, service=Constant(10.0), min_workers=1, max_workers=1, load_balancing=lb),
        duration_s=100.0,
    )
    jobs = result.jobs
    # Two run at once on the one worker, each its own 10 s (no slow-down from sharing it);
    # the third waits for a slot: the first ends at 30 s.
    assert jobs["start_s"].tolist() == [20.0, 21.0, 30.0]
    assert jobs["end_s"].tolist() == [30.0, 31.0, 40.0]
    assert jobs["held"].tolist() == [False, False, True]
    assert jobs["held_s"].tolist() == [0.0, 0.0, 8.0]
    assert jobs["worker_id"].nunique() == 1


def test_fewest_in_flight_routing_ties_to_the_most_recently_used_worker() -> None:
    lb = LoadBalancingSpec(concurrency_target=1, max_concurrency=4)
    result = run(
        endpoint(
            times=(20.0, 21.0, 22.0, 23.0, 200.0),
            cold=COLD_10S,
            service=Constant(100.0),
            min_workers=3,
            max_workers=3,
            load_balancing=lb,
        ),
        duration_s=300.0,
    )
    workers = result.jobs["worker_id"].tolist()
    # Three idle workers, all last used at their ready time (10 s): the tie goes to the newest
    # (w2), then w1, then w0; the fourth finds one in flight everywhere and goes to the one used
    # last (w0, at 22 s). At 200 s all are idle again: w0 was used last (23 s).
    assert workers == ["ep-w2", "ep-w1", "ep-w0", "ep-w0", "ep-w0"]


def test_route_picks_fewest_in_flight_with_room() -> None:
    class W:
        def __init__(self, idx: int, in_flight: int, last_used_s: float, state: int = 1) -> None:
            self.idx, self.state, self.in_flight, self.capacity, self.last_used_s = idx, state, in_flight, 2, last_used_s

    lb = LoadBalancer(LoadBalancingSpec(max_concurrency=2), ready_states=(1, 2))
    full, busy, starting, idle_old, idle_recent = W(0, 2, 9.0), W(1, 1, 8.0), W(2, 0, 9.5, state=0), W(3, 0, 1.0), W(4, 0, 5.0)
    assert lb.route([full, busy, starting, idle_old, idle_recent]) is idle_recent
    assert lb.route([full, busy, starting]) is busy
    assert lb.route([full, starting]) is None


def test_request_timeout_ends_a_long_request_timed_out() -> None:
    lb = LoadBalancingSpec(request_timeout_s=20.0)
    result = run(
        endpoint(times=(20.0,), cold=COLD_10S, service=Constant(50.0), min_workers=1, load_balancing=lb),
        duration_s=100.0,
    )
    job = _job(result, 0)
    assert (job.start_s, job.end_s, job.status) == (20.0, 40.0, "TIMED_OUT")


@pytest.mark.parametrize(("policy", "params"), [("runpod_request_count", {}), ("knative_kpa", {})])
def test_held_requests_are_demand_that_scales_from_zero(policy: str, params: dict[str, float]) -> None:
    lb = LoadBalancingSpec(concurrency_target=1, max_concurrency=1)
    result = run(
        endpoint(times=(0.0, 0.0, 0.0), cold=COLD_10S, service=Constant(5.0), max_workers=3, policy=policy, params=params, load_balancing=lb),
        duration_s=100.0,
    )
    jobs = result.jobs
    assert (jobs["status"] == "COMPLETED").all()
    assert jobs["worker_id"].nunique() == 3  # three held requests, three workers at once
    assert (jobs["held"] & jobs["cold"]).all()
    assert jobs["start_s"].max() <= 12.0  # started by the first passes (KPA's tick is 2 s)


def test_skipping_consults_changes_nothing_for_a_load_balancer() -> None:
    # With max_concurrency above the target, served arrivals can need a worker, so the
    # schedule shows each one; the records equal consulting on every arrival.
    lb = LoadBalancingSpec(concurrency_target=1, max_concurrency=3, hold_timeout_s=5.0)
    ep = endpoint(
        workload=None, times=tuple(np.linspace(0.0, 200.0, 120).tolist()), cold=COLD_10S, service=Exponential(4.0), max_workers=4, load_balancing=lb
    )
    auto, always = run(ep, duration_s=220.0, consult="auto"), run(ep, duration_s=220.0, consult="always")
    cols = ["start_s", "end_s", "status", "worker_id", "held", "rejected"]
    pd.testing.assert_frame_equal(auto.jobs[cols], always.jobs[cols])
    assert always.controller_calls >= auto.controller_calls


def test_queue_endpoints_report_no_holds() -> None:
    result = run(endpoint(times=(0.0, 1.0), cold=COLD_10S), duration_s=50.0)
    summary = result.summary.iloc[0]
    assert (summary.lb_requests, summary.held, summary.rejected) == (0, 0, 0)
    assert not result.jobs["held"].any() and not result.jobs["load_balancer"].any()


@dataclass(frozen=True)
class LbRun:
    times: tuple[float, ...]
    lb: LoadBalancingSpec
    service_s: float
    cold_s: float
    min_workers: int
    max_workers: int
    policy: str


@st.composite
def lb_runs(draw: st.DrawFn) -> LbRun:
    target = draw(st.integers(1, 2))
    min_workers = draw(st.integers(0, 1))
    return LbRun(
        times=tuple(sorted(draw(st.lists(st.floats(0.0, 60.0, allow_nan=False), min_size=1, max_size=30)))),
        lb=LoadBalancingSpec(
            concurrency_target=target,
            max_concurrency=draw(st.integers(target, 3)),
            hold_timeout_s=draw(st.sampled_from([0.0, 2.0, 15.0])),
            request_timeout_s=draw(st.sampled_from([3.0, 30.0])),
        ),
        service_s=draw(st.sampled_from([0.5, 4.0, 10.0])),
        cold_s=draw(st.sampled_from([0.0, 5.0, 20.0])),
        min_workers=min_workers,
        max_workers=draw(st.integers(max(1, min_workers), 3)),
        policy=draw(st.sampled_from(["runpod_request_count", "runpod_queue_delay", "knative_kpa"])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lb_runs())
def test_every_request_ends_exactly_once_served_rejected_or_timed_out(sc: LbRun) -> None:
    lb = sc.lb
    result = run(
        endpoint(
            times=sc.times,
            cold=ColdStartProfile(container_start_s=sc.cold_s),
            service=Exponential(sc.service_s),
            min_workers=sc.min_workers,
            max_workers=sc.max_workers,
            policy=sc.policy,
            load_balancing=lb,
        ),
        duration_s=61.0,
    )
    jobs = result.jobs
    assert len(jobs) == len(sc.times)
    served = jobs["status"].isin(["COMPLETED", "TIMED_OUT"])
    rejected = jobs["status"] == "FAILED"
    assert (served ^ rejected).all()  # one end each, never both, never none (nothing cancelled)
    assert (jobs["rejected"] == rejected).all()
    assert (~jobs["rejected"] | jobs["held"]).all()  # only a held request is refused
    assert np.allclose(jobs.loc[rejected, "held_s"], lb.hold_timeout_s)
    assert (jobs.loc[served, "start_s"] >= jobs.loc[served, "arrival_s"] - 1e-9).all()  # sim-time float noise
    assert (jobs.loc[served, "held_s"] <= lb.hold_timeout_s + 1e-9).all()
    assert (jobs.loc[served, "execution_s"] <= lb.request_timeout_s + 1e-9).all()
    assert np.allclose(jobs.loc[jobs["status"] == "TIMED_OUT", "execution_s"], lb.request_timeout_s)
    # No worker ever holds more than max_concurrency requests (an end frees its slot before a start at the same time).
    for _wid, runs in jobs[served].groupby("worker_id"):
        events = sorted([(s, 1) for s in runs["start_s"]] + [(e, -1) for e in runs["end_s"]])
        assert max(itertools.accumulate(d for _t, d in events)) <= lb.max_concurrency


def test_lb_vs_queue_scenario_runs_and_shows_the_trade_off(tmp_path: Path) -> None:
    out = tmp_path / "lbq"
    result = CliRunner().invoke(app, ["simulate", str(LB_VS_QUEUE), "--out", str(out), "--no-plots", "--set", "duration_s=3000"])
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output and "hold p99 s" in result.output
    summary = pd.read_csv(out / "summary.csv").set_index("endpoint")
    jobs = pd.read_csv(out / "jobs.csv")
    # The same arrivals on each endpoint (one trace).
    times = [jobs.loc[jobs["endpoint"] == e, "arrival_s"].to_numpy() for e in ("queue", "lb-hold-120s", "lb-hold-15s")]
    assert np.array_equal(times[0], times[1]) and np.array_equal(times[0], times[2])
    queue, short = summary.loc["queue"], summary.loc["lb-hold-15s"]
    assert queue.rejected == 0 and queue.held == 0 and queue.completed == queue.jobs
    # The short hold bounds the wait and refuses the excess of a burst; the queue serves all, later.
    assert short.rejected > 0 and short.hold_p99_s <= 15.0 + 1e-9
    assert short.latency_p99_s < queue.latency_p99_s
    assert short.completed + short.timed_out + short.rejected == short.jobs
