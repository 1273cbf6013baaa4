"""Stopping the server drains its workers first: an in-flight job still completes and workers exit cleanly."""

from __future__ import annotations

from dataclasses import replace

from gpuserve.store.sqlite import SqliteJobStore
from tests.support.live import deployment


def test_server_stop_lets_the_running_job_finish_and_the_worker_exit_cleanly(make_server):
    dep = replace(deployment("ep", "slow_gpuserve.py", max_workers=1, idle_timeout_s=60), sdk="gpuserve")
    h = make_server([dep], backend="process")
    job_id = h.submit({"input": {"sleep_s": 2}})
    worker_id = h.wait_status(job_id, {"IN_PROGRESS"})["workerId"]
    backend = h.rt.backend
    h.platform.stop()
    # The result was posted while the socket was still open, so the store has it.
    job = SqliteJobStore(h.data_dir / "jobs.sqlite3").get(job_id)
    assert job is not None and job.status.value == "COMPLETED"
    # SIGTERM, not SIGKILL: the worker logged its own orderly exit after that one job.
    assert "exits after 1 job(s)" in backend.logs(worker_id)
