"""Hypothesis properties over random small scenarios: terminal states, worker limits, billing sanity."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.service import Exponential, Lognormal
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
            )
        )
    hosts = draw(st.sampled_from([(), (HostSpec("h", {"A100": 2}),), (HostSpec("a", {"A100": 1}), HostSpec("b", {"A100": 3}))]))
    return {
        "endpoints": eps,
        "hosts": hosts,
        "billing": draw(st.sampled_from(["runpod", "runpod_state_table", "always_on"])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_for_any_small_scenario(sc: dict[str, object]) -> None:
    eps = sc["endpoints"]
    result = run(*eps, duration_s=300.0, hosts=sc["hosts"], billing=sc["billing"], seed=sc["seed"])  # type: ignore[misc, arg-type]
    jobs = result.jobs

    # Every job reaches exactly one terminal state, and its times are ordered.
    assert jobs["job_id"].is_unique
    assert set(jobs["status"]) <= {"COMPLETED", "TIMED_OUT", "CANCELLED"}
    ran = jobs[jobs["status"] != "CANCELLED"]
    assert (ran["start_s"] >= ran["arrival_s"] - 1e-9).all()
    assert (ran["end_s"] >= ran["start_s"]).all()
    assert (ran["worker_id"] != "").all()
    assert (jobs["end_s"] <= result.end_s + 1e-9).all()

    workers = result.workers
    for ep in eps:  # type: ignore[attr-defined]
        # Workers alive at once never exceed max_workers (retirements before starts at ties).
        mine = workers[workers["endpoint"] == ep.spec.endpoint_id] if len(workers) else workers
        ends = mine["retired_s"].fillna(result.end_s) if len(mine) else []
        events = sorted([(t, 1) for t in mine.get("created_s", [])] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
        alive = 0
        for _, step in events:
            alive += step
            assert alive <= ep.spec.scaling.max_workers

    iv = result.intervals
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
