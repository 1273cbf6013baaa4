"""Hypothesis properties over random small scenarios: terminal states, worker and account limits, billing sanity.

The scenarios draw the whole platform: both dispatch models, extra workers, crashes per start
and per running hour, host failures, rolling updates, per-job options and an account limit."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.failures import FailureModel, HostFailure, Update
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.service import Constant, Exponential, Lognormal
from gpuserve.sim.workload import Bursty, Poisson
from tests.sim.sim_builders import endpoint, run

POLICIES = ["runpod_request_count", "runpod_queue_delay", "fixed_keepalive", "knative_kpa", "ray_serve", "hybrid_histogram"]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    n_endpoints = draw(st.integers(1, 3))
    eps = []
    for i in range(n_endpoints):
        max_workers = draw(st.integers(0, 5))
        min_workers = draw(st.integers(0, min(max_workers, 2)))
        bursty = draw(st.booleans())
        rate = draw(st.floats(0.05, 2.0))
        workload = Bursty(rate * 3, rate / 4, 20.0, 60.0) if bursty else Poisson(rate)
        mean_s = draw(st.floats(0.2, 6.0))
        service = Lognormal(mean_s, 0.8) if draw(st.booleans()) else Exponential(mean_s)
        cold = ColdStartProfile(
            image_size_gb=draw(st.sampled_from([0.0, 2.0])),
            container_start_s=draw(st.floats(0.0, 3.0)),
            model_size_gb=draw(st.sampled_from([0.0, 4.0])),
            flash_resume_s=0.5,
            flash_retention_s=draw(st.sampled_from([0.0, 60.0])),
        )
        eps.append(
            endpoint(
                f"e{i}",
                workload=workload,
                service=service,
                cold=cold,
                min_workers=min_workers,
                max_workers=max_workers,
                idle_timeout_s=draw(st.floats(0.0, 30.0)),
                scaler_value=draw(st.sampled_from([1.0, 2.0, 4.0])),
                flash_boot=draw(st.booleans()),
                policy=draw(st.sampled_from(POLICIES)),
                concurrency=draw(st.integers(1, 3)),
                execution_timeout_s=draw(st.sampled_from([5.0, 600.0])),
                extra_workers=draw(st.sampled_from([0, 2])),
                dispatch=draw(st.sampled_from(["shared_queue", "bind_to_launch"])),
                failures=FailureModel(
                    crash_per_start=draw(st.sampled_from([0.0, 0.2])),
                    crash_per_running_hour=draw(st.sampled_from([0.0, 30.0])),
                    crash_times_s=tuple(draw(st.lists(st.floats(0.0, 300.0), max_size=2))),
                ),
                jobs=JobOptions(
                    execution_timeout_s=draw(st.sampled_from([None, 2.0])),
                    execution_timeout_fraction=0.5,
                    ttl_s=draw(st.sampled_from([None, 15.0])),
                    ttl_fraction=0.5,
                    low_priority_fraction=draw(st.sampled_from([0.0, 0.3])),
                    cancel_fraction=draw(st.sampled_from([0.0, 0.3])),
                    patience=Constant(draw(st.floats(0.0, 20.0))),
                    runsync_fraction=draw(st.sampled_from([0.0, 0.5])),
                    runsync_wait_s=10.0,
                ),
            )
        )
    hosts = draw(st.sampled_from([(), (HostSpec("h", {"A100": 2}),), (HostSpec("a", {"A100": 1}), HostSpec("b", {"A100": 3}))]))
    names = [h.name for h in hosts] or ["unlimited"]
    host_failures = tuple(
        HostFailure(draw(st.sampled_from(names)), draw(st.floats(0.0, 300.0)), draw(st.sampled_from([0.0, 30.0])))
        for _ in range(draw(st.integers(0, 1)))
    )
    updates = tuple(Update(draw(st.floats(0.0, 300.0)), f"e{draw(st.integers(0, n_endpoints - 1))}") for _ in range(draw(st.integers(0, 1))))
    return {
        "endpoints": eps,
        "hosts": hosts,
        "billing": draw(st.sampled_from(["runpod", "runpod_state_table", "always_on"])),
        "seed": draw(st.integers(0, 2**16)),
        "account": draw(st.sampled_from([None, 2, 4])),
        "max_retries": draw(st.sampled_from([0, 3])),
        "host_failures": host_failures,
        "updates": updates,
    }


COUNTED = {"INITIALIZING", "IDLE", "RUNNING", "THROTTLED"}


def most_at_once(iv: object) -> int:
    """The most counted workers at one instant, from state intervals (ends before starts at ties)."""
    rows = iv[iv["state"].isin(COUNTED)]  # type: ignore[index]
    # A worker's consecutive counted intervals touch; count each worker once per instant.
    events = sorted([(t, 1) for t in rows["start_s"]] + [(t, -1) for t in rows["end_s"]], key=lambda e: (e[0], e[1]))
    alive = best = 0
    for _, step in events:
        alive += step
        best = max(best, alive)
    return best


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_for_any_small_scenario(sc: dict[str, object]) -> None:
    eps = sc["endpoints"]
    result = run(
        *eps,  # type: ignore[arg-type]
        duration_s=300.0,
        hosts=sc["hosts"],  # type: ignore[arg-type]
        billing=sc["billing"],  # type: ignore[arg-type]
        seed=sc["seed"],  # type: ignore[arg-type]
        account_max_workers=sc["account"],  # type: ignore[arg-type]
        max_retries=sc["max_retries"],  # type: ignore[arg-type]
        host_failures=sc["host_failures"],  # type: ignore[arg-type]
        updates=sc["updates"],  # type: ignore[arg-type]
    )
    jobs = result.jobs

    # Every job reaches exactly one terminal state (the live names), and its times are ordered.
    assert jobs["job_id"].is_unique
    assert set(jobs["status"]) <= {"COMPLETED", "TIMED_OUT", "CANCELLED", "FAILED"}
    assert (jobs["retries"] <= sc["max_retries"]).all()  # type: ignore[operator]
    assert set(jobs.loc[jobs["status"] == "FAILED", "end_reason"]) <= {"retries_exhausted"}
    ran = jobs[(jobs["status"] != "CANCELLED") & jobs["start_s"].notna()]
    assert (ran["start_s"] >= ran["arrival_s"] - 1e-9).all()
    assert (ran["end_s"] >= ran["start_s"]).all()
    assert (ran["worker_id"] != "").all()
    assert (jobs["end_s"] <= result.end_s + 1e-9).all()

    workers = result.workers
    iv = result.intervals
    for ep in eps:  # type: ignore[attr-defined]
        # Counted workers at once never exceed max_workers plus the spike's extra workers.
        scaling = ep.spec.scaling
        assert most_at_once(iv[iv["endpoint"] == ep.spec.endpoint_id]) <= scaling.max_workers + scaling.extra_workers
    if sc["account"] is not None:  # nor, across endpoints, the account limit
        assert most_at_once(iv) <= sc["account"]  # type: ignore[operator]

    if len(workers):
        life = (workers["retired_s"].fillna(result.end_s) - workers["created_s"]).to_numpy()
        billed = iv.groupby("worker_id")["billed_s"].sum().reindex(workers["worker_id"]).fillna(0.0).to_numpy()
        # Billed time never exceeds a worker's life rounded up to the second (parked spans
        # are billed apart); intervals tile the life without overlap.
        assert (billed <= np.ceil(life - 1e-9) + 1e-6).all()
        covered = iv.groupby("worker_id")["duration_s"].sum().reindex(workers["worker_id"]).fillna(0.0).to_numpy()
        assert np.allclose(covered, life, atol=1e-6)
    assert (iv["cost_usd"] >= 0).all()
    assert (result.summary["cost_usd"] >= 0).all()
    assert (result.summary["gpu_s_billed"] >= 0).all()
