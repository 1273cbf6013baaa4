"""SqliteJobStore: jobs in an SQLite file (WAL) mirrored by an in-memory index for O(log n) queue operations.

Every state a restart must see is written through before the call returns: a submit is
committed before /run answers, and terminal states, requeues and retries are committed as
they happen. IN_PROGRESS is deliberately not written: a job that was running when the
server died goes back to the queue on the next start anyway (its worker's result would
arrive at a server that no longer knows the assignment), so the write would buy nothing.

synchronous=NORMAL by default: in WAL mode a commit then survives a crash or SIGKILL of
the server process; only an operating-system crash or power cut can roll back the last
few commits. FULL adds one fsync per commit (milliseconds on most disks); pass
`synchronous="FULL"` when that trade is wanted.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from gpuserve.core.errors import ConfigError, IllegalTransitionError, NotFoundError
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus, transition
from gpuserve.core.types import QueueStats
from gpuserve.store.base import DoneOutcome, Job, SweepEvent, SweepKind
from gpuserve.store.dirlock import DataDirLock

__all__ = ["SqliteJobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    low_priority INTEGER NOT NULL,
    execution_timeout_s REAL NOT NULL,
    ttl_s REAL NOT NULL,
    retention_s REAL NOT NULL,
    created_s REAL NOT NULL,
    queued_s REAL NOT NULL,
    started_s REAL,
    completed_s REAL,
    worker_id TEXT,
    output TEXT,
    has_output INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    retries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_endpoint_seq ON jobs (endpoint_id, seq);
"""

_INSERT = (
    "INSERT INTO jobs (id, endpoint_id, seq, status, payload, low_priority, execution_timeout_s, ttl_s,"
    " retention_s, created_s, queued_s, retries) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_END = (
    "UPDATE jobs SET status=?, started_s=?, completed_s=?, worker_id=?, output=?, has_output=?, error=?,"
    " retries=? WHERE id=?"
)
_REQUEUE = "UPDATE jobs SET status=?, seq=?, queued_s=?, started_s=NULL, completed_s=NULL, worker_id=NULL, output=NULL, has_output=0, error=NULL, retries=? WHERE id=?"

_TTL, _EXEC, _RETAIN = 0, 1, 2

# The deadline heap drops entries lazily (a finished job's ttl entry stays until its time), so it
# is rebuilt from the live entries once it has grown to twice its size after the last rebuild:
# without that, 100 jobs/s with a 24 h ttl leave 8.6 million dead entries a day. A job has at most
# two live entries (ttl and execution timeout while it runs, retention once it ended), so the
# heap stays within about four entries per job held, and each rebuild is paid for by the pushes
# that doubled it.
_COMPACT_MIN = 1024


