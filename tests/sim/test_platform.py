"""Exact timelines for the whole platform: dispatch, crashes, host failures, updates, job options, extra workers, account limit."""

from __future__ import annotations

from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.failures import FailureModel, HostFailure, Update
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.service import Constant
from tests.sim.sim_builders import endpoint, intervals_of, run

ONE_S = ColdStartProfile(container_start_s=1.0)  # every start takes 1 s


def test_bind_to_launch_makes_the_job_wait_for_the_worker_it_started() -> None:
    # A at 0 starts w0 (ready 10, runs 10 -> 16); B at 12 starts w1 (ready 22). Shared queue:
    # w0 frees at 16 and takes B, w1 comes up idle. Bound: B waits for w1 and starts at 22.
    cold = ColdStartProfile(container_start_s=10.0)
    results = {
        mode: run(endpoint(times=(0.0, 12.0), cold=cold, service=Constant(6.0), max_workers=2, dispatch=mode), duration_s=100.0)
        for mode in ("shared_queue", "bind_to_launch")
    }
    shared, bound = results["shared_queue"], results["bind_to_launch"]
    assert shared.jobs["start_s"].tolist() == [10.0, 16.0]
    assert shared.jobs["cold"].tolist() == [True, False]
    assert shared.jobs["worker_id"].tolist() == ["ep-w0", "ep-w0"]
    assert bound.jobs["start_s"].tolist() == [10.0, 22.0]
    assert bound.jobs["cold"].tolist() == [True, True]
    assert bound.jobs["worker_id"].tolist() == ["ep-w0", "ep-w1"]
    for result, waited in ((shared, 0.5), (bound, 1.0)):
        row = result.summary.iloc[0]
        assert row.cold_start_fraction == waited  # jobs that waited for a start
        assert row.workers_started_per_job == 1.0  # two starts for two jobs either way


def test_a_flash_resume_is_never_slower_than_the_cold_start_it_replaces() -> None:
    # A 0.15-s start with the default 2-s resume: the job at 10 resumes in 0.15 s, not 2 s.
    cold = ColdStartProfile(container_start_s=0.15, flash_retention_s=100.0)
    result = run(endpoint(times=(0.0, 10.0), cold=cold, service=Constant(1.0), idle_timeout_s=1.0, flash_boot=True), duration_s=50.0)
    assert result.workers["flash_resumed"].tolist() == [False, True]
    assert result.workers["flash_resume_s"].tolist() == [0.0, 0.15]
    assert result.jobs["start_s"].tolist() == [0.15, 10.15]


def test_a_crash_requeues_the_job_and_the_worker_is_unhealthy_and_unbilled() -> None:
    # w0 ready at 1 runs the job from 1; it crashes at 3 (a traced failure). The job goes back
    # to the queue (retry 1); w0 is UNHEALTHY 3 -> 4 (the first crash back-off, 1 s) and bills
    # nothing there. The replacement starts at 3, waits the back-off to 4, is ready at 5 and
    # runs the job 5 -> 10.
    result = run(
        endpoint(times=(0.0,), cold=ONE_S, service=Constant(5.0), failures=FailureModel(crash_times_s=(3.0,))),
        duration_s=100.0,
    )
    job = result.jobs.iloc[0]
    assert (job.status, job.start_s, job.end_s, job.retries, job.worker_id) == ("COMPLETED", 5.0, 10.0, 1, "ep-w1")
    assert intervals_of(result, "ep-w0") == [("INITIALIZING", 0.0, 1.0), ("RUNNING", 1.0, 3.0), ("UNHEALTHY", 3.0, 4.0)]
    iv = result.intervals
    assert iv.loc[iv["state"] == "UNHEALTHY", "billed_s"].sum() == 0.0
    assert iv.loc[iv["worker_id"] == "ep-w0", "billed_s"].sum() == 3.0
    workers = result.workers.set_index("worker_id")
    assert workers.loc["ep-w0", "crashed"] and workers.loc["ep-w0", "crash_streak"] == 1
    assert workers.loc["ep-w1", "crash_backoff_s"] == 1.0
    assert intervals_of(result, "ep-w1")[:2] == [("INITIALIZING", 3.0, 5.0), ("RUNNING", 5.0, 10.0)]
    row = result.summary.iloc[0]
    assert (row.worker_crashes, row.retried_jobs, row.failed, bool(row.failing)) == (1, 1, 0, False)


