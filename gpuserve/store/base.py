"""The live job store contract: the Job record, the lease fence on workers' posts, what a result does, the JobStore protocol.

Every take is a lease: the job's `worker_id` is its holder and `attempt` (how many times it was
taken) its fencing token. A worker's post (result, progress, stream chunk) counts only while it
holds the current lease (`holds`), so a worker that lost its job (requeued after missed
heartbeats, timed out, cancelled, taken again) cannot change it, and a job's result comes from at
most one run per attempt. Heartbeats renew the leases of what a worker holds (`JobStore.renew`);
a lease nobody renews expires in `sweep` and the job goes back to the queue (attempt counted), the
way a lost worker's jobs do: with several servers on one database, that is how the jobs of a
server that died are found.

Write first, then tell: every state a client can see (a status, a stream chunk, a webhook) is
committed before the call that makes it returns, and a write that fails raises
`gpuserve.core.errors.StoreError` with the store's state (memory included) as it was before the
call. Stream chunks are rows of the job, stamped with the attempt that produced them: a requeue
deletes the old attempt's unread chunks with it, and a read deletes what it hands out, so each
chunk goes out once across restarts. A terminal state of a job with a `webhook` writes an outbox
row (`OutboxWebhook`) in the same transaction; the runtime claims due rows, POSTs them, and deletes
or reschedules each, so retries survive restarts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gpuserve.core.jobs import JobStatus, status_body
from gpuserve.core.types import QueueStats
from gpuserve.store.spill import OnDisk, Spillable, on_disk

__all__ = [
    "LEADER_LEASE_S",
    "DoneOutcome",
    "EndpointChange",
    "Job",
    "JobStore",
    "OutboxWebhook",
    "SweepEvent",
    "SweepKind",
    "WorkerRecord",
    "holds",
    "lease_lost_error",
]

# One server runs an endpoint's Controller at a time: it holds the endpoint's leader lease, renewed
# about every second; a leader that dies is replaced once this passes (well within 10 s).
LEADER_LEASE_S = 5.0


@dataclass(kw_only=True)
class Job:
    """One job as the server holds it. Times are Unix seconds; `payload` is what a worker receives.

    `payload`, `payload_json` and `output` may be kept on disk only (store/spill.py): reading one
    then reads it from the store, so a caller never needs to know where it lives. The store's own
    `chunks` list may hold `OnDisk` entries too (its `read_stream` reads them).
    """

    id: str
    endpoint_id: str
    seq: int  # FIFO order within an endpoint; a requeued job keeps it and so goes first
    status: JobStatus
    # Descriptors, not defaults (RUF009): the field holds its value or an OnDisk standing in for it.
    payload: Spillable[dict[str, Any]] = Spillable()  # noqa: RUF009  `input` plus pass-through keys (webhook, s3Config, ...)
    payload_json: Spillable[str] = Spillable()  # noqa: RUF009
    low_priority: bool
    execution_timeout_s: float
    ttl_s: float
    retention_s: float  # how long the result is kept after a terminal state (/run 30 min, /runsync 1 min)
    created_s: float
    queued_s: float  # when it (re)entered the queue
    started_s: float | None = None
    completed_s: float | None = None
    worker_id: str | None = None
    output: Spillable[Any] = Spillable(None)  # noqa: RUF009
    has_output: bool = False
    error: str | None = None
    retries: int = 0
    chunks: list[Any] = field(default_factory=list)
    chunks_sent: int = 0  # chunks already handed out by /stream (each goes out once)
    attempt: int = 0  # takes so far: the fencing token of the current lease
    lease_expires_s: float | None = None  # while IN_PROGRESS: requeued past this unless a heartbeat renews it
    # What `output` and the unread `chunks` hold of the store's memory budget (store/spill.py).
    held_output_bytes: int = field(default=0, repr=False, compare=False)
    held_chunk_bytes: int = field(default=0, repr=False, compare=False)

    @property
    def webhook(self) -> str | None:
        payload = self.__dict__.get("payload")  # in memory, or on disk with its webhook beside it
        hook = payload.get("webhook") if payload is not None else self._spilled_webhook()
        return hook if isinstance(hook, str) and hook else None

    def _spilled_webhook(self) -> str | None:
        spilled = on_disk(self, "payload")
        return spilled.webhook if spilled is not None else None

    def spilled(self, name: str) -> OnDisk | None:
        """The `OnDisk` standing in for `payload`, `payload_json` or `output`, or None while it is in memory."""
        return on_disk(self, name)

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


def holds(job: Job | None, worker_id: str, attempt: int | None = None) -> bool:
    """The fence: whether `worker_id` holds the job's current lease (and, when given, that attempt).

    `attempt` is the token the caller recorded at the take; None accepts the worker's current
    attempt (a post that carries no token). The PostgreSQL store states the same test in SQL.
    """
    return (
        job is not None
        and job.status is JobStatus.IN_PROGRESS
        and job.worker_id == worker_id
        and (attempt is None or job.attempt == attempt)
    )


def lease_lost_error(worker_id: str | None, retries: int) -> str:
    """Why a job whose lease expired failed instead of going back to the queue."""
    return f"the lease of worker {worker_id} expired (no heartbeat); gave up after {retries} retries"


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
    LEASE_EXPIRED = "LEASE_EXPIRED"  # no heartbeat renewed the lease: requeued (or FAILED past max_retries)


@dataclass(frozen=True)
class SweepEvent:
    kind: SweepKind
    job: Job
    worker_id: str | None  # the worker that held the job when it ended this way


@dataclass(frozen=True)
class EndpointChange:
    """One durable change to an endpoint's settings, numbered per endpoint (endpoints.yaml's own settings are version 0).

    `fields` maps dotted settings (`scaling.max_workers`, `env.FOO`, `image`) to their new values;
    None sets one back to what endpoints.yaml says. An `add` holds the whole document's top-level
    settings; a `remove` none. `previous` holds the values they replaced, for the history.
    """

    seq: int  # the order of changes across every endpoint
    endpoint_id: str
    version: int
    at_s: float  # Unix seconds
    actor: str  # the admin key's name (never the key)
    action: str  # "update", "add" or "remove"
    fields: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxWebhook:
    """A webhook the store holds until it is delivered or given up: claimed by `claim_webhooks`.

    `attempts` counts tries so far, the claim that returned it included; `body` is the job's /status
    body as it ended (JSON text), kept even after the job itself expires.
    """

    outbox_id: int
    job_id: str
    url: str
    body: str
    attempts: int


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as every server on a shared store knows it: enough to recognise its calls and to adopt it.

    Written by the server whose backend started (or adopted) it, read by the others: a worker's
    token is checked against `token_hash` on any replica, and a new leader adopts the workers of its
    endpoints that are still alive instead of starting new ones. `seen_s`: the newest heartbeat
    any server heard from it (None before its first); `lists_jobs`: a heartbeat of it has listed a
    job (its silence about a held one then means the job is lost: `registry.on_ping`).
    """

    worker_id: str
    endpoint_id: str
    token_hash: str
    capacity: int
    spec_version: str
    registered_s: float
    seen_s: float | None = None
    lists_jobs: bool = False


