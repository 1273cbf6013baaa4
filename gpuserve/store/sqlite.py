"""SqliteJobStore: jobs in an SQLite file (WAL) mirrored by an in-memory index for O(log n) queue operations.

Every state a restart must see is written through before the call returns, and before memory
changes: a submit is committed before /run answers; terminal states (with the job's outbox
webhook, in one transaction), requeues, retries and stream chunks are committed as they happen; a
write that fails raises StoreError and leaves memory as it was, so nothing is shown that a restart
would not find. IN_PROGRESS is deliberately not written: a job that was running when the
server died goes back to the queue on the next start anyway (its worker's result would
arrive at a server that no longer knows the assignment), so the write would buy nothing.
For the same reason leases live in memory only; they expire only when `lease_s` is given (one
server knows every holder: its registry finds lost workers, so the default is no expiry). The
attempt is written with a job's first stream chunk (and with every end and requeue), so the attempt
after a restart is above any attempt a /stream reader has seen chunks of.

Inputs and outputs are held in memory within a budget (store/spill.py): one larger than
`spill_payload_bytes`, or any once `max_payload_bytes_in_memory` are held, stays in its row only
(where it is written anyway; an interim progress output is written for the purpose) and is read
back when asked for (a take, a /status, a /stream of unread chunks), so memory follows that
budget, not the bytes queued.

The schema is versioned in `PRAGMA user_version` (`_MIGRATIONS`, applied in order at open).

synchronous=NORMAL by default: in WAL mode a commit then survives a crash or SIGKILL of
the server process; only an operating-system crash or power cut can roll back the last
few commits. FULL adds one fsync per commit (milliseconds on most disks); pass
`synchronous="FULL"` when that trade is wanted.
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from gpuserve.core.errors import ConfigError, IllegalTransitionError, NotFoundError, StoreError
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus, status_body, transition
from gpuserve.core.types import QueueStats
from gpuserve.store.base import (
    DoneOutcome,
    EndpointChange,
    Job,
    OutboxWebhook,
    SweepEvent,
    SweepKind,
    WorkerRecord,
    holds,
    lease_lost_error,
)
from gpuserve.store.dirlock import DataDirLock
from gpuserve.store.spill import OnDisk, SpillBudget, spill

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
CREATE TABLE IF NOT EXISTS endpoint_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at_s REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    change TEXT NOT NULL,
    UNIQUE (endpoint_id, version)
);
"""

