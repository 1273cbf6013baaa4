"""The /status body built from a job's fields, at explicit times, and the store's Job using it unchanged."""

from __future__ import annotations

from gpuserve.core.jobs import JobStatus, status_body
from gpuserve.store.base import Job


def _body(status: JobStatus, **fields: object) -> dict[str, object]:
    args: dict[str, object] = {
        "created_s": 100.0, "started_s": None, "completed_s": None, "worker_id": None,
        "output": None, "has_output": False, "error": None,
    }
    args.update(fields)
    return status_body("j1", status, **args)  # type: ignore[arg-type]


def test_a_queued_job_shows_only_its_id_and_status():
    assert _body(JobStatus.IN_QUEUE) == {"id": "j1", "status": "IN_QUEUE"}
    # Cancelled before it started: still no times (it never ran).
    assert _body(JobStatus.CANCELLED, completed_s=104.0) == {"id": "j1", "status": "CANCELLED"}


def test_times_are_whole_ms_once_started_and_once_ended():
    running = _body(JobStatus.IN_PROGRESS, started_s=100.5, worker_id="w")
    assert running == {"id": "j1", "status": "IN_PROGRESS", "delayTime": 500, "workerId": "w"}
    done = _body(JobStatus.COMPLETED, started_s=100.5, completed_s=102.2504, worker_id="w", output=1, has_output=True)
    assert done == {"id": "j1", "status": "COMPLETED", "delayTime": 500, "executionTime": 1750, "workerId": "w", "output": 1}
    # A clock that steps back never shows a negative time.
    assert _body(JobStatus.IN_PROGRESS, started_s=99.0)["delayTime"] == 0


def test_output_error_and_retries():
    # COMPLETED always carries output, null included; others only once a progress update set it.
    assert _body(JobStatus.COMPLETED, started_s=101.0, completed_s=102.0)["output"] is None
    assert "output" not in _body(JobStatus.FAILED, started_s=101.0, completed_s=102.0, error="boom")
    assert _body(JobStatus.IN_PROGRESS, started_s=101.0, output={"pct": 50}, has_output=True)["output"] == {"pct": 50}
    failed = _body(JobStatus.FAILED, started_s=101.0, completed_s=102.0, error="boom", retries=2)
    assert failed["error"] == "boom" and failed["retries"] == 2
    assert "retries" not in _body(JobStatus.IN_QUEUE, retries=0)


def test_the_store_job_body_is_the_core_body():
    job = Job(
        id="j1", endpoint_id="ep", seq=1, status=JobStatus.COMPLETED, payload={"input": {}}, payload_json='{"input":{}}',
        low_priority=False, execution_timeout_s=600.0, ttl_s=86_400.0, retention_s=1_800.0, created_s=100.0,
        queued_s=100.0, started_s=105.0, completed_s=107.0, worker_id="w", output=42, has_output=True, retries=1,
    )
    assert job.status_body() == {
        "id": "j1", "status": "COMPLETED", "delayTime": 5000, "executionTime": 2000, "workerId": "w", "output": 42,
        "retries": 1,
    }