def test_past_max_retries_the_job_of_a_crashed_worker_fails() -> None:
    result = run(
        endpoint(times=(0.0,), cold=ONE_S, service=Constant(5.0), failures=FailureModel(crash_times_s=(3.0,))),
        duration_s=100.0,
        max_retries=0,
    )
    job = result.jobs.iloc[0]
    assert (job.status, job.end_s, job.end_reason, job.retries) == ("FAILED", 3.0, "retries_exhausted", 0)


def test_an_endpoint_whose_starts_always_crash_backs_off_and_shows_as_failing() -> None:
    # Every start crashes when it would be ready (1 s after it begins). Each replacement starts
    # at once but waits the back-off: 1, 2, 4 s after the 1st, 2nd, 3rd crash in a row.
    result = run(
        endpoint(times=(0.0,), cold=ONE_S, service=Constant(1.0), failures=FailureModel(crash_per_start=1.0)),
        duration_s=20.0,
    )
    workers = result.workers.sort_values("created_s")
    assert workers["created_s"].tolist()[:4] == [0.0, 1.0, 3.0, 6.0]
    assert workers["crash_backoff_s"].tolist()[:4] == [0.0, 1.0, 2.0, 4.0]
    assert workers["crash_streak"].tolist()[:4] == [1, 2, 3, 4]
    row = result.summary.iloc[0]
    assert bool(row.failing) and row.crash_streak_max >= 3
    assert result.jobs.iloc[0].status == "CANCELLED" and result.jobs.iloc[0].end_reason == "drain_limit"


def test_a_host_failure_takes_its_workers_down_until_it_is_back() -> None:
    # The host fails at 5 for 10 s: w0 crashes (UNHEALTHY until the host is back at 15), its
    # job is requeued; the replacement is up at 6 but has no GPU until 15 (THROTTLED).
    result = run(
        endpoint(times=(0.0,), cold=ONE_S, service=Constant(20.0)),
        duration_s=100.0,
        hosts=(HostSpec("h", {"A100": 2}),),
        host_failures=(HostFailure("h", 5.0, 10.0),),
    )
    job = result.jobs.iloc[0]
    assert (job.start_s, job.end_s, job.retries, job.worker_id) == (15.0, 35.0, 1, "ep-w1")
    assert intervals_of(result, "ep-w0") == [("INITIALIZING", 0.0, 1.0), ("RUNNING", 1.0, 5.0), ("UNHEALTHY", 5.0, 15.0)]
    assert intervals_of(result, "ep-w1")[:3] == [("INITIALIZING", 5.0, 6.0), ("THROTTLED", 6.0, 15.0), ("RUNNING", 15.0, 35.0)]
    assert result.workers.set_index("worker_id").loc["ep-w0", "crash_cause"] == "host"


def test_an_update_makes_busy_workers_outdated_until_they_finish_their_job() -> None:
    # w0 runs job A 1 -> 11; the update at 5 makes it OUTDATED (billed while it finishes),
    # and a replacement starts at 5 (ready 6). Job B at 7 goes to the new worker.
    result = run(
        endpoint(times=(0.0, 7.0), cold=ONE_S, service=Constant(10.0), max_workers=2),
        duration_s=100.0,
        updates=(Update(5.0, "ep"),),
    )
    assert intervals_of(result, "ep-w0") == [("INITIALIZING", 0.0, 1.0), ("RUNNING", 1.0, 5.0), ("OUTDATED", 5.0, 11.0)]
    workers = result.workers.set_index("worker_id")
    assert workers.loc["ep-w0", "outdated"] and workers.loc["ep-w0", "retired_s"] == 11.0
    assert result.jobs["worker_id"].tolist() == ["ep-w0", "ep-w1"]
    assert result.jobs["start_s"].tolist() == [1.0, 7.0]
    iv = result.intervals
    assert iv.loc[iv["state"] == "OUTDATED", "billed_s"].sum() == 6.0


def test_ttl_discards_a_job_in_the_queue_and_mid_run() -> None:
    # Cold start 5 s. ttl 3: the job is discarded at 3 while queued. ttl 8: it starts at 5
    # and is discarded at 8, mid-run; its worker goes idle then.
    cold = ColdStartProfile(container_start_s=5.0)
    queued = run(endpoint(times=(0.0,), cold=cold, jobs=JobOptions(ttl_s=3.0)), duration_s=50.0)
    job = queued.jobs.iloc[0]
    assert (job.status, job.end_s, job.end_reason) == ("CANCELLED", 3.0, "ttl_expired")
    running = run(endpoint(times=(0.0,), cold=cold, service=Constant(10.0), jobs=JobOptions(ttl_s=8.0)), duration_s=50.0)
    job = running.jobs.iloc[0]
    assert (job.status, job.start_s, job.end_s, job.end_reason) == ("CANCELLED", 5.0, 8.0, "ttl_expired")
    assert intervals_of(running, "ep-w0")[:3] == [("INITIALIZING", 0.0, 5.0), ("RUNNING", 5.0, 8.0), ("IDLE", 8.0, 13.0)]
    assert running.summary.iloc[0].ttl_expired == 1