class JobStore(Protocol):
    """Where live jobs wait and end. Also the controller's JobQueue (`stats`).

    `poll_fallback_s`: None for a store only this server writes; for one several servers share, how
    often the runtime re-checks what notifications (`listen`) may have missed. `blocking`: a call waits
    on a network round trip (or a remote commit), so the runtime makes it on a thread, never on its
    event loop; a local store (SQLite, a fraction of a millisecond) is called inline.
    """

    poll_fallback_s: float | None
    blocking: bool

    def listen(self, on_queued: Callable[[str], None], on_ended: Callable[[str], None]) -> None:
        """Hear other servers' changes: a job queued on an endpoint, a job ended (no-op when there are none)."""
        ...

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats: ...

    def queue_position(self, job: Job) -> int:
        """A queued job's place in its endpoint's take order (1 = taken next; lowPriority jobs last)."""
        ...

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

    def take(
        self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float, skip: Collection[str] = ()
    ) -> list[Job]:
        """Hand up to `max_jobs` queued jobs to a worker (IN_PROGRESS, a new lease each): FIFO, lowPriority jobs last;
        jobs in `skip` (reserved for another worker, bind_to_launch) stay queued in their place."""
        ...

    def finish(
        self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float, attempt: int | None = None
    ) -> tuple[DoneOutcome, Job | None]:
        """Apply a worker's job-done body (protocol §1.4) if it `holds` the lease; idempotent, never leaves a terminal state."""
        ...

    def fail(self, job_id: str, worker_id: str, reason: str, now_s: float, attempt: int | None = None) -> Job | None: ...

    def add_chunk(self, job_id: str, worker_id: str, chunk: Any, attempt: int | None = None) -> bool: ...

    def note_stopped(self, job_id: str, worker_id: str, note: str) -> bool:
        """Add `note` to the error of a TIMED_OUT or CANCELLED job `worker_id` ran (its handler would not stop); once."""
        ...

    def renew(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        """A heartbeat: extend the leases of those of `job_ids` the worker holds to `now_s` plus the lease length."""
        ...

    def read_chunks(self, job_id: str) -> list[Any]:
        """Chunks not yet handed out, marked as handed out."""
        ...

    def read_stream(self, job_id: str) -> tuple[int, list[Any]] | None:
        """(attempt, chunks): the chunks not yet handed out, deleted (durably) before they are returned, and the
        attempt that produced them (the job's current one when there are none); None when the job does not exist."""
        ...

    def claim_webhooks(self, now_s: float, claim_s: float, limit: int) -> list[OutboxWebhook]:
        """Up to `limit` outbox webhooks due by `now_s`, each claimed (an attempt counted, due again at
        `now_s + claim_s` unless `webhook_done` or `webhook_retry` settles it first: a server that dies mid-POST)."""
        ...

    def webhook_done(self, outbox_id: int) -> None:
        """Delivered, or given up: the row goes."""
        ...

    def webhook_retry(self, outbox_id: int, due_s: float) -> None:
        """A failed try: due again at `due_s`."""
        ...

    def pending_webhooks(self) -> int:
        """Outbox rows not yet delivered or given up (audits)."""
        ...

    def probe(self) -> None:
        """A small real write (and its undo); raises StoreError while the store cannot write."""
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

    def lead(self, endpoint_id: str, now_s: float, lease_s: float) -> int | None:
        """Take or renew the endpoint's leader lease until `now_s + lease_s`: its fencing term (it grows with
        each new leader) while this server leads, None while another server's lease runs."""
        ...

    def resign(self, endpoint_id: str) -> None:
        """Give the leader lease up (a clean shutdown), so another server takes over at once."""
        ...

    def put_worker(self, record: WorkerRecord) -> None:
        """Record a worker this server runs (replacing an older record of it), so any server recognises it.

        A store only one server writes keeps nothing: its registry is the only directory needed."""
        ...

    def drop_worker(self, worker_id: str) -> None:
        """Forget a worker that is gone (its token opens nothing any more)."""
        ...

    def find_worker(self, worker_id: str) -> WorkerRecord | None:
        """The record of a worker another server started (None: unknown, or a store nobody shares)."""
        ...

    def workers_of(self, endpoint_id: str) -> list[WorkerRecord]:
        """Every recorded worker of an endpoint (what a new leader may adopt), oldest first."""
        ...

    def saw_workers(self, worker_ids: Collection[str], now_s: float, listing: Collection[str] = ()) -> None:
        """Heartbeats from these workers reached this server at `now_s` (their records' `seen_s`); those
        `listing` have listed a job (`lists_jobs`)."""
        ...

    def sweep(self, now_s: float) -> list[SweepEvent]:
        """Apply every deadline that has passed: execution timeouts, ttl, expired leases and result retention."""
        ...

    def next_deadline_s(self) -> float | None: ...

    def health(self, endpoint_id: str) -> dict[str, int]: ...

    def count(self, endpoint_id: str | None = None) -> int:
        """Jobs held durably (rows), for audits: nothing accepted is ever lost."""
        ...

    def record_change(
        self,
        endpoint_id: str,
        action: str,
        fields: dict[str, Any],
        previous: dict[str, Any],
        actor: str,
        now_s: float,
    ) -> EndpointChange:
        """Store a change to an endpoint's settings durably (committed on return) as its next version."""
        ...

    def changes(self, endpoint_id: str | None = None, after_seq: int = 0) -> list[EndpointChange]:
        """Stored endpoint changes in the order they were made (one endpoint's, or all), after `after_seq`."""
        ...

    def close(self) -> None: ...
