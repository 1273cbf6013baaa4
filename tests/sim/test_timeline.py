"""Exact simpy timelines for tiny scenarios: cold-start stages, idle expiry, billing, throttling, flash boot."""

from __future__ import annotations

import pytest

from gpuserve.sim.coldstart import ColdStartProfile, ModelSource
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.service import Constant
from tests.sim.sim_builders import endpoint, intervals_of, run

# image 10 GB at 1 GB/s = 10 s, container 2 s, runtime 3 s, weights 8 GB from host cache at 4 GB/s = 2 s.
STAGED = ColdStartProfile(
    image="img",
    image_size_gb=10.0,
    pull_bandwidth_gb_s=1.0,
    container_start_s=2.0,
    runtime_init_s=3.0,
    model_size_gb=8.0,
    model_source=ModelSource.HOST_CACHE,
    host_cache_bandwidth_gb_s=4.0,
)


def test_one_job_at_zero_workers_cold_start_run_idle_retire_and_cost() -> None:
    result = run(
        endpoint(times=(0.0,), cold=STAGED, service=Constant(5.0), idle_timeout_s=30.0),
        duration_s=100.0,
        prices={"A100": 0.002},
    )
    job = result.jobs.iloc[0]
    # ready at 10 + 2 + 3 + 2 = 17 s; runs 17 -> 22; idle 22 -> 52 (idle timeout 30 s), retired.
    assert (job.arrival_s, job.start_s, job.end_s) == (0.0, 17.0, 22.0)
    assert (job.delay_s, job.execution_s, job.latency_s) == (17.0, 5.0, 22.0)
    assert job.cold and job.status == "COMPLETED"
    worker = result.workers.iloc[0]
    assert (worker.image_pull_s, worker.container_start_s, worker.runtime_init_s, worker.model_load_s) == (10.0, 2.0, 3.0, 2.0)
    assert (worker.created_s, worker.ready_s, worker.retired_s) == (0.0, 17.0, 52.0)
    assert intervals_of(result, job.worker_id) == [
        ("INITIALIZING", 0.0, 17.0),
        ("RUNNING", 17.0, 22.0),
        ("IDLE", 22.0, 52.0),
    ]
    summary = result.summary.iloc[0]
    # The runpod preset bills from start until stopped: 17 + 5 + 30 = 52 GPU-s x $0.002.
    assert summary.gpu_s_billed == 52.0
    assert summary.cost_usd == pytest.approx(52.0 * 0.002, rel=1e-12)
    assert result.end_s == 100.0


def test_the_state_table_preset_bills_start_up_and_running_but_not_idle() -> None:
    result = run(
        endpoint(times=(0.0,), cold=STAGED, service=Constant(5.0), idle_timeout_s=30.0),
        duration_s=100.0,
        prices={"A100": 0.002},
        billing="runpod_state_table",
    )
    assert result.summary.iloc[0].gpu_s_billed == 17.0 + 5.0


def test_second_worker_on_the_same_host_finds_the_image_cached() -> None:
    # Two jobs at once: both workers start at t=0 on one host; the second waits for the
    # first's pull (it lands at 10 s), so neither pulls twice. A third, started after the
    # pull landed, skips the pull.
    result = run(
        endpoint(times=(0.0, 0.0, 30.0), cold=STAGED, service=Constant(5.0), max_workers=3, idle_timeout_s=100.0),
        duration_s=60.0,
    )
    workers = result.workers.sort_values("created_s")
    assert workers["image_pull_s"].tolist() == [10.0, 10.0]
    # The third job finds an idle warm worker (idle timeout 100 s), so no third worker.
    assert result.jobs["cold"].tolist() == [True, True, False]
    assert result.jobs["start_s"].tolist() == [17.0, 17.0, 30.0]


def test_worker_started_after_pull_landed_skips_it() -> None:
    result = run(
        endpoint(times=(0.0, 20.0), cold=STAGED, service=Constant(100.0), max_workers=2),
        duration_s=200.0,
    )
    pulls = result.workers.sort_values("created_s")["image_pull_s"].tolist()
    assert pulls == [10.0, 0.0]
    second = result.jobs.iloc[1]
    assert second.start_s == 20.0 + 7.0  # container 2 + runtime 3 + weights 2