def _private_file(path: Path) -> None:
    """Create the store readable by its owner only (its folder is made 0700): payloads may carry secrets (s3Config).

    SQLite gives its -wal and -shm files the database file's mode, so they are private too. An
    existing file keeps the mode its owner gave it.
    """
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class SqliteJobStore:
    """The embedded default JobStore. Thread-safe (one lock); meant to be used mainly from one event loop."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", now_s: float | None = None) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("synchronous", synchronous, "must be NORMAL, FULL or EXTRA")
        self.path = Path(path)
        self._dirlock: DataDirLock | None = None
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # Before opening the database: a second server must not even recover (requeue) jobs.
                self._dirlock = DataDirLock(self.path.parent).acquire()
                _private_file(self.path)
            # Autocommit: every statement is its own transaction, committed before execute() returns.
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if self._dirlock is not None:
                self._dirlock.release()
            # A read-only, full or missing data dir: one line naming it, not a traceback.
            raise ConfigError("data_dir", str(self.path.parent), f"cannot hold the job store {self.path.name} ({_reason(exc)})") from None
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, list[tuple[int, str]]] = {}  # endpoint -> heap of (seq, job id)
        self._counts: dict[str, Counter[JobStatus]] = {}
        self._low_queued: Counter[str] = Counter()
        self._retried: Counter[str] = Counter()
        self._submitted: Counter[str] = Counter()
        self._last_arrival: dict[str, float] = {}
        self._deadlines: list[tuple[float, int, int, str, float]] = []  # (when, n, kind, job id, token)
        self._compact_at = _COMPACT_MIN  # rebuild the heap past this many entries
        self._n = 0
        self._seq = 0
        self.recovered = 0  # jobs found queued or running at start (requeued)
        self._load(now_s)

    # -- start-up ----------------------------------------------------------------------------

    def _load(self, now_s: float | None) -> None:
        rows = self._db.execute(
            "SELECT id, endpoint_id, seq, status, payload, low_priority, execution_timeout_s, ttl_s, retention_s,"
            " created_s, queued_s, started_s, completed_s, worker_id, output, has_output, error, retries"
            " FROM jobs ORDER BY seq"
        ).fetchall()
        requeued: list[str] = []
        for row in rows:
            status = JobStatus(row[3])
            job = Job(
                id=row[0],
                endpoint_id=row[1],
                seq=row[2],
                status=status,
                payload=json.loads(row[4]),
                payload_json=row[4],
                low_priority=bool(row[5]),
                execution_timeout_s=row[6],
                ttl_s=row[7],
                retention_s=row[8],
                created_s=row[9],
                queued_s=row[10],
                started_s=row[11],
                completed_s=row[12],
                worker_id=row[13],
                output=json.loads(row[14]) if row[14] is not None else None,
                has_output=bool(row[15]),
                error=row[16],
                retries=row[17],
            )
            self._seq = max(self._seq, job.seq)
            if status not in TERMINAL_STATUSES:
                if status is not JobStatus.IN_QUEUE:
                    # Running when the last server life ended: its worker is gone with it.
                    job.status = transition(status, JobStatus.IN_QUEUE)
                    job.started_s = job.worker_id = None
                    requeued.append(job.id)
                self.recovered += 1
            self._index(job)
        for job_id in requeued:
            self._db.execute("UPDATE jobs SET status=?, started_s=NULL, worker_id=NULL WHERE id=?", ("IN_QUEUE", job_id))
        if now_s is not None:
            self.sweep(now_s)

    def _index(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._counts.setdefault(job.endpoint_id, Counter())[job.status] += 1
        self._submitted[job.endpoint_id] += 1
        self._last_arrival[job.endpoint_id] = max(self._last_arrival.get(job.endpoint_id, 0.0), job.created_s)
        if job.retries:
            self._retried[job.endpoint_id] += 1
        if job.status is JobStatus.IN_QUEUE:
            self._enqueue(job)
            self._deadline(job.created_s + job.ttl_s, _TTL, job.id, job.created_s)
        elif job.status in TERMINAL_STATUSES and job.completed_s is not None:
            self._deadline(job.completed_s + job.retention_s, _RETAIN, job.id, job.completed_s)

    # -- helpers -------------------------------------------------------------------------------

    def _deadline(self, when_s: float, kind: int, job_id: str, token: float) -> None:
        self._n += 1
        heapq.heappush(self._deadlines, (when_s, self._n, kind, job_id, token))
        if len(self._deadlines) > self._compact_at:
            self._compact()

    def _compact(self) -> None:
        self._deadlines = [d for d in self._deadlines if self._live(d)]
        heapq.heapify(self._deadlines)
        self._compact_at = max(_COMPACT_MIN, 2 * len(self._deadlines))

    def _live(self, deadline: tuple[float, int, int, str, float]) -> bool:
        """Whether a deadline can still act (the same tests `sweep` applies when it comes due)."""
        _, _, kind, job_id, token = deadline
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if kind == _TTL:
            return job.status not in TERMINAL_STATUSES and job.created_s == token
        if kind == _EXEC:
            return job.status is JobStatus.IN_PROGRESS and job.started_s == token
        return job.status in TERMINAL_STATUSES and job.completed_s == token

    def _enqueue(self, job: Job) -> None:
        heapq.heappush(self._queues.setdefault(job.endpoint_id, []), (job.seq, job.id))
        if job.low_priority:
            self._low_queued[job.endpoint_id] += 1

    def _set_status(self, job: Job, status: JobStatus) -> None:
        counts = self._counts.setdefault(job.endpoint_id, Counter())
        counts[job.status] -= 1
        counts[status] += 1
        if job.status is JobStatus.IN_QUEUE and job.low_priority:
            self._low_queued[job.endpoint_id] -= 1
        job.status = transition(job.status, status)

    def _end(self, job: Job, status: JobStatus, now_s: float) -> None:
        """Move a job to a terminal state and write it through."""
        self._set_status(job, status)
        job.completed_s = now_s
        self._deadline(now_s + job.retention_s, _RETAIN, job.id, now_s)
        output = json.dumps(job.output, ensure_ascii=False) if job.has_output else None
        self._db.execute(
            _END,
            (status.value, job.started_s, now_s, job.worker_id, output, int(job.has_output), job.error, job.retries, job.id),
        )

    def _requeue(self, job: Job, now_s: float, *, new_seq: bool) -> None:
        self._set_status(job, JobStatus.IN_QUEUE)
        if job.retries == 0:
            self._retried[job.endpoint_id] += 1
        job.retries += 1
        if new_seq:
            self._seq += 1
            job.seq = self._seq
        job.queued_s = now_s
        job.started_s = job.completed_s = job.worker_id = job.error = None
        job.output, job.has_output = None, False
        job.chunks, job.chunks_sent = [], 0
        self._enqueue(job)
        self._deadline(job.created_s + job.ttl_s, _TTL, job.id, job.created_s)
        self._db.execute(_REQUEUE, ("IN_QUEUE", job.seq, now_s, job.retries, job.id))

    def _delete(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        counts = self._counts[job.endpoint_id]
        counts[job.status] -= 1
        if job.status is JobStatus.IN_QUEUE and job.low_priority:
            self._low_queued[job.endpoint_id] -= 1
        if job.retries:
            self._retried[job.endpoint_id] -= 1
        self._db.execute("DELETE FROM jobs WHERE id=?", (job.id,))

    # -- the JobQueue seam (controller) ----------------------------------------------------------

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        with self._lock:
            counts = self._counts.get(endpoint_id, Counter())
            in_queue = counts[JobStatus.IN_QUEUE]
            oldest_age_s = 0.0
            heap = self._queues.get(endpoint_id)
            while heap:
                seq, job_id = heap[0]
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.IN_QUEUE or job.seq != seq:
                    heapq.heappop(heap)  # stale entry: taken, cancelled, deleted or re-sequenced
                    continue
                oldest_age_s = max(0.0, now_s - job.queued_s)
                break
            return QueueStats(
                in_queue=in_queue,
                in_progress=counts[JobStatus.IN_PROGRESS],
                oldest_queued_age_s=oldest_age_s,
                submitted_total=self._submitted[endpoint_id],
                last_arrival_s=self._last_arrival.get(endpoint_id),
                in_queue_scaling=in_queue - self._low_queued[endpoint_id],
            )

    # -- client side -------------------------------------------------------------------------------

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
        payload_json: str | None = None,
    ) -> Job:
        if "input" not in payload:
            raise ConfigError("input", None, "is required")
        raw = payload_json if payload_json is not None else json.dumps(payload, ensure_ascii=False)
        with self._lock:
            self._seq += 1
            job = Job(
                id=str(uuid.uuid4()),
                endpoint_id=endpoint_id,
                seq=self._seq,
                status=JobStatus.IN_QUEUE,
                payload=payload,
                payload_json=raw,
                low_priority=low_priority,
                execution_timeout_s=execution_timeout_s,
                ttl_s=ttl_s,
                retention_s=retention_s,
                created_s=now_s,
                queued_s=now_s,
            )
            self._db.execute(
                _INSERT,
                (job.id, endpoint_id, job.seq, "IN_QUEUE", raw, int(low_priority), execution_timeout_s, ttl_s,
                 retention_s, now_s, now_s, 0),
            )
            self._index(job)
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def set_retention(self, job_id: str, retention_s: float) -> None:
        """Shorten or lengthen how long a result is kept (e.g. /runsync keeps it 1 min)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.retention_s = retention_s
            self._db.execute("UPDATE jobs SET retention_s=? WHERE id=?", (retention_s, job_id))
            if job.completed_s is not None:
                self._deadline(job.completed_s + retention_s, _RETAIN, job.id, job.completed_s)

    def cancel(self, job_id: str, now_s: float) -> tuple[Job, JobStatus] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            before = job.status
            if before in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS):
                self._end(job, JobStatus.CANCELLED, now_s)
            return job, before

    def retry(self, job_id: str, now_s: float) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} does not exist or has expired")
            if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
                raise IllegalTransitionError("job", job.status.value, JobStatus.IN_QUEUE.value)
            self._requeue(job, now_s, new_seq=True)
            return job

    def purge(self, endpoint_id: str) -> int:
        with self._lock:
            queued = [j for j in self._jobs.values() if j.endpoint_id == endpoint_id and j.status is JobStatus.IN_QUEUE]
            self._db.execute("BEGIN")
            try:
                for job in queued:
                    self._delete(job)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._queues[endpoint_id] = []
            return len(queued)

    def read_chunks(self, job_id: str) -> list[Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return []
            fresh = job.chunks[job.chunks_sent :]
            job.chunks_sent = len(job.chunks)
            return fresh

    # -- worker side -------------------------------------------------------------------------------

    def take(self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float) -> list[Job]:
        taken: list[Job] = []
        with self._lock:
            heap = self._queues.get(endpoint_id)
            while heap and len(taken) < max_jobs:
                seq, job_id = heapq.heappop(heap)
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.IN_QUEUE or job.seq != seq:
                    continue
                self._set_status(job, JobStatus.IN_PROGRESS)
                job.worker_id = worker_id
                job.started_s = now_s
                self._deadline(now_s + job.execution_timeout_s, _EXEC, job.id, now_s)
                taken.append(job)
        return taken

    def _owned(self, job_id: str, worker_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.IN_PROGRESS or job.worker_id != worker_id:
            return None
        return job

    def finish(self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float) -> tuple[DoneOutcome, Job | None]:
        with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return DoneOutcome.IGNORED, self._jobs.get(job_id)
            if body.get("status") == "IN_PROGRESS":
                job.output, job.has_output = body.get("output"), True
                return DoneOutcome.PROGRESS, job
            error = body.get("error")
            if "output" in body:
                job.output, job.has_output = body["output"], True
            else:
                job.output, job.has_output = None, False
            if error is not None:
                job.error = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
                self._end(job, JobStatus.FAILED, now_s)
                return DoneOutcome.FAILED, job
            self._end(job, JobStatus.COMPLETED, now_s)
            return DoneOutcome.COMPLETED, job

    def fail(self, job_id: str, worker_id: str, reason: str, now_s: float) -> Job | None:
        with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return None
            job.error = reason
            self._end(job, JobStatus.FAILED, now_s)
            return job

    def add_chunk(self, job_id: str, worker_id: str, chunk: Any) -> bool:
        with self._lock:
            job = self._owned(job_id, worker_id)
            if job is None:
                return False
            job.chunks.append(chunk)
            return True

    def requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float, max_retries: int) -> list[Job]:
        with self._lock:
            jobs = [job for job_id in job_ids if (job := self._owned(job_id, worker_id)) is not None]
            for job in jobs:
                if job.retries >= max_retries:
                    job.error = f"{reason}; gave up after {job.retries} retries"
                    self._end(job, JobStatus.FAILED, now_s)
                else:
                    self._requeue(job, now_s, new_seq=False)
            return jobs

    def in_progress(self, endpoint_id: str | None = None) -> list[Job]:
        with self._lock:
            return [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.IN_PROGRESS and (endpoint_id is None or j.endpoint_id == endpoint_id)
            ]

    # -- deadlines ---------------------------------------------------------------------------------

    def bookkeeping(self) -> dict[str, int]:
        """Sizes of the in-memory structures, for audits: none may grow with jobs that are gone."""
        with self._lock:
            return {
                "jobs": len(self._jobs),
                "deadlines": len(self._deadlines),
                "queued_entries": sum(len(q) for q in self._queues.values()),
            }

    def next_deadline_s(self) -> float | None:
        with self._lock:
            return self._deadlines[0][0] if self._deadlines else None

    def sweep(self, now_s: float) -> list[SweepEvent]:
        events: list[SweepEvent] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now_s:
                _, _, kind, job_id, token = heapq.heappop(self._deadlines)
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                if kind == _TTL and job.status not in TERMINAL_STATUSES and job.created_s == token:
                    holder = job.worker_id if job.status is JobStatus.IN_PROGRESS else None
                    self._delete(job)
                    events.append(SweepEvent(SweepKind.TTL_EXPIRED, job, holder))
                elif kind == _EXEC and job.status is JobStatus.IN_PROGRESS and job.started_s == token:
                    job.error = f"execution timeout of {job.execution_timeout_s:g} s exceeded"
                    self._end(job, JobStatus.TIMED_OUT, now_s)
                    events.append(SweepEvent(SweepKind.TIMED_OUT, job, job.worker_id))
                elif kind == _RETAIN and job.status in TERMINAL_STATUSES and job.completed_s == token:
                    if job.completed_s + job.retention_s <= now_s:
                        self._delete(job)
                        events.append(SweepEvent(SweepKind.RESULT_EXPIRED, job, None))
                    else:  # retention was lengthened since this deadline was set
                        self._deadline(job.completed_s + job.retention_s, _RETAIN, job.id, job.completed_s)
            # Jobs went away: at most two live entries each, so past four per job the rest is dead.
            if len(self._deadlines) > max(_COMPACT_MIN, 4 * len(self._jobs)):
                self._compact()
        return events

    # -- reporting ---------------------------------------------------------------------------------

    def health(self, endpoint_id: str) -> dict[str, int]:
        with self._lock:
            c = self._counts.get(endpoint_id, Counter())
            return {
                "completed": c[JobStatus.COMPLETED],
                "failed": c[JobStatus.FAILED] + c[JobStatus.TIMED_OUT],
                "inProgress": c[JobStatus.IN_PROGRESS],
                "inQueue": c[JobStatus.IN_QUEUE],
                "retried": self._retried[endpoint_id],
                "cancelled": c[JobStatus.CANCELLED],
            }

    def count(self, endpoint_id: str | None = None) -> int:
        with self._lock:
            if endpoint_id is None:
                row = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE endpoint_id=?", (endpoint_id,)).fetchone()
            return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._dirlock is not None:
                self._dirlock.release()
                self._dirlock = None