def test_a_per_job_execution_timeout_ends_it_timed_out() -> None:
    result = run(endpoint(times=(0.0,), cold=ONE_S, service=Constant(10.0), jobs=JobOptions(execution_timeout_s=2.0)), duration_s=50.0)
    job = result.jobs.iloc[0]
    assert (job.status, job.start_s, job.end_s) == ("TIMED_OUT", 1.0, 3.0)


def test_a_low_priority_job_never_starts_a_worker() -> None:
    result = run(endpoint(times=(0.0,), cold=ONE_S, jobs=JobOptions(low_priority_fraction=1.0)), duration_s=10.0)
    assert len(result.workers) == 0
    job = result.jobs.iloc[0]
    assert job.low_priority and job.status == "CANCELLED" and job.end_reason == "drain_limit"


def test_a_client_cancels_after_its_patience_and_a_runsync_client_gives_up_after_its_wait() -> None:
    cold = ColdStartProfile(container_start_s=5.0)
    cancelled = run(endpoint(times=(0.0,), cold=cold, jobs=JobOptions(cancel_fraction=1.0, patience=Constant(2.0))), duration_s=50.0)
    job = cancelled.jobs.iloc[0]
    assert (job.status, job.end_s, job.end_reason) == ("CANCELLED", 2.0, "client_cancel")
    waited = run(
        endpoint(times=(0.0, 20.0), cold=cold, service=Constant(5.0), idle_timeout_s=30.0, jobs=JobOptions(runsync_fraction=1.0, runsync_wait_s=3.0)),
        duration_s=50.0,
    )
    # The first ends at 10 (it waited 5 s for the start): its client gave up at 3 and the job
    # ran on. The second finds the worker warm but runs 5 s, past the 3-s wait too.
    assert waited.jobs["status"].tolist() == ["COMPLETED", "COMPLETED"]
    assert waited.jobs["client_gave_up"].tolist() == [True, True]
    quick = run(endpoint(times=(0.0,), service=Constant(1.0), jobs=JobOptions(runsync_fraction=1.0, runsync_wait_s=3.0)), duration_s=50.0)
    assert quick.jobs["client_gave_up"].tolist() == [False]
    assert waited.summary.iloc[0].client_gave_up == 2


def test_extra_workers_start_on_a_spike_only_when_the_image_is_cached() -> None:
    # Five jobs at once, max_workers 1. The first start caches the image at once (no pull),
    # so the next arrivals find it cached: 2 extra workers. With a 10-s pull nobody has the
    # image while the jobs arrive: no extra worker. Opting out (0) gives none either.
    spike = (0.0, 0.0, 0.0, 0.0, 0.0)
    cached = run(endpoint(times=spike, cold=ONE_S, max_workers=1, extra_workers=2), duration_s=50.0)
    assert len(cached.workers) == 3
    pulled = ColdStartProfile(image="img", image_size_gb=10.0, pull_bandwidth_gb_s=1.0)
    assert len(run(endpoint(times=spike, cold=pulled, max_workers=1, extra_workers=2), duration_s=50.0).workers) == 1
    assert len(run(endpoint(times=spike, cold=ONE_S, max_workers=1, extra_workers=0), duration_s=50.0).workers) == 1


def test_the_account_limit_caps_workers_across_endpoints() -> None:
    # Two endpoints of max 3 with 3 jobs each at 0, an account of 4 workers: a and b get 3
    # and 1; b's other two start when a's workers retire (idle 5 s after their jobs end at 6).
    a = endpoint("a", times=(0.0, 0.0, 0.0), cold=ONE_S)
    b = endpoint("b", times=(0.0, 0.0, 0.0), cold=ONE_S, service=Constant(20.0))
    result = run(a, b, duration_s=100.0, account_max_workers=4)
    created = result.workers.groupby("endpoint")["created_s"].apply(sorted).to_dict()
    assert created["a"] == [0.0, 0.0, 0.0]
    assert created["b"] == [0.0, 11.0, 11.0]
    assert set(result.jobs["status"]) == {"COMPLETED"}