def test_full_host_throttles_until_a_gpu_frees() -> None:
    quick = ColdStartProfile(container_start_s=1.0)
    a = endpoint("a", times=(0.0,), cold=quick, service=Constant(10.0), idle_timeout_s=5.0)
    b = endpoint("b", times=(1.0,), cold=quick, service=Constant(10.0), idle_timeout_s=5.0)
    result = run(a, b, hosts=(HostSpec("h", {"A100": 1}),), duration_s=50.0)
    ja, jb = result.jobs.sort_values("arrival_s").itertuples()
    # a: container up at 1, GPU free, runs 1 -> 11, idle until 16, retired -> GPU freed at 16.
    assert (ja.start_s, ja.end_s) == (1.0, 11.0)
    # b: container up at 2, no GPU: THROTTLED 2 -> 16, then runs 16 -> 26.
    assert (jb.start_s, jb.end_s) == (16.0, 26.0)
    assert intervals_of(result, jb.worker_id)[:3] == [
        ("INITIALIZING", 1.0, 2.0),
        ("THROTTLED", 2.0, 16.0),
        ("RUNNING", 16.0, 26.0),
    ]
    throttled = result.intervals[result.intervals["state"] == "THROTTLED"]
    assert not throttled["billed"].any()
    assert result.summary.set_index("endpoint").loc["b", "mean_throttled"] == pytest.approx(14.0 / 50.0)


def test_flash_boot_revives_within_retention_and_not_after() -> None:
    cold = ColdStartProfile(container_start_s=1.0, model_size_gb=8.0, host_cache_bandwidth_gb_s=4.0, flash_resume_s=0.5, flash_retention_s=100.0)
    result = run(
        endpoint(times=(0.0, 20.0, 200.0), cold=cold, service=Constant(1.0), idle_timeout_s=5.0, flash_boot=True),
        duration_s=250.0,
    )
    jobs = result.jobs.sort_values("arrival_s")
    # Full start 1 + 2 = 3 s: runs 3 -> 4, retired at 9, resumable until 109.
    # At 20: revived in 0.5 s -> runs 20.5 -> 21.5, retired at 26.5, resumable until 126.5.
    # At 200 the snapshot has expired: a full 3-s start again.
    assert jobs["start_s"].tolist() == [3.0, 20.5, 203.0]
    assert result.workers.sort_values("created_s")["flash_resumed"].tolist() == [False, True, False]
    assert result.summary.iloc[0].flash_resumes == 1


def test_flash_boot_off_means_full_cold_starts() -> None:
    cold = ColdStartProfile(container_start_s=1.0, flash_resume_s=0.5, flash_retention_s=100.0)
    result = run(endpoint(times=(0.0, 20.0), cold=cold, service=Constant(1.0), flash_boot=False), duration_s=50.0)
    assert result.jobs["start_s"].tolist() == [1.0, 21.0]


def test_active_workers_are_always_on_and_discounted() -> None:
    # One active worker (min 1) for the whole 100 s run, at 30% off; the job it runs is not billed twice.
    result = run(
        endpoint(times=(10.0,), min_workers=1, max_workers=1, service=Constant(5.0)),
        duration_s=100.0,
        prices={"A100": 0.01},
        discount=0.3,
    )
    assert result.jobs.iloc[0].start_s == 10.0 and not result.jobs.iloc[0].cold
    summary = result.summary.iloc[0]
    assert summary.gpu_s_billed == pytest.approx(100.0)
    assert summary.cost_usd == pytest.approx(100.0 * 0.01 * 0.7)


def test_execution_timeout_ends_the_job_as_timed_out() -> None:
    result = run(endpoint(times=(0.0,), service=Constant(50.0), execution_timeout_s=20.0), duration_s=30.0)
    job = result.jobs.iloc[0]
    assert job.status == "TIMED_OUT" and job.end_s == 20.0


def test_jobs_left_at_the_drain_limit_are_cancelled() -> None:
    # max_workers 0: nothing can ever run the job; it is cancelled when the drain limit ends the run.
    from gpuserve.core.billing import BillingModel
    from gpuserve.sim.engine import SimConfig, Simulation
    from gpuserve.sim.records import build_result

    ep = endpoint(times=(1.0,), max_workers=0)
    config = SimConfig((ep,), billing=BillingModel({}), duration_s=10.0, drain_limit_s=5.0)
    result = build_result(Simulation(config).run())
    assert result.jobs.iloc[0].status == "CANCELLED"
    assert result.end_s == 15.0


def test_concurrency_lets_one_worker_take_several_jobs() -> None:
    result = run(
        endpoint(times=(0.0, 0.0, 0.0), concurrency=3, scaler_value=3, service=Constant(4.0), cold=ColdStartProfile(container_start_s=2.0)),
        duration_s=20.0,
    )
    assert result.jobs["worker_id"].nunique() == 1
    assert result.jobs["start_s"].tolist() == [2.0, 2.0, 2.0]
    # One worker: INITIALIZING 0 -> 2, RUNNING 2 -> 6, IDLE 6 -> 11 (idle timeout 5 s), all billed.
    assert result.summary.iloc[0].gpu_s_billed == 11.0
