"""The job state machine, with Runpod's status names and a transition check that rejects illegal moves.

    IN_QUEUE ──take──> IN_PROGRESS ──done──> COMPLETED | FAILED
        │                  │  └──timeout──> TIMED_OUT
        │                  ├──cancel───> CANCELLED
        │                  └──worker lost (retry left)──> IN_QUEUE
        └──cancel──> CANCELLED
    FAILED | TIMED_OUT ──/retry──> IN_QUEUE
"""

from __future__ import annotations

from enum import StrEnum

from gpuserve.core.errors import IllegalTransitionError

__all__ = ["TERMINAL_STATUSES", "JobStatus", "can_transition", "transition"]


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