# Each entry migrates the schema from its index to the next version (PRAGMA user_version); never
# edit one that shipped. The first is the schema from before versioning (IF NOT EXISTS: a file made
# then is at version 0 and passes through it unchanged).
_MIGRATIONS: tuple[str, ...] = (
    _SCHEMA,
    # 2: durable streams (chunks stamped with their attempt) and the webhook outbox
    """
    ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE job_chunks (
        job_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        chunk TEXT NOT NULL,
        PRIMARY KEY (job_id, n)
    );
    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_s REAL NOT NULL
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (due_s);
    CREATE TABLE write_probe (n INTEGER);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_INSERT = (
    "INSERT INTO jobs (id, endpoint_id, seq, status, payload, low_priority, execution_timeout_s, ttl_s,"
    " retention_s, created_s, queued_s, retries) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_STOPPED = (JobStatus.TIMED_OUT, JobStatus.CANCELLED)  # ended by the server while a worker ran them
_END = (
    "UPDATE jobs SET status=?, started_s=?, completed_s=?, worker_id=?, output=?, has_output=?, error=?,"
    " retries=?, attempt=? WHERE id=?"
)
_REQUEUE = (
    "UPDATE jobs SET status=?, seq=?, queued_s=?, started_s=NULL, completed_s=NULL, worker_id=NULL, output=NULL,"
    " has_output=0, error=NULL, retries=?, attempt=? WHERE id=?"
)
# A terminal state that keeps the output already in the row (spilled): it is not read back to be written again.
_END_KEEP = (
    "UPDATE jobs SET status=?, started_s=?, completed_s=?, worker_id=?, error=?, retries=?, attempt=? WHERE id=?"
)
_OUTBOX = "INSERT INTO webhook_outbox (job_id, url, body, attempts, due_s) VALUES (?,?,?,0,?)"

_TTL, _EXEC, _RETAIN, _LEASE = 0, 1, 2, 3
_KEEP: Any = object()  # `_end`'s output: the job's own, as it is (in memory or in the row)

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


def _change(row: Any) -> EndpointChange:
    body = json.loads(row[6])
    return EndpointChange(
        int(row[0]), row[1], int(row[2]), float(row[3]), row[4], row[5], body.get("fields", {}), body.get("previous", {})
    )


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _migrate(db: sqlite3.Connection) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema version {version} is newer than this gpuserve's {SCHEMA_VERSION}; upgrade gpuserve")
    # The base schema is all IF NOT EXISTS, applied at every open (nothing is written when it is there),
    # so a table added to it later reaches files past version 1 too.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    for n, step in enumerate(_MIGRATIONS[max(version, 1):], start=max(version, 1) + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in step.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={n}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


class SqliteJobStore:
    """The embedded default JobStore. Thread-safe (one lock); meant to be used mainly from one event loop."""

    poll_fallback_s: float | None = None  # one server per file: it sees every change itself
    blocking = False  # a local file, WAL without an fsync per commit: cheaper inline than a thread hop

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        now_s: float | None = None,
        lease_s: float | None = None,
        max_retries: int = 3,
        max_payload_bytes_in_memory: int | None = 100_000_000,
        spill_payload_bytes: int | None = 100_000,
    ) -> None:
        for name, value in (("max_payload_bytes_in_memory", max_payload_bytes_in_memory),
                            ("spill_payload_bytes", spill_payload_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(name, value, "must be a whole number of bytes (0 or more), or None for no limit")
        self._budget = SpillBudget(max_payload_bytes_in_memory, spill_payload_bytes)
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("synchronous", synchronous, "must be NORMAL, FULL or EXTRA")
        if lease_s is not None and not lease_s > 0:
            raise ConfigError("lease_s", lease_s, "must be positive")
        self.lease_s = lease_s
        self.max_retries = max_retries  # for leases that expire; lost workers' requeues pass their own
        self.path = Path(path)
        self._dirlock: DataDirLock | None = None
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, list[tuple[bool, int, str]]] = {}  # endpoint -> heap of (low priority, seq, job id)
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
            _migrate(self._db)
            self._load_rows(now_s)
        except (OSError, sqlite3.Error) as exc:
            if self._dirlock is not None:
                self._dirlock.release()
            # A read-only, full or missing data dir: one line naming it, not a traceback.
            raise ConfigError("data_dir", str(self.path.parent), f"cannot hold the job store {self.path.name} ({_reason(exc)})") from None
        if now_s is not None:
            try:
                self.sweep(now_s)
            except StoreError:
                pass  # a full disk at start: the deadlines stay due, the server starts read-only

    # -- start-up ----------------------------------------------------------------------------

    def _load_rows(self, now_s: float | None) -> None:
        # Values past spill_payload_bytes are not even read: only their length and a spilled input's webhook.
        limit = self._budget.spill_bytes if self._budget.spill_bytes is not None else -1
        rows = self._db.execute(
            "SELECT id, endpoint_id, seq, status, CASE WHEN ?<0 OR length(payload)<=? THEN payload END, low_priority,"
            " execution_timeout_s, ttl_s, retention_s, created_s, queued_s, started_s, completed_s, worker_id,"
            " CASE WHEN ?<0 OR length(output)<=? THEN output END, has_output, error, retries, attempt,"
            " CASE WHEN ?>=0 AND length(payload)>? AND json_type(payload, '$.webhook')='text'"
            " THEN json_extract(payload, '$.webhook') END"
            " FROM jobs ORDER BY seq",
            (limit,) * 6,
        ).fetchall()
        requeued: list[str] = []
        for row in rows:
            status = JobStatus(row[3])
            # An output in the row of a job that did not end is an interim one (spilled): the job runs again.
            ended = status in TERMINAL_STATUSES
            job = Job(
                id=row[0],
                endpoint_id=row[1],
                seq=row[2],
                status=status,
                payload={},  # set by _hold_payload
                payload_json="",
                low_priority=bool(row[5]),
                execution_timeout_s=row[6],
                ttl_s=row[7],
                retention_s=row[8],
                created_s=row[9],
                queued_s=row[10],
                started_s=row[11],
                completed_s=row[12],
                worker_id=row[13],
                has_output=ended and bool(row[15]),
                error=row[16],
                retries=row[17],
                attempt=row[18],
            )
            self._hold_payload(job, row[4], webhook=row[19])
            if job.has_output:
                self._hold_output(job, row[14])
            self._seq = max(self._seq, job.seq)
            if status not in TERMINAL_STATUSES:
                if status is not JobStatus.IN_QUEUE:
                    # Running when the last server life ended: its worker is gone with it.
                    job.status = transition(status, JobStatus.IN_QUEUE)
                    job.started_s = job.worker_id = None
                    requeued.append(job.id)
                self.recovered += 1
            self._index(job)
        # One transaction: running jobs back to the queue, and the unread chunks of every job not ended (a
        # run that died with the last server: its next attempt streams anew) deleted with them.
        stale = "SELECT id FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')"
        # Written only when there is something to write: a full disk alone does not stop the store from opening.
        if requeued or self._db.execute(f"SELECT 1 FROM job_chunks WHERE job_id IN ({stale}) LIMIT 1").fetchone():
            self._write_recovery(requeued, stale)
        self._load_chunks()

    def _write_recovery(self, requeued: list[str], stale: str) -> None:
        self._db.execute("BEGIN")
        try:
            for job_id in requeued:
                self._db.execute("UPDATE jobs SET status=?, started_s=NULL, worker_id=NULL WHERE id=?", ("IN_QUEUE", job_id))
            self._db.execute(f"DELETE FROM job_chunks WHERE job_id IN ({stale})")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _load_chunks(self) -> None:
        # Unread chunks of jobs that ended before the restart are still handed out, once.
        for job_id, n, chunk in self._db.execute("SELECT job_id, n, chunk FROM job_chunks ORDER BY job_id, n"):
            held = self._jobs.get(job_id)
            if held is None:
                continue
            if not held.chunks:
                held.chunks_sent = n  # the chunks before it were handed out before the restart
            self._hold_chunk(held, n, chunk)

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

    # -- inputs and outputs: in memory within the budget, else read from the row when asked -----

    def _hold_payload(
        self, job: Job, raw: str | None, *, parsed: dict[str, Any] | None = None, webhook: str | None = None
    ) -> None:
        """Keep the job's input (`raw`, and `parsed` when the caller has it) in memory if the budget allows;
        else it is read from its row when asked. `raw` None: not read (past spill_payload_bytes at
        load), `webhook` then the row's."""
        if raw is not None and self._budget.take(len(raw), copies=2):  # the text and the parsed dict
            job.payload = parsed if parsed is not None else json.loads(raw)
            job.payload_json = raw
            return
        if raw is not None:
            hook = (parsed if parsed is not None else json.loads(raw)).get("webhook")
            webhook = hook if isinstance(hook, str) else None
        spill(job, "payload", OnDisk(functools.partial(self._read_payload, job.id), webhook))
        spill(job, "payload_json", OnDisk(functools.partial(self._read, job.id, "payload")))

    def _hold_output(self, job: Job, text: str | None, value: Any = _KEEP) -> None:
        """The job's output is `text` (JSON, already in the row, or `value` encoded): kept in memory within the budget.

        `text` None: not read at load (past spill_payload_bytes); it stays in the row.
        """
        self._drop_output(job)
        if text is not None and self._budget.take(len(text)):
            job.output = json.loads(text) if value is _KEEP else value
            job.held_output_bytes = len(text)
        else:
            spill(job, "output", OnDisk(functools.partial(self._read_output, job.id)))

    def _drop_output(self, job: Job) -> None:
        if job.held_output_bytes:
            self._budget.give_back(job.held_output_bytes)
            job.held_output_bytes = 0

    def _hold_chunk(self, job: Job, n: int, text: str, value: Any = _KEEP) -> None:
        """An unread stream chunk (number `n`, JSON `text`, in its row): in memory within the budget, else read at /stream."""
        if self._budget.take(len(text)):
            job.chunks.append(json.loads(text) if value is _KEEP else value)
            job.held_chunk_bytes += len(text)
        else:
            job.chunks.append(OnDisk(functools.partial(self._read_chunk, job.id, n)))

    def _drop_chunks(self, job: Job) -> None:
        self._budget.give_back(job.held_chunk_bytes)
        job.held_chunk_bytes = 0
        job.chunks = []

    def _drop_held(self, job: Job) -> None:
        """The job is forgotten: what it held in memory goes back to the budget."""
        if job.spilled("payload_json") is None:
            self._budget.give_back(2 * len(job.payload_json))
        self._drop_output(job)
        self._drop_chunks(job)

    def _read(self, job_id: str, column: str) -> str:
        with self._lock:
            row = self._db.execute(f"SELECT {column} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None or row[0] is None:
            raise NotFoundError(f"job {job_id!r} does not exist or has expired (its {column} is gone)")
        text: str = row[0]
        return text

    def _read_payload(self, job_id: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self._read(job_id, "payload"))
        return payload

    def _read_output(self, job_id: str) -> Any:
        return json.loads(self._read(job_id, "output"))

    def _read_chunk(self, job_id: str, n: int) -> Any:
        with self._lock:
            row = self._db.execute("SELECT chunk FROM job_chunks WHERE job_id=? AND n=?", (job_id, n)).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} does not exist or has expired (its stream chunk {n} is gone)")
        return json.loads(row[0])

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """One statement, committed on return (autocommit); StoreError when it could not be written."""
        try:
            self._db.execute(sql, params)
        except sqlite3.OperationalError as exc:  # full, read-only, I/O error
            raise StoreError(_reason(exc)) from None

    def _write_all(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Several statements in one transaction: all committed on return, or none (StoreError)."""
        if len(statements) == 1:
            self._write(*statements[0])
            return
        try:
            self._db.execute("BEGIN")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise StoreError(_reason(exc)) from None

    def probe(self) -> None:
        with self._lock:
            self._write_all([("INSERT INTO write_probe (n) VALUES (1)", ()), ("DELETE FROM write_probe", ())])

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
        if kind == _LEASE:
            return job.status is JobStatus.IN_PROGRESS and job.lease_expires_s == token
        return job.status in TERMINAL_STATUSES and job.completed_s == token

    def _enqueue(self, job: Job) -> None:
        heapq.heappush(self._queues.setdefault(job.endpoint_id, []), (job.low_priority, job.seq, job.id))
        if job.low_priority:
            self._low_queued[job.endpoint_id] += 1

    def _set_status(self, job: Job, status: JobStatus) -> None:
        counts = self._counts.setdefault(job.endpoint_id, Counter())
        counts[job.status] -= 1
        counts[status] += 1
        if job.status is JobStatus.IN_QUEUE and job.low_priority:
            self._low_queued[job.endpoint_id] -= 1
        job.status = transition(job.status, status)

    def _end(
        self, job: Job, status: JobStatus, now_s: float, *, output: Any = _KEEP, has_output: bool = False,
        error: str | None = None,
    ) -> None:
        """Move a job to a terminal state: written through first (with its webhook's outbox row), then in memory.

        `output` _KEEP: the job keeps the output it has (an interim one, or none); one already in
        its row (spilled) is not read back to be written again.
        """
        transition(job.status, status)  # an illegal move raises before anything is written
        keep = output is _KEEP
        in_row = keep and job.spilled("output") is not None
        if keep:
            has_output = job.has_output
            output = None if in_row else job.output
        text = json.dumps(output, ensure_ascii=False) if has_output and not in_row else None
        end: tuple[str, tuple[Any, ...]] = (
            (_END_KEEP, (status.value, job.started_s, now_s, job.worker_id, error, job.retries, job.attempt, job.id))
            if in_row
            else (_END, (status.value, job.started_s, now_s, job.worker_id, text, int(has_output), error, job.retries,
                         job.attempt, job.id))
        )
        writes = [end]
        hook = job.webhook
        if hook is not None:
            if in_row:
                output = job.output  # read back from the row: the webhook's body carries it
            body = status_body(
                job.id, status, created_s=job.created_s, started_s=job.started_s, completed_s=now_s,
                worker_id=job.worker_id, output=output, has_output=has_output, error=error, retries=job.retries,
            )
            writes.append((_OUTBOX, (job.id, hook, json.dumps(body, ensure_ascii=False), now_s)))
        self._write_all(writes)
        self._set_status(job, status)
        if not keep:
            job.has_output = has_output
            if has_output:
                self._hold_output(job, text, output)
            else:
                self._drop_output(job)
                job.output = None
        job.error = error
        job.completed_s = now_s
        job.lease_expires_s = None
        self._deadline(now_s + job.retention_s, _RETAIN, job.id, now_s)

    def _requeue(self, job: Job, now_s: float, *, new_seq: bool) -> None:
        transition(job.status, JobStatus.IN_QUEUE)
        seq = self._seq + 1 if new_seq else job.seq
        writes: list[tuple[str, tuple[Any, ...]]] = [
            (_REQUEUE, ("IN_QUEUE", seq, now_s, job.retries + 1, job.attempt, job.id)),
        ]
        if job.chunks:  # the old attempt's unread chunks go with it
            writes.append(("DELETE FROM job_chunks WHERE job_id=?", (job.id,)))
        self._write_all(writes)
        self._seq = max(self._seq, seq)
        self._set_status(job, JobStatus.IN_QUEUE)
        if job.retries == 0:
            self._retried[job.endpoint_id] += 1
        job.retries += 1
        job.seq = seq
        job.queued_s = now_s
        job.started_s = job.completed_s = job.worker_id = job.error = job.lease_expires_s = None
        self._drop_output(job)
        job.output, job.has_output = None, False
        self._drop_chunks(job)
        job.chunks_sent = 0
        self._enqueue(job)
        self._deadline(job.created_s + job.ttl_s, _TTL, job.id, job.created_s)

    def _delete_writes(self, job: Job) -> list[tuple[str, tuple[Any, ...]]]:
        writes: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM jobs WHERE id=?", (job.id,))]
        if job.chunks:
            writes.append(("DELETE FROM job_chunks WHERE job_id=?", (job.id,)))
        return writes

    def _delete(self, job: Job) -> None:
        self._write_all(self._delete_writes(job))
        self._forget(job)

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._drop_held(job)
        counts = self._counts[job.endpoint_id]
        counts[job.status] -= 1
        if job.status is JobStatus.IN_QUEUE and job.low_priority:
            self._low_queued[job.endpoint_id] -= 1
        if job.retries:
            self._retried[job.endpoint_id] -= 1

    # -- the JobQueue seam (controller) ----------------------------------------------------------

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        with self._lock:
            counts = self._counts.get(endpoint_id, Counter())
            in_queue = counts[JobStatus.IN_QUEUE]
            oldest_age_s = 0.0
            heap = self._queues.get(endpoint_id)
            while heap:
                _, seq, job_id = heap[0]
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

    def queue_position(self, job: Job) -> int:
        # A scan of the endpoint's heap: asked only by /status of a queued job, so no index is kept for it.
        key = (job.low_priority, job.seq)
        with self._lock:
            ahead = {
                job_id
                for low, seq, job_id in self._queues.get(job.endpoint_id, ())
                if (low, seq) < key
                and (j := self._jobs.get(job_id)) is not None
                and j.status is JobStatus.IN_QUEUE
                and j.seq == seq
            }
        return len(ahead) + 1

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
            self._write(
                _INSERT,
                (job.id, endpoint_id, job.seq, "IN_QUEUE", raw, int(low_priority), execution_timeout_s, ttl_s,
                 retention_s, now_s, now_s, 0),
            )
            self._hold_payload(job, raw, parsed=payload)
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
            self._write("UPDATE jobs SET retention_s=? WHERE id=?", (retention_s, job_id))
            job.retention_s = retention_s
            if job.completed_s is not None:
                self._deadline(job.completed_s + retention_s, _RETAIN, job.id, job.completed_s)

    def cancel(self, job_id: str, now_s: float) -> tuple[Job, JobStatus] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            before = job.status
            if before in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS):
                self._end(job, JobStatus.CANCELLED, now_s, error=job.error)
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
            if queued:
                self._write_all([w for job in queued for w in self._delete_writes(job)])
            for job in queued:
                self._forget(job)
            self._queues[endpoint_id] = []
            return len(queued)

    def read_chunks(self, job_id: str) -> list[Any]:
        read = self.read_stream(job_id)
        return read[1] if read is not None else []

    def read_stream(self, job_id: str) -> tuple[int, list[Any]] | None:
        # In memory, `chunks` holds the unread ones only and `chunks_sent` counts those before them.
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            # Chunks kept on disk only are read before their rows go.
            fresh = [c.load() if type(c) is OnDisk else c for c in job.chunks]
            if fresh:
                self._write("DELETE FROM job_chunks WHERE job_id=? AND n<?", (job.id, job.chunks_sent + len(fresh)))
                job.chunks_sent += len(fresh)
                self._drop_chunks(job)
            return job.attempt, fresh

    # -- the webhook outbox ----------------------------------------------------------------------

    def claim_webhooks(self, now_s: float, claim_s: float, limit: int) -> list[OutboxWebhook]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, job_id, url, body, attempts FROM webhook_outbox WHERE due_s<=? ORDER BY due_s, id LIMIT ?",
                (now_s, limit),
            ).fetchall()
            if not rows:
                return []
            self._write_all(
                [("UPDATE webhook_outbox SET attempts=attempts+1, due_s=? WHERE id=?", (now_s + claim_s, r[0])) for r in rows]
            )
            return [OutboxWebhook(r[0], r[1], r[2], r[3], r[4] + 1) for r in rows]

    def webhook_done(self, outbox_id: int) -> None:
        with self._lock:
            self._write("DELETE FROM webhook_outbox WHERE id=?", (outbox_id,))

    def webhook_retry(self, outbox_id: int, due_s: float) -> None:
        with self._lock:
            self._write("UPDATE webhook_outbox SET due_s=? WHERE id=?", (due_s, outbox_id))

    def pending_webhooks(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM webhook_outbox").fetchone()[0])

    # -- worker side -------------------------------------------------------------------------------

    def take(
        self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float, skip: Collection[str] = ()
    ) -> list[Job]:
        taken: list[Job] = []
        kept: list[tuple[bool, int, str]] = []  # skipped entries, pushed back in place
        with self._lock:
            heap = self._queues.get(endpoint_id)
            while heap and len(taken) < max_jobs:
                entry = heapq.heappop(heap)
                _, seq, job_id = entry
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.IN_QUEUE or job.seq != seq:
                    continue
                if job_id in skip:
                    kept.append(entry)
                    continue
                self._set_status(job, JobStatus.IN_PROGRESS)
                job.worker_id = worker_id
                job.started_s = now_s
                job.attempt += 1
                self._deadline(now_s + job.execution_timeout_s, _EXEC, job.id, now_s)
                self._lease(job, now_s)
                taken.append(job)
            if kept and heap is not None:
                for back in kept:
                    heapq.heappush(heap, back)
        return taken

    def _lease(self, job: Job, now_s: float) -> None:
        if self.lease_s is not None:
            job.lease_expires_s = now_s + self.lease_s
            self._deadline(job.lease_expires_s, _LEASE, job.id, job.lease_expires_s)

    def renew(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        if self.lease_s is None:
            return
        with self._lock:
            for job_id in job_ids:
                job = self._owned(job_id, worker_id)
                if job is not None:
                    self._lease(job, now_s)

    def _owned(self, job_id: str, worker_id: str, attempt: int | None = None) -> Job | None:
        job = self._jobs.get(job_id)
        return job if holds(job, worker_id, attempt) else None

    def finish(
        self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float, attempt: int | None = None
    ) -> tuple[DoneOutcome, Job | None]:
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return DoneOutcome.IGNORED, self._jobs.get(job_id)
            if body.get("status") == "IN_PROGRESS":
                self._progress(job, body.get("output"))
                return DoneOutcome.PROGRESS, job
            error = body.get("error")
            has_output = "output" in body
            output = body["output"] if has_output else None
            if error is not None:
                text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
                self._end(job, JobStatus.FAILED, now_s, output=output, has_output=has_output, error=text)
                return DoneOutcome.FAILED, job
            self._end(job, JobStatus.COMPLETED, now_s, output=output, has_output=has_output)
            return DoneOutcome.COMPLETED, job

    def _progress(self, job: Job, output: Any) -> None:
        """An interim output: in memory within the budget, else written to the row (a restart ignores it there)."""
        text = json.dumps(output, ensure_ascii=False)
        if self._budget.fits(len(text), freed=job.held_output_bytes):
            self._hold_output(job, text, output)
        else:
            self._write("UPDATE jobs SET output=?, has_output=1 WHERE id=?", (text, job.id))  # raises: nothing changed
            self._hold_output(job, None)
        job.has_output = True

    def fail(self, job_id: str, worker_id: str, reason: str, now_s: float, attempt: int | None = None) -> Job | None:
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return None
            self._end(job, JobStatus.FAILED, now_s, error=reason)
            return job

    def add_chunk(self, job_id: str, worker_id: str, chunk: Any, attempt: int | None = None) -> bool:
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return False
            n = job.chunks_sent + len(job.chunks)
            text = json.dumps(chunk, ensure_ascii=False)
            writes: list[tuple[str, tuple[Any, ...]]] = [
                ("INSERT INTO job_chunks (job_id, n, attempt, chunk) VALUES (?,?,?,?)", (job.id, n, job.attempt, text)),
            ]
            if n == 0:  # the attempt's first chunk: a restart must number the next attempt above it
                writes.append(("UPDATE jobs SET attempt=? WHERE id=?", (job.attempt, job.id)))
            self._write_all(writes)
            self._hold_chunk(job, n, text, chunk)
            return True

    def note_stopped(self, job_id: str, worker_id: str, note: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.worker_id != worker_id or job.status not in _STOPPED or note in (job.error or ""):
                return False
            error = f"{job.error}; {note}" if job.error else note
            self._write("UPDATE jobs SET error=? WHERE id=?", (error, job_id))  # written first, then shown
            job.error = error
            return True

    def requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float, max_retries: int) -> list[Job]:
        with self._lock:
            jobs = [job for job_id in job_ids if (job := self._owned(job_id, worker_id)) is not None]
            for job in jobs:
                if job.retries >= max_retries:
                    self._end(job, JobStatus.FAILED, now_s, error=f"{reason}; gave up after {job.retries} retries")
                else:
                    self._requeue(job, now_s, new_seq=False)
            return jobs

    def listen(self, on_queued: Callable[[str], None], on_ended: Callable[[str], None]) -> None:
        """No other server writes this file: nothing to hear."""

    def lead(self, endpoint_id: str, now_s: float, lease_s: float) -> int | None:
        """The only server on this file leads every endpoint, in one term."""
        return 1

    def resign(self, endpoint_id: str) -> None:
        """Nobody else could take over."""

    # The only server on this file started every worker it knows: its registry is the directory.
    def put_worker(self, record: WorkerRecord) -> None:
        """Nothing to share."""

    def drop_worker(self, worker_id: str) -> None:
        """Nothing was shared."""

    def find_worker(self, worker_id: str) -> WorkerRecord | None:
        return None

    def workers_of(self, endpoint_id: str) -> list[WorkerRecord]:
        return []

    def saw_workers(self, worker_ids: Collection[str], now_s: float, listing: Collection[str] = ()) -> None:
        """Nobody else needs to know."""

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
                "payload_bytes": self._budget.held,
            }

    def next_deadline_s(self) -> float | None:
        with self._lock:
            return self._deadlines[0][0] if self._deadlines else None

    def sweep(self, now_s: float) -> list[SweepEvent]:
        events: list[SweepEvent] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now_s:
                entry = heapq.heappop(self._deadlines)
                try:
                    self._apply(entry, now_s, events)
                except StoreError:
                    # Nothing changed: the deadline stays due, and what was applied before it is returned.
                    heapq.heappush(self._deadlines, entry)
                    if not events:
                        raise
                    break
            # Jobs went away: at most two live entries each, so past four per job the rest is dead.
            if len(self._deadlines) > max(_COMPACT_MIN, 4 * len(self._jobs)):
                self._compact()
        return events

    def _apply(self, entry: tuple[float, int, int, str, float], now_s: float, events: list[SweepEvent]) -> None:
        """One due deadline, if it still acts (the same tests `_live` makes)."""
        _, _, kind, job_id, token = entry
        job = self._jobs.get(job_id)
        if job is None:
            return
        if kind == _TTL and job.status not in TERMINAL_STATUSES and job.created_s == token:
            holder = job.worker_id if job.status is JobStatus.IN_PROGRESS else None
            self._delete(job)
            events.append(SweepEvent(SweepKind.TTL_EXPIRED, job, holder))
        elif kind == _EXEC and job.status is JobStatus.IN_PROGRESS and job.started_s == token:
            self._end(job, JobStatus.TIMED_OUT, now_s, error=f"execution timeout of {job.execution_timeout_s:g} s exceeded")
            events.append(SweepEvent(SweepKind.TIMED_OUT, job, job.worker_id))
        elif kind == _LEASE and job.status is JobStatus.IN_PROGRESS and job.lease_expires_s == token:
            holder = job.worker_id
            if job.retries >= self.max_retries:
                self._end(job, JobStatus.FAILED, now_s, error=lease_lost_error(job.worker_id, job.retries))
            else:
                self._requeue(job, now_s, new_seq=False)
            events.append(SweepEvent(SweepKind.LEASE_EXPIRED, job, holder))
        elif kind == _RETAIN and job.status in TERMINAL_STATUSES and job.completed_s == token:
            if job.completed_s + job.retention_s <= now_s:
                self._delete(job)
                events.append(SweepEvent(SweepKind.RESULT_EXPIRED, job, None))
            else:  # retention was lengthened since this deadline was set
                self._deadline(job.completed_s + job.retention_s, _RETAIN, job.id, job.completed_s)

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

    # -- endpoint changes (run-time updates, durable and versioned) --------------------------------

    def record_change(
        self,
        endpoint_id: str,
        action: str,
        fields: dict[str, Any],
        previous: dict[str, Any],
        actor: str,
        now_s: float,
    ) -> EndpointChange:
        change = json.dumps({"fields": fields, "previous": previous}, ensure_ascii=False)
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM endpoint_changes WHERE endpoint_id=?", (endpoint_id,)
            ).fetchone()
            version = int(row[0])
            cur = self._db.execute(
                "INSERT INTO endpoint_changes (endpoint_id, version, at_s, actor, action, change) VALUES (?,?,?,?,?,?)",
                (endpoint_id, version, now_s, actor, action, change),
            )
            seq = int(cur.lastrowid or 0)
        return EndpointChange(seq, endpoint_id, version, now_s, actor, action, dict(fields), dict(previous))

    def changes(self, endpoint_id: str | None = None, after_seq: int = 0) -> list[EndpointChange]:
        query = "SELECT seq, endpoint_id, version, at_s, actor, action, change FROM endpoint_changes WHERE seq > ?"
        args: tuple[Any, ...] = (after_seq,)
        if endpoint_id is not None:
            query += " AND endpoint_id = ?"
            args += (endpoint_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [_change(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._dirlock is not None:
                self._dirlock.release()
                self._dirlock = None
