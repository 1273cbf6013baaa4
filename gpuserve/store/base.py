"""The live job store contract: the Job record, what a worker's result does to it, and the JobStore protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gpuserve.core.jobs import JobStatus, status_body
from gpuserve.core.types import QueueStats

__all__ = ["DoneOutcome", "Job", "JobStore", "SweepEvent", "SweepKind"]


@dataclass
class Job:
    """One job as the server holds it. Times are Unix seconds; `payload` is what a worker receives."""

    id: str
    endpoint_id: str
    seq: int  # FIFO order within an endpoint; a requeued job keeps it and so goes first
    status: JobStatus
    payload: dict[str, Any]  # `input` plus pass-through keys (webhook, policy, s3Config, ...)
    payload_json: str
    low_priority: bool
    execution_timeout_s: float
    ttl_s: float
    retention_s: float  # how long the result is kept after a terminal state (/run 30 min, /runsync 1 min)
    created_s: float
    queued_s: float  # when it (re)entered the queue
    started_s: float | None = None
    completed_s: float | None = None
    worker_id: str | None = None
    output: Any = None
    has_output: bool = False
    error: str | None = None
    retries: int = 0
    chunks: list[Any] = field(default_factory=list)
    chunks_sent: int = 0  # chunks already handed out by /stream (each goes out once)

    @property
    def webhook(self) -> str | None:
        hook = self.payload.get("webhook")
        return hook if isinstance(hook, str) and hook else None

    def worker_json(self) -> str:
        """The job dict a worker receives, serialised: id, input and every pass-through key.

        Built by splicing the stored payload JSON so a large input is not re-encoded per take.
        """
        return '{"id":' + json.dumps(self.id) + "," + self.payload_json[1:]

    def status_body(self) -> dict[str, Any]:
        """The /status body of Runpod's API: times in ms, output, error when it failed."""
        return status_body(
            self.id,
            self.status,
            created_s=self.created_s,
            started_s=self.started_s,
            completed_s=self.completed_s,
            worker_id=self.worker_id,
            output=self.output,
            has_output=self.has_output,
            error=self.error,
            retries=self.retries,
        )


class DoneOutcome(StrEnum):
    """What a job-done post did."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    PROGRESS = "PROGRESS"  # an interim `{"status": "IN_PROGRESS"}` update
    IGNORED = "IGNORED"  # duplicate, late (cancelled, timed out, deleted) or not this worker's job


class SweepKind(StrEnum):
    TIMED_OUT = "TIMED_OUT"  # executionTimeout passed: the job is TIMED_OUT, its worker must stop it
    TTL_EXPIRED = "TTL_EXPIRED"  # ttl passed before the job ended: deleted, even mid-run
    RESULT_EXPIRED = "RESULT_EXPIRED"  # retention after the terminal state passed: deleted


@dataclass(frozen=True)
class SweepEvent:
    kind: SweepKind
    job: Job
    worker_id: str | None  # the worker that held the job when it ended this way


class JobStore(Protocol):
    """Where live jobs wait and end. Also the controller's JobQueue (`stats`)."""

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats: ...

    def submit(
        self,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        now_s: float,
        low_priority: bool = False,
        execution_timeout_s: float = 600.0,
        ttl_s: float = 86_400.0,
        retention_s: float = 1_800.0,
    ) -> Job:
        """Store a job durably (committed on return) at the tail of its endpoint's queue."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def take(self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float) -> list[Job]:
        """Hand up to `max_jobs` queued jobs, oldest first, to a worker (IN_PROGRESS)."""
        ...

    def finish(self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float) -> tuple[DoneOutcome, Job | None]:
        """Apply a worker's job-done body (protocol §1.4); idempotent, never leaves a terminal state."""
        ...

    def fail(self, job_id: str, worker_id: str, reason: str, now_s: float) -> Job | None: ...

    def add_chunk(self, job_id: str, worker_id: str, chunk: Any) -> bool: ...

    def read_chunks(self, job_id: str) -> list[Any]:
        """Chunks not yet handed out, marked as handed out."""
        ...

    def cancel(self, job_id: str, now_s: float) -> tuple[Job, JobStatus] | None:
        """Cancel a queued or running job; returns the job and its status before the call."""
        ...

    def retry(self, job_id: str, now_s: float) -> Job:
        """Requeue a FAILED or TIMED_OUT job under the same id (IllegalTransitionError otherwise)."""
        ...

    def purge(self, endpoint_id: str) -> int:
        """Delete every queued job of an endpoint; returns how many."""
        ...

    def requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float, max_retries: int) -> list[Job]:
        """A worker was lost: those of `job_ids` it still runs go back to the queue (retries + 1), or FAILED
        past the limit. Which jobs a worker holds is the worker registry's to know, not the store's."""
        ...

    def in_progress(self, endpoint_id: str | None = None) -> list[Job]: ...

    def sweep(self, now_s: float) -> list[SweepEvent]:
        """Apply every deadline that has passed: execution timeouts, ttl and result retention."""
        ...

    def next_deadline_s(self) -> float | None: ...

    def health(self, endpoint_id: str) -> dict[str, int]: ...

    def count(self, endpoint_id: str | None = None) -> int:
        """Jobs held durably (rows), for audits: nothing accepted is ever lost."""
        ...

    def close(self) -> None: ...
