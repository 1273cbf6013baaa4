"""The job state machine, with Runpod's status names and a transition check that rejects illegal moves; the /status body.

    IN_QUEUE ──take──> IN_PROGRESS ──done──> COMPLETED | FAILED
        │                  │  └──timeout──> TIMED_OUT
        │                  ├──cancel───> CANCELLED
        │                  └──worker lost (retry left)──> IN_QUEUE
        └──cancel──> CANCELLED
    FAILED | TIMED_OUT ──/retry──> IN_QUEUE
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from gpuserve.core.errors import IllegalTransitionError

__all__ = ["HANDLER_STUCK_KEY", "TERMINAL_STATUSES", "JobStatus", "can_transition", "status_body", "transition"]


class JobStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.IN_QUEUE: frozenset(
        # FAILED straight from the queue: retries exhausted or a queue-side error.
        {JobStatus.IN_PROGRESS, JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.TIMED_OUT}
    ),
    JobStatus.IN_PROGRESS: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.TIMED_OUT,
            JobStatus.IN_QUEUE,  # the worker died; the job is requeued with a retry count
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    # Runpod's /retry is valid only for FAILED and TIMED_OUT jobs.
    JobStatus.FAILED: frozenset({JobStatus.IN_QUEUE}),
    JobStatus.TIMED_OUT: frozenset({JobStatus.IN_QUEUE}),
}


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    return target in _ALLOWED[source]


def transition(source: JobStatus, target: JobStatus) -> JobStatus:
    """Return `target` if the move is legal, else raise IllegalTransitionError."""
    if not can_transition(source, target):
        raise IllegalTransitionError("job", source.value, target.value)
    return target


def status_body(
    job_id: str,
    status: JobStatus,
    *,
    created_s: float,
    started_s: float | None,
    completed_s: float | None,
    worker_id: str | None,
    output: Any,
    has_output: bool,
    error: str | None,
    retries: int = 0,
) -> dict[str, Any]:
    """The /status body of Runpod's API from a job's fields: times in ms, output, error when it failed.

    Times are seconds on one clock (any epoch). `delayTime` appears once the job has started
    and `executionTime` once it has ended; a job created at 10.0 s, started at 10.5 s and
    completed at 12.25 s reads delayTime 500 and executionTime 1750.
    """
    body: dict[str, Any] = {"id": job_id, "status": status.value}
    if started_s is not None:
        body["delayTime"] = max(0, round((started_s - created_s) * 1000))
        if completed_s is not None:
            body["executionTime"] = max(0, round((completed_s - started_s) * 1000))
        if worker_id is not None:
            body["workerId"] = worker_id
    # A COMPLETED job always shows `output`, null included (the SDK reads it); others only once set.
    if has_output or status is JobStatus.COMPLETED:
        body["output"] = output
    if error is not None:
        body["error"] = error
    if retries:
        body["retries"] = retries
    return body


# A gpuserve worker's job-done body key for a job the server already stopped (TIMED_OUT, CANCELLED):
# its sync handler would not return, so the worker is being replaced; the server adds the body's
# `error` to the job's (gpuserve.worker.slots sends it, Runtime.job_done records it).
HANDLER_STUCK_KEY = "gpuserve_handler_stuck"
