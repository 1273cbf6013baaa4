"""PostgresJobStore: jobs in a PostgreSQL database (psycopg 3, a connection pool), the database the only truth.

Nothing is cached in the process, so several servers may share one database: every call is one
or a few statements, each committed before it returns (autocommit; a /run answer means the
job is committed, with PostgreSQL's default synchronous_commit). A take is `FOR UPDATE SKIP
LOCKED` over a partial index of queued jobs, FIFO per endpoint with lowPriority jobs last, so
concurrent takes never wait on each other or hand one job out twice. Each take is a lease
(store/base.py): the holder and the attempt fence every later write, heartbeats renew it, and a
lease nobody renews expires in `sweep` (requeued, or FAILED past `max_retries`): that is how the
jobs of a server that died are found, so a restart requeues nothing by itself. The `workers` table
holds each running worker's token digest, so a worker started by one server is recognised by all,
and a new leader adopts the workers that outlived the old one (`live/worker_directory.py`).

The schema is created and migrated by the server (`_MIGRATIONS`, recorded in `schema_version`),
under an advisory lock so servers starting together migrate once.

Stream chunks are rows stamped with their attempt (a requeue deletes the old attempt's, a read
deletes what it returns). A job ending with a `webhook` gets a `webhook_outbox` row in the same
statement or transaction as its terminal state; any server claims due rows (`FOR UPDATE SKIP
LOCKED`, the claim itself a timeout), so each retry happens once whichever server is alive. A
statement that fails for want of the database (unreachable, disk full) raises StoreError.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpuserve.core.errors import ConfigError, IllegalTransitionError, NotFoundError, StoreError
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus, transition
from gpuserve.core.types import QueueStats
from gpuserve.store.base import (
    DoneOutcome,
    EndpointChange,
    Job,
    OutboxWebhook,
    SweepEvent,
    SweepKind,
    WorkerRecord,
    lease_lost_error,
)
from gpuserve.store.dirlock import DataDirLock
from gpuserve.store.location import check_url, redact

try:
    import psycopg
    import psycopg_pool
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"the PostgreSQL store needs the postgres extra: pip install 'gpuserve[postgres]' ({exc})") from None

__all__ = ["SCHEMA_VERSION", "PostgresJobStore"]

log = logging.getLogger("gpuserve.store")

# Each entry migrates the schema from its index to the next version; never edit one that shipped.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE SEQUENCE job_seq;
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        status TEXT NOT NULL,
        payload TEXT NOT NULL,
        low_priority BOOLEAN NOT NULL,
        execution_timeout_s DOUBLE PRECISION NOT NULL,
        ttl_s DOUBLE PRECISION NOT NULL,
        retention_s DOUBLE PRECISION NOT NULL,
        created_s DOUBLE PRECISION NOT NULL,
        queued_s DOUBLE PRECISION NOT NULL,
        started_s DOUBLE PRECISION,
        completed_s DOUBLE PRECISION,
        worker_id TEXT,
        output TEXT,
        has_output BOOLEAN NOT NULL DEFAULT FALSE,
        error TEXT,
        retries INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        lease_expires_s DOUBLE PRECISION
    );
    CREATE INDEX jobs_endpoint ON jobs (endpoint_id);
    CREATE INDEX jobs_queue ON jobs (endpoint_id, low_priority, seq) WHERE status = 'IN_QUEUE';
    CREATE INDEX jobs_running ON jobs (endpoint_id) WHERE status = 'IN_PROGRESS';
    CREATE INDEX jobs_ttl ON jobs ((created_s + ttl_s)) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS');
    CREATE INDEX jobs_exec ON jobs ((started_s + execution_timeout_s)) WHERE status = 'IN_PROGRESS';
    CREATE INDEX jobs_lease ON jobs (lease_expires_s) WHERE status = 'IN_PROGRESS';
    CREATE INDEX jobs_retain ON jobs ((completed_s + retention_s))
        WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT');
    CREATE TABLE job_chunks (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        n BIGSERIAL,
        chunk TEXT NOT NULL,
        PRIMARY KEY (job_id, n)
    );
    CREATE TABLE endpoint_counters (
        endpoint_id TEXT PRIMARY KEY,
        submitted BIGINT NOT NULL,
        last_arrival_s DOUBLE PRECISION
    );
    """,
    # 2: one Controller per endpoint across servers (a lease row; `term` fences a deposed leader)
    """
    CREATE TABLE leaders (
        endpoint_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term BIGINT NOT NULL,
        expires_s DOUBLE PRECISION NOT NULL
    );
    """,
    # 3: endpoint settings changed at run time, versioned per endpoint (`gpuserve endpoints update`)
    """
    CREATE TABLE endpoint_changes (
        seq BIGSERIAL PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        at_s DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        change TEXT NOT NULL,
        UNIQUE (endpoint_id, version)
    );
    """,
    # 4: chunks stamped with their attempt; the webhook outbox (url and body NULL: being filled in, see _end_held)
    """
    ALTER TABLE job_chunks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE webhook_outbox (
        id BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        url TEXT,
        body TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_s DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (due_s);
    CREATE INDEX webhook_outbox_unfilled ON webhook_outbox (job_id) WHERE body IS NULL;
    CREATE TABLE write_probe (n INTEGER);
    """,
    # 5: the workers every server recognises (a token any replica checks; what a new leader adopts)
    """
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        spec_version TEXT NOT NULL,
        registered_s DOUBLE PRECISION NOT NULL,
        seen_s DOUBLE PRECISION,
        lists_jobs BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX workers_endpoint ON workers (endpoint_id);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
_WORKER_COLS = "worker_id, endpoint_id, token_hash, capacity, spec_version, registered_s, seen_s, lists_jobs"
_MIGRATE_LOCK = 0x67707376  # pg_advisory_xact_lock key: one server migrates at a time
# How long an empty take's answer (and the earliest deadline read) is trusted while no local write
# changed it: shorter than the poll fallback, so a fallback wake always asks the database.
_EMPTY_TRUST_S = 0.5
# Other servers on the database are heard through LISTEN/NOTIFY: a job queued (payload: sender, endpoint)
# or ended (sender, job id). Each server skips its own. Notifications are an optimisation: a pooler may
# drop them, so the runtime also polls every `poll_fallback_s`. They are sent only while another server
# listens (`%(tell)s`, see `_listen`): each costs the database a signal to every listener and this
# server's listener a wake-up, for nothing when it is the only one.
_QUEUED = "CASE WHEN %(tell)s THEN pg_notify('gpuserve_queued', %(me)s || ' ' || endpoint_id) END"
_ENDED = "CASE WHEN %(tell)s THEN pg_notify('gpuserve_ended', %(me)s || ' ' || id) END"
# Each listening server says hello (payload: its name) every _HELLO_S; one heard within _PEER_GONE_S is
# listening. A server tells while it heard one, and for its first _PEER_GONE_S of listening (it may not
# have heard the others' hellos yet); a store that does not listen always tells.
_HELLO_S = 1.0
_PEER_GONE_S = 3.5

_COLS = (
    "id, endpoint_id, seq, status, payload, low_priority, execution_timeout_s, ttl_s, retention_s, created_s,"
    " queued_s, started_s, completed_s, worker_id, output, has_output, error, retries, attempt, lease_expires_s"
)
_TAKE_RETURNING = ", ".join("j." + c.strip() for c in _COLS.split(","))
_TERMINAL_SQL = "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')"
# The fence of store/base.py's `holds`, in SQL: the current lease holder, at the given attempt if any.
_HOLDS = "status = 'IN_PROGRESS' AND worker_id = %(w)s AND (%(a)s::integer IS NULL OR attempt = %(a)s::integer)"
# A submit: the job and its endpoint's arrival counters, one statement.
_SUBMIT_SQL = (
    "WITH c AS (INSERT INTO endpoint_counters (endpoint_id, submitted, last_arrival_s)"
    " VALUES (%(e)s, 1, %(now)s) ON CONFLICT (endpoint_id) DO UPDATE"
    " SET submitted = endpoint_counters.submitted + 1,"
    " last_arrival_s = GREATEST(endpoint_counters.last_arrival_s, EXCLUDED.last_arrival_s)"
    " RETURNING submitted, last_arrival_s)"
    " INSERT INTO jobs (id, endpoint_id, seq, status, payload, low_priority, execution_timeout_s, ttl_s,"
    " retention_s, created_s, queued_s)"
    " VALUES (%(id)s, %(e)s, nextval('job_seq'), 'IN_QUEUE', %(p)s, %(low)s, %(x)s, %(ttl)s, %(ret)s,"
    f" %(now)s, %(now)s) RETURNING seq, {_QUEUED}"
)
# ... and the queue's stats (`stats`) as the statement's snapshot has them, before this job: the head of the
# queue after it is the first queued job (the first normal one, for a normal job), or this job.
_SUBMIT_STATS_SQL = (
    _SUBMIT_SQL
    + ", (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE')"
    " , (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE' AND NOT low_priority)"
    " , (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_PROGRESS')"
    " , COALESCE((SELECT queued_s FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE'"
    "   AND (%(low)s OR NOT low_priority) ORDER BY low_priority, seq LIMIT 1), %(now)s)"
    " , (SELECT submitted FROM c), (SELECT last_arrival_s FROM c)"
)
# A take: the endpoint's first queued jobs (lowPriority last, then FIFO), leased to the worker.
_PICK = (
    "picked AS (SELECT id FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE'"
    " AND NOT (id = ANY(%(skip)s))"  # reserved for another worker (bind_to_launch)
    " ORDER BY low_priority, seq LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
)
_LEASE = (
    "UPDATE jobs j SET status = 'IN_PROGRESS', worker_id = %(w)s, started_s = %(now)s,"
    " attempt = j.attempt + 1, lease_expires_s = %(lease)s"
    f" FROM picked WHERE j.id = picked.id RETURNING {_TAKE_RETURNING}"
)
_TAKE_SQL = f"WITH {_PICK} {_LEASE}"
# A held job's end and, for a payload that may name a webhook, its outbox row (url and body filled in next;
# a server that dies in between leaves them NULL, and `claim_webhooks` fills them). `u`: the ended row.
_END_SQL = (
    "WITH u AS (UPDATE jobs SET status = %(s)s, completed_s = %(now)s, output = %(o)s, has_output = %(ho)s,"
    f" error = %(err)s, lease_expires_s = NULL WHERE id = %(id)s AND {_HOLDS} RETURNING {_COLS}, {_ENDED}),"
    " o AS (INSERT INTO webhook_outbox (job_id, due_s) SELECT id, %(now)s FROM u"
    " WHERE strpos(payload, '\"webhook\"') > 0 RETURNING id)"
)
# The end and the worker's next take in one statement: rows (TRUE, the ended job, its outbox id) and
# (FALSE, a job taken, NULL).
_FINISH_TAKE_SQL = (
    f"{_END_SQL}, {_PICK}, t AS ({_LEASE})"
    f" SELECT TRUE, {', '.join('u.' + c.strip() for c in _COLS.split(','))}, (SELECT id FROM o) FROM u"
    f" UNION ALL SELECT FALSE, {', '.join('t.' + c.strip() for c in _COLS.split(','))}, NULL FROM t"
)
_REQUEUE_SET = (
    "status = 'IN_QUEUE', queued_s = %(now)s, started_s = NULL, completed_s = NULL, worker_id = NULL, output = NULL,"
    " has_output = FALSE, error = NULL, retries = retries + 1, lease_expires_s = NULL"
)


def _no_flush_wait(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET synchronous_commit = off")


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        endpoint_id=row[1],
        seq=row[2],
        status=JobStatus(row[3]),
        payload=json.loads(row[4]),
        payload_json=row[4],
        low_priority=row[5],
        execution_timeout_s=row[6],
        ttl_s=row[7],
        retention_s=row[8],
        created_s=row[9],
        queued_s=row[10],
        started_s=row[11],
        completed_s=row[12],
        worker_id=row[13],
        output=json.loads(row[14]) if row[14] is not None else None,
        has_output=row[15],
        error=row[16],
        retries=row[17],
        attempt=row[18],
        lease_expires_s=row[19],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _final(body: dict[str, Any]) -> tuple[JobStatus, DoneOutcome, Any, bool, str | None]:
    """A final job-done body as the end it writes: status, outcome, output, whether there is one, error text."""
    error = body.get("error")
    has_output = "output" in body
    output = body.get("output") if has_output else None
    if error is not None:
        return JobStatus.FAILED, DoneOutcome.FAILED, output, has_output, error if isinstance(error, str) else _dumps(error)
    return JobStatus.COMPLETED, DoneOutcome.COMPLETED, output, has_output, None


def _outbox(conn: psycopg.Connection[Any], job: Job, now_s: float) -> None:
    """The ended job's webhook, in the caller's transaction (nothing when it has none)."""
    if job.webhook is not None and job.status.is_terminal:
        conn.execute(
            "INSERT INTO webhook_outbox (job_id, url, body, due_s) VALUES (%s, %s, %s, %s)",
            (job.id, job.webhook, _dumps(job.status_body()), now_s),
        )


class PostgresJobStore:
    """A JobStore on PostgreSQL; thread-safe (a connection pool), any number of servers per database.

    `lease_s`: how long a take or a heartbeat keeps a job held without another heartbeat (the
    platform passes twice the liveness timeout, so a live server's registry finds lost workers
    first). `max_retries`: for jobs whose lease expired. `data_dir`: the server's own folder (worker
    logs), locked for the store's life as the SQLite store locks its own: the database may be shared,
    a data directory may not.
    """

    blocking = True  # every call is a round trip to the database: the runtime makes it on a thread

    def __init__(
        self,
        url: str,
        *,
        now_s: float | None = None,
        lease_s: float = 60.0,
        max_retries: int = 3,
        pool_size: int = 8,
        connect_timeout_s: float = 10.0,
        data_dir: Path | None = None,
        poll_fallback_s: float = 1.0,
    ) -> None:
        if not lease_s > 0:
            raise ConfigError("lease_s", lease_s, "must be positive")
        check_url(url)
        self.poll_fallback_s: float | None = poll_fallback_s
        self.replica = uuid.uuid4().hex[:12]  # this server, as named in its notifications
        self._tell = True  # whether to notify: another server may be listening (set by `_listen`)
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._dirlock = DataDirLock(data_dir).acquire() if data_dir is not None else None
        try:
            self._open(url, now_s, lease_s, max_retries, pool_size, connect_timeout_s)
        except BaseException:
            self._release_dir()
            raise

    def _release_dir(self) -> None:
        if self._dirlock is not None:
            self._dirlock.release()
            self._dirlock = None

    def _open(
        self, url: str, now_s: float | None, lease_s: float, max_retries: int, pool_size: int, connect_timeout_s: float
    ) -> None:
        self.url = url
        self.lease_s = lease_s
        self.max_retries = max_retries
        self._lock = threading.Lock()
        self._queue_gen: dict[str, int] = {}  # endpoint -> local writes that may have queued a job
        self._empty_at: dict[str, tuple[int, float]] = {}  # endpoint -> (generation, monotonic s) of an empty take
        # The earliest deadline as last read, lowered by every local write that sets one, so most
        # maintenance passes (every 100 ms) need no statement at all; re-read at least every _EMPTY_TRUST_S.
        self._due: tuple[float | None, float] | None = None  # (earliest deadline s, monotonic s read)
        # Acceptance (submit, cancel, retry, purge) commits on connections that wait for the WAL flush
        # (the URL's synchronous_commit, PostgreSQL's default: on). Everything else commits without
        # waiting: a crash of the database host can lose its last fraction of a second of takes,
        # results and renewals, which leases turn into reruns (the job is back IN_PROGRESS, its lease
        # expires, it runs again), never into a lost job. A crash of gpuserve loses nothing either way.
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False, name="gpuserve-accept"
        )
        self._fast = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="gpuserve-store",
            configure=_no_flush_wait,
        )
        try:
            # One direct attempt first: its error says why (the pool's only says it timed out).
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout_s))).close()
            self._pool.open(wait=True, timeout=connect_timeout_s)
            self._fast.open(wait=True, timeout=connect_timeout_s)
            self._migrate()
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError, StoreError) as exc:
            self._close_pools()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError("store", redact(url), f"cannot use the PostgreSQL database ({reason})") from None
        except BaseException:
            self._close_pools()
            raise
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')").fetchone()
        self.recovered = int(row[0]) if row else 0  # jobs found queued or running at start
        if now_s is not None:
            self.sweep(now_s)

    def _close_pools(self) -> None:
        self._pool.close()
        self._fast.close()

    @contextmanager
    def _conn(self, *, durable: bool = False) -> Iterator[psycopg.Connection[Any]]:
        try:
            with (self._pool if durable else self._fast).connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:  # unreachable, disk full, shut down
            text = str(exc).strip()
            raise StoreError(text.splitlines()[0] if text else type(exc).__name__) from None

    def _deadline(self, when_s: float | None) -> None:
        """A local write set a deadline at `when_s` (None: it may have moved one earlier; read again)."""
        with self._lock:
            if self._due is None:
                return
            if when_s is None:
                self._due = None
            elif self._due[0] is None or when_s < self._due[0]:
                self._due = (when_s, self._due[1])

    def _may_have_queued(self, endpoint_id: str) -> None:
        """A local write that may have queued a job: the next take must ask the database."""
        with self._lock:
            self._queue_gen[endpoint_id] = self._queue_gen.get(endpoint_id, 0) + 1
            self._empty_at.pop(endpoint_id, None)

    def _migrate(self) -> None:
        with self._conn(durable=True) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    "store",
                    redact(self.url),
                    f"holds schema version {version}, newer than this gpuserve's {SCHEMA_VERSION}; upgrade gpuserve",
                )
            for step in _MIGRATIONS[version:]:
                conn.execute(step)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:
                conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    # -- the JobQueue seam (controller) ----------------------------------------------------------

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT"
                " (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE'),"
                " (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE' AND NOT low_priority),"
                " (SELECT count(*) FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_PROGRESS'),"
                " (SELECT queued_s FROM jobs WHERE endpoint_id = %(e)s AND status = 'IN_QUEUE'"
                "   ORDER BY low_priority, seq LIMIT 1),"
                " (SELECT submitted FROM endpoint_counters WHERE endpoint_id = %(e)s),"
                " (SELECT last_arrival_s FROM endpoint_counters WHERE endpoint_id = %(e)s)",
                {"e": endpoint_id},
            ).fetchone()
        assert row is not None
        in_queue, normal, running, first_queued_s, submitted, last_arrival_s = row
        return QueueStats(
            in_queue=in_queue,
            in_progress=running,
            oldest_queued_age_s=max(0.0, now_s - first_queued_s) if first_queued_s is not None else 0.0,
            submitted_total=submitted or 0,
            last_arrival_s=last_arrival_s,
            in_queue_scaling=normal,
        )

    def queue_position(self, job: Job) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE endpoint_id = %s AND status = 'IN_QUEUE' AND (low_priority, seq) < (%s, %s)",
                (job.endpoint_id, job.low_priority, job.seq),
            ).fetchone()
        assert row is not None
        return int(row[0]) + 1

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
        return self._submit(endpoint_id, payload, now_s, low_priority, execution_timeout_s, ttl_s, retention_s,
                            payload_json, False)[0]

    def submit_with_stats(
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
    ) -> tuple[Job, QueueStats]:
        """`submit`, and the endpoint's queue as `stats` reads it just after (this job in it), from the same statement:
        what the job's arrival shows the Controller, without another round trip."""
        job, stats = self._submit(endpoint_id, payload, now_s, low_priority, execution_timeout_s, ttl_s, retention_s,
                                  payload_json, True)
        assert stats is not None
        return job, stats

    def _submit(
        self, endpoint_id: str, payload: dict[str, Any], now_s: float, low_priority: bool, execution_timeout_s: float,
        ttl_s: float, retention_s: float, payload_json: str | None, with_stats: bool,
    ) -> tuple[Job, QueueStats | None]:
        if "input" not in payload:
            raise ConfigError("input", None, "is required")
        raw = payload_json if payload_json is not None else _dumps(payload)
        job_id = str(uuid.uuid4())
        with self._conn(durable=True) as conn:
            # One statement, one commit: the job and its endpoint's arrival counters.
            row = conn.execute(
                _SUBMIT_STATS_SQL if with_stats else _SUBMIT_SQL,
                {"me": self.replica, "tell": self._tell, "e": endpoint_id, "now": now_s, "id": job_id, "p": raw, "low": low_priority,
                 "x": execution_timeout_s, "ttl": ttl_s, "ret": retention_s},
            ).fetchone()
        assert row is not None
        self._may_have_queued(endpoint_id)
        self._deadline(now_s + ttl_s)
        stats = None
        if with_stats:
            # The subqueries read the queue as it was before this statement: this job is added by hand.
            in_queue, normal, running, head_queued_s, submitted, last_arrival_s = row[2:8]
            stats = QueueStats(
                in_queue=in_queue + 1,
                in_progress=running,
                oldest_queued_age_s=max(0.0, now_s - head_queued_s),
                submitted_total=submitted,
                last_arrival_s=last_arrival_s,
                in_queue_scaling=normal + (0 if low_priority else 1),
            )
        return Job(
            id=job_id,
            endpoint_id=endpoint_id,
            seq=row[0],
            status=JobStatus.IN_QUEUE,
            payload=payload,
            payload_json=raw,
            low_priority=low_priority,
            execution_timeout_s=execution_timeout_s,
            ttl_s=ttl_s,
            retention_s=retention_s,
            created_s=now_s,
            queued_s=now_s,
        ), stats

    def get(self, job_id: str) -> Job | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def set_retention(self, job_id: str, retention_s: float) -> None:
        """Shorten or lengthen how long a result is kept (e.g. /runsync keeps it 1 min)."""
        with self._conn(durable=True) as conn:
            conn.execute("UPDATE jobs SET retention_s = %s WHERE id = %s", (retention_s, job_id))
        self._deadline(None)

    def cancel(self, job_id: str, now_s: float) -> tuple[Job, JobStatus] | None:
        with self._conn(durable=True) as conn, conn.transaction():
            row = conn.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return None
            before = JobStatus(row[0])
            if before in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS):
                transition(before, JobStatus.CANCELLED)
                conn.execute(
                    "UPDATE jobs SET status = 'CANCELLED', completed_s = %(now)s, lease_expires_s = NULL"
                    f" WHERE id = %(id)s RETURNING {_ENDED}",
                    {"now": now_s, "id": job_id, "me": self.replica, "tell": self._tell},
                )
            row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
            assert row is not None
            job = _job(row)
            if job.status is not before:
                _outbox(conn, job, now_s)
        self._deadline(None)
        return job, before

    def retry(self, job_id: str, now_s: float) -> Job:
        with self._conn(durable=True) as conn:
            row = conn.execute(
                f"UPDATE jobs SET {_REQUEUE_SET}, seq = nextval('job_seq')"
                " WHERE id = %(id)s AND status IN ('FAILED', 'TIMED_OUT')"
                f" RETURNING {_COLS}, {_QUEUED}",
                {"id": job_id, "now": now_s, "me": self.replica, "tell": self._tell},
            ).fetchone()
            if row is not None:
                conn.execute("DELETE FROM job_chunks WHERE job_id = %s", (job_id,))
                again = _job(row)
                self._may_have_queued(again.endpoint_id)
                self._deadline(again.created_s + again.ttl_s)
                return again
        job = self.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist or has expired")
        raise IllegalTransitionError("job", job.status.value, JobStatus.IN_QUEUE.value)

    def purge(self, endpoint_id: str) -> int:
        with self._conn(durable=True) as conn:
            cur = conn.execute("DELETE FROM jobs WHERE endpoint_id = %s AND status = 'IN_QUEUE'", (endpoint_id,))
            return cur.rowcount

    def read_chunks(self, job_id: str) -> list[Any]:
        read = self.read_stream(job_id)
        return read[1] if read is not None else []

    def read_stream(self, job_id: str) -> tuple[int, list[Any]] | None:
        with self._conn() as conn:
            rows = conn.execute(
                "WITH d AS (DELETE FROM job_chunks WHERE job_id = %(id)s RETURNING n, attempt, chunk)"
                " SELECT j.attempt, d.n, d.attempt, d.chunk FROM jobs j LEFT JOIN d ON TRUE WHERE j.id = %(id)s",
                {"id": job_id},
            ).fetchall()
        if not rows:
            return None
        chunks = sorted((r[1], r[2], r[3]) for r in rows if r[1] is not None)
        # A requeue deletes the old attempt's chunks with it, so these are all of one attempt.
        attempt = chunks[-1][1] if chunks else rows[0][0]
        return attempt, [json.loads(c) for _, _, c in chunks]

    # -- the webhook outbox ----------------------------------------------------------------------

    def claim_webhooks(self, now_s: float, claim_s: float, limit: int) -> list[OutboxWebhook]:
        with self._conn() as conn:
            rows = conn.execute(
                "UPDATE webhook_outbox o SET attempts = o.attempts + 1, due_s = %(until)s"
                " FROM (SELECT id FROM webhook_outbox WHERE due_s <= %(now)s ORDER BY due_s, id LIMIT %(n)s"
                "   FOR UPDATE SKIP LOCKED) p"
                " WHERE o.id = p.id RETURNING o.id, o.job_id, o.url, o.body, o.attempts",
                {"until": now_s + claim_s, "now": now_s, "n": limit},
            ).fetchall()
            claimed = []
            for outbox_id, job_id, url, body, attempts in sorted(rows):
                if body is None:  # its server died between the job's end and filling this row in
                    row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
                    job = _job(row) if row is not None else None
                    if not self._fill_outbox(conn, outbox_id, job):
                        continue
                    assert job is not None and job.webhook is not None
                    url, body = job.webhook, _dumps(job.status_body())
                claimed.append(OutboxWebhook(outbox_id, job_id, url, body, attempts))
        return claimed

    def webhook_done(self, outbox_id: int) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM webhook_outbox WHERE id = %s", (outbox_id,))

    def webhook_retry(self, outbox_id: int, due_s: float) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE webhook_outbox SET due_s = %s WHERE id = %s", (due_s, outbox_id))

    def pending_webhooks(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM webhook_outbox").fetchone()
        return int(row[0]) if row else 0

    def probe(self) -> None:
        with self._conn(durable=True) as conn, conn.transaction():
            conn.execute("INSERT INTO write_probe (n) VALUES (1)")
            conn.execute("DELETE FROM write_probe")

    # -- worker side -------------------------------------------------------------------------------

    def take(
        self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float, skip: Collection[str] = ()
    ) -> list[Job]:
        gen = self._take_gen(endpoint_id, max_jobs)
        if gen is None:
            return []
        with self._conn() as conn:
            rows = conn.execute(_TAKE_SQL, self._take_params(endpoint_id, worker_id, max_jobs, now_s, skip)).fetchall()
        return self._taken(endpoint_id, gen, rows, now_s)

    def _take_gen(self, endpoint_id: str, max_jobs: int) -> int | None:
        """The endpoint's queue generation before a take, or None: the take is answered empty without a statement."""
        if max_jobs < 1:
            return None
        with self._lock:
            gen = self._queue_gen.get(endpoint_id, 0)
            empty = self._empty_at.get(endpoint_id)
            # The last take found the queue empty and no local write queued a job since: skip the
            # round trip (a worker's next-job poll after each result would otherwise cost one).
            # Writes by other servers on the database are seen at most _EMPTY_TRUST_S later.
            if empty is not None and empty[0] == gen and time.monotonic() - empty[1] < _EMPTY_TRUST_S:
                return None
        return gen

    def _take_params(
        self, endpoint_id: str, worker_id: str, max_jobs: int, now_s: float, skip: Collection[str]
    ) -> dict[str, Any]:
        return {"e": endpoint_id, "n": max_jobs, "w": worker_id, "now": now_s, "lease": now_s + self.lease_s,
                "skip": list(skip)}

    def _taken(self, endpoint_id: str, gen: int, rows: Sequence[Sequence[Any]], now_s: float) -> list[Job]:
        jobs = [_job(r) for r in rows]
        if jobs:
            self._deadline(min(now_s + self.lease_s, min(now_s + j.execution_timeout_s for j in jobs)))
        else:
            with self._lock:
                if self._queue_gen.get(endpoint_id, 0) == gen:  # nothing was queued here meanwhile
                    self._empty_at[endpoint_id] = (gen, time.monotonic())
        jobs.sort(key=lambda j: (j.low_priority, j.seq))
        return jobs

    def renew(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        # A renewal only postpones a deadline: the cached earliest one stays a safe lower bound.
        if not job_ids:
            return
        with self._conn() as conn:
            conn.execute(
                "UPDATE jobs SET lease_expires_s = %(lease)s"
                " WHERE id = ANY(%(ids)s) AND status = 'IN_PROGRESS' AND worker_id = %(w)s",
                {"lease": now_s + self.lease_s, "ids": list(job_ids), "w": worker_id},
            )

    def _end_params(
        self, job_id: str, worker_id: str, attempt: int | None, status: JobStatus, now_s: float,
        output: Any, has_output: bool, error: str | None,
    ) -> dict[str, Any]:
        transition(JobStatus.IN_PROGRESS, status)
        return {"me": self.replica, "tell": self._tell, "s": status.value, "now": now_s,
                "o": _dumps(output) if has_output else None, "ho": has_output, "err": error, "id": job_id,
                "w": worker_id, "a": attempt}

    def _ended(self, conn: psycopg.Connection[Any], row: Sequence[Any], outbox_id: int | None, now_s: float) -> Job:
        """The job `_END_SQL` ended (its row), its webhook's outbox row filled in."""
        job = _job(row)
        if outbox_id is not None:
            self._fill_outbox(conn, outbox_id, job)
        self._deadline(now_s + job.retention_s)
        return job

    def _end_held(
        self, job_id: str, worker_id: str, attempt: int | None, status: JobStatus, now_s: float,
        output: Any, has_output: bool, error: str | None,
    ) -> Job | None:
        params = self._end_params(job_id, worker_id, attempt, status, now_s, output, has_output, error)
        with self._conn() as conn:
            row = conn.execute(_END_SQL + " SELECT u.*, (SELECT id FROM o) FROM u", params).fetchone()
            return self._ended(conn, row[:-1], row[-1], now_s) if row is not None else None

    def _fill_outbox(self, conn: psycopg.Connection[Any], outbox_id: int, job: Job | None) -> bool:
        """Give an outbox row made by `_end_held` its url and body; one whose job has none (or is gone) is deleted."""
        if job is not None and job.webhook is not None and job.status.is_terminal:
            conn.execute(
                "UPDATE webhook_outbox SET url = %s, body = %s WHERE id = %s",
                (job.webhook, _dumps(job.status_body()), outbox_id),
            )
            return True
        conn.execute("DELETE FROM webhook_outbox WHERE id = %s", (outbox_id,))
        return False

    def finish(
        self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float, attempt: int | None = None
    ) -> tuple[DoneOutcome, Job | None]:
        if body.get("status") == "IN_PROGRESS":
            with self._conn() as conn:
                row = conn.execute(
                    f"UPDATE jobs SET output = %(o)s, has_output = TRUE WHERE id = %(id)s AND {_HOLDS} RETURNING {_COLS}",
                    {"o": _dumps(body.get("output")), "id": job_id, "w": worker_id, "a": attempt},
                ).fetchone()
            if row is None:
                return DoneOutcome.IGNORED, self.get(job_id)
            return DoneOutcome.PROGRESS, _job(row)
        status, outcome, output, has_output, error = _final(body)
        job = self._end_held(job_id, worker_id, attempt, status, now_s, output, has_output, error)
        if job is None:
            return DoneOutcome.IGNORED, self.get(job_id)
        return outcome, job

    def finish_and_take(
        self, job_id: str, worker_id: str, body: dict[str, Any], now_s: float, attempt: int | None,
        endpoint_id: str, max_jobs: int, skip: Collection[str] = (),
    ) -> tuple[tuple[DoneOutcome, Job | None], list[Job]]:
        """`finish` and then, for a final result, `take` for the same worker: one statement where both run.

        The take does not depend on the finish (a result the lease fence ignores still frees the worker's
        slot), so both go in one statement: the result's row and the queued ones it takes are different rows.
        """
        gen = self._take_gen(endpoint_id, max_jobs) if body.get("status") != "IN_PROGRESS" else None
        if gen is None:
            done = self.finish(job_id, worker_id, body, now_s, attempt)
            return done, self.take(endpoint_id, worker_id, max_jobs, now_s, skip) if done[0] is not DoneOutcome.PROGRESS else []
        status, outcome, output, has_output, error = _final(body)
        params = self._end_params(job_id, worker_id, attempt, status, now_s, output, has_output, error)
        params.update(self._take_params(endpoint_id, worker_id, max_jobs, now_s, skip))
        with self._conn() as conn:
            rows = conn.execute(_FINISH_TAKE_SQL, params).fetchall()
            end = next((r for r in rows if r[0]), None)  # the result's row, if the fence let it in
            job = self._ended(conn, end[1:-1], end[-1], now_s) if end is not None else None
        jobs = self._taken(endpoint_id, gen, [r[1:-1] for r in rows if not r[0]], now_s)
        if job is None:
            return (DoneOutcome.IGNORED, self.get(job_id)), jobs
        return (outcome, job), jobs

    def fail(self, job_id: str, worker_id: str, reason: str, now_s: float, attempt: int | None = None) -> Job | None:
        return self._end_held(job_id, worker_id, attempt, JobStatus.FAILED, now_s, None, False, reason)

    def add_chunk(self, job_id: str, worker_id: str, chunk: Any, attempt: int | None = None) -> bool:
        with self._conn() as conn:
            cur = conn.execute(
                "INSERT INTO job_chunks (job_id, attempt, chunk)"
                f" SELECT id, attempt, %(c)s FROM jobs WHERE id = %(id)s AND {_HOLDS}",
                {"c": _dumps(chunk), "id": job_id, "w": worker_id, "a": attempt},
            )
            return cur.rowcount == 1

    def note_stopped(self, job_id: str, worker_id: str, note: str) -> bool:
        with self._conn(durable=True) as conn:
            cur = conn.execute(
                "UPDATE jobs SET error = CASE WHEN error IS NULL OR error = '' THEN %(n)s ELSE error || '; ' || %(n)s END"
                " WHERE id = %(id)s AND worker_id = %(w)s AND status IN ('TIMED_OUT', 'CANCELLED')"
                " AND position(%(n)s in coalesce(error, '')) = 0",
                {"n": note, "id": job_id, "w": worker_id},
            )
            return cur.rowcount == 1

    def requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float, max_retries: int) -> list[Job]:
        if not job_ids:
            return []
        params = {"ids": list(job_ids), "w": worker_id, "a": None, "now": now_s, "max": max_retries, "reason": reason,
                  "me": self.replica, "tell": self._tell}
        with self._conn() as conn, conn.transaction():
            failed = conn.execute(
                "UPDATE jobs SET status = 'FAILED', completed_s = %(now)s, lease_expires_s = NULL,"
                " error = %(reason)s || '; gave up after ' || retries || ' retries'"
                f" WHERE id = ANY(%(ids)s) AND {_HOLDS} AND retries >= %(max)s RETURNING {_COLS}, {_ENDED}",
                params,
            ).fetchall()
            requeued = conn.execute(
                f"UPDATE jobs SET {_REQUEUE_SET} WHERE id = ANY(%(ids)s) AND {_HOLDS} RETURNING {_COLS}, {_QUEUED}", params
            ).fetchall()
            if requeued:
                conn.execute("DELETE FROM job_chunks WHERE job_id = ANY(%s)", ([r[0] for r in requeued],))
            for r in failed:
                _outbox(conn, _job(r), now_s)
        by_id = {r[0]: _job(r) for r in failed + requeued}
        for job in by_id.values():
            self._deadline(job.completed_s + job.retention_s if job.completed_s is not None else job.created_s + job.ttl_s)
        for endpoint_id in {by_id[r[0]].endpoint_id for r in requeued}:
            self._may_have_queued(endpoint_id)
        return [by_id[i] for i in job_ids if i in by_id]

    def in_progress(self, endpoint_id: str | None = None) -> list[Job]:
        with self._conn() as conn:
            if endpoint_id is None:
                rows = conn.execute(f"SELECT {_COLS} FROM jobs WHERE status = 'IN_PROGRESS' ORDER BY seq").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLS} FROM jobs WHERE status = 'IN_PROGRESS' AND endpoint_id = %s ORDER BY seq",
                    (endpoint_id,),
                ).fetchall()
        return [_job(r) for r in rows]

    # -- deadlines ---------------------------------------------------------------------------------

    def next_deadline_s(self) -> float | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT LEAST("
                " (SELECT min(created_s + ttl_s) FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')),"
                " (SELECT min(started_s + execution_timeout_s) FROM jobs WHERE status = 'IN_PROGRESS'),"
                " (SELECT min(lease_expires_s) FROM jobs WHERE status = 'IN_PROGRESS'),"
                f" (SELECT min(completed_s + retention_s) FROM jobs WHERE status IN {_TERMINAL_SQL}))"
            ).fetchone()
        return row[0] if row is not None else None

    def sweep(self, now_s: float) -> list[SweepEvent]:
        events: list[SweepEvent] = []
        with self._lock:
            cached = self._due
        if cached is None or time.monotonic() - cached[1] >= _EMPTY_TRUST_S:
            read_at = time.monotonic()
            cached = (self.next_deadline_s(), read_at)
            with self._lock:
                self._due = cached
        if cached[0] is None or cached[0] > now_s:  # the usual case: nothing due, no statement or one indexed look
            return events
        with self._lock:
            self._due = None  # what follows moves deadlines (requeues, new retention): read again next time
        p = {"now": now_s, "max": self.max_retries, "me": self.replica, "tell": self._tell}
        with self._conn() as conn, conn.transaction():
            for row in conn.execute(
                "DELETE FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS') AND created_s + ttl_s <= %(now)s"
                f" RETURNING {_COLS}, {_ENDED}",
                p,
            ).fetchall():
                job = _job(row)
                holder = job.worker_id if job.status is JobStatus.IN_PROGRESS else None
                events.append(SweepEvent(SweepKind.TTL_EXPIRED, job, holder))
            for row in conn.execute(
                "UPDATE jobs SET status = 'TIMED_OUT', completed_s = %(now)s, lease_expires_s = NULL,"
                " error = 'execution timeout of ' || execution_timeout_s || ' s exceeded'"
                f" WHERE status = 'IN_PROGRESS' AND started_s + execution_timeout_s <= %(now)s RETURNING {_COLS}, {_ENDED}",
                p,
            ).fetchall():
                job = _job(row)
                _outbox(conn, job, now_s)
                events.append(SweepEvent(SweepKind.TIMED_OUT, job, job.worker_id))
            # Expired leases (rare: a live server's registry requeues its lost workers' jobs first).
            expired = conn.execute(
                "SELECT id, worker_id, retries FROM jobs WHERE status = 'IN_PROGRESS' AND lease_expires_s <= %(now)s"
                " ORDER BY seq FOR UPDATE SKIP LOCKED",
                p,
            ).fetchall()
            for job_id, holder, retries in expired:
                if retries >= self.max_retries:
                    row = conn.execute(
                        "UPDATE jobs SET status = 'FAILED', completed_s = %(now)s, lease_expires_s = NULL,"
                        f" error = %(err)s WHERE id = %(id)s RETURNING {_COLS}, {_ENDED}",
                        {**p, "id": job_id, "err": lease_lost_error(holder, retries)},
                    ).fetchone()
                else:
                    row = conn.execute(
                        f"UPDATE jobs SET {_REQUEUE_SET} WHERE id = %(id)s RETURNING {_COLS}, {_QUEUED}", {**p, "id": job_id}
                    ).fetchone()
                    conn.execute("DELETE FROM job_chunks WHERE job_id = %s", (job_id,))
                assert row is not None  # locked above
                job = _job(row)
                _outbox(conn, job, now_s)
                if job.status is JobStatus.IN_QUEUE:
                    self._may_have_queued(job.endpoint_id)
                events.append(SweepEvent(SweepKind.LEASE_EXPIRED, job, holder))
            # A job whose outbox row is not filled in yet stays until it is (its body is made from the job).
            for row in conn.execute(
                f"DELETE FROM jobs WHERE status IN {_TERMINAL_SQL} AND completed_s + retention_s <= %(now)s"
                " AND NOT EXISTS (SELECT 1 FROM webhook_outbox o WHERE o.job_id = jobs.id AND o.body IS NULL)"
                f" RETURNING {_COLS}",
                p,
            ).fetchall():
                events.append(SweepEvent(SweepKind.RESULT_EXPIRED, _job(row), None))
        return events

    # -- reporting ---------------------------------------------------------------------------------

    def health(self, endpoint_id: str) -> dict[str, int]:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),"
                " count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')),"
                " count(*) FILTER (WHERE status = 'IN_PROGRESS'),"
                " count(*) FILTER (WHERE status = 'IN_QUEUE'),"
                " count(*) FILTER (WHERE retries > 0),"
                " count(*) FILTER (WHERE status = 'CANCELLED')"
                " FROM jobs WHERE endpoint_id = %s",
                (endpoint_id,),
            ).fetchone()
        assert row is not None
        keys = ("completed", "failed", "inProgress", "inQueue", "retried", "cancelled")
        return {k: int(v) for k, v in zip(keys, row, strict=True)}

    def count(self, endpoint_id: str | None = None) -> int:
        with self._conn() as conn:
            if endpoint_id is None:
                row = conn.execute("SELECT count(*) FROM jobs").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM jobs WHERE endpoint_id = %s", (endpoint_id,)).fetchone()
        return int(row[0]) if row else 0

    # -- other servers on the database --------------------------------------------------------

    def lead(self, endpoint_id: str, now_s: float, lease_s: float) -> int | None:
        # One statement: renew our own lease, or take one that expired (a new term); else nothing.
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO leaders (endpoint_id, holder, term, expires_s) VALUES (%(e)s, %(me)s, 1, %(exp)s)"
                " ON CONFLICT (endpoint_id) DO UPDATE SET"
                "   term = CASE WHEN leaders.holder = EXCLUDED.holder THEN leaders.term ELSE leaders.term + 1 END,"
                "   holder = EXCLUDED.holder, expires_s = EXCLUDED.expires_s"
                " WHERE leaders.holder = EXCLUDED.holder OR leaders.expires_s <= %(now)s"
                " RETURNING term",
                {"e": endpoint_id, "me": self.replica, "exp": now_s + lease_s, "now": now_s},
            ).fetchone()
        return int(row[0]) if row is not None else None

    def resign(self, endpoint_id: str) -> None:
        with self._conn() as conn:
            # Expired rather than deleted: the next leader's term still follows ours.
            conn.execute(
                "UPDATE leaders SET expires_s = '-Infinity' WHERE endpoint_id = %s AND holder = %s",
                (endpoint_id, self.replica),
            )

    def put_worker(self, record: WorkerRecord) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO workers (worker_id, endpoint_id, token_hash, capacity, spec_version, registered_s, seen_s,"
                " lists_jobs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET"
                " endpoint_id = EXCLUDED.endpoint_id, token_hash = EXCLUDED.token_hash, capacity = EXCLUDED.capacity,"
                " spec_version = EXCLUDED.spec_version, seen_s = coalesce(EXCLUDED.seen_s, workers.seen_s),"
                " lists_jobs = workers.lists_jobs OR EXCLUDED.lists_jobs",
                (record.worker_id, record.endpoint_id, record.token_hash, record.capacity, record.spec_version,
                 record.registered_s, record.seen_s, record.lists_jobs),
            )

    def drop_worker(self, worker_id: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    def find_worker(self, worker_id: str) -> WorkerRecord | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_WORKER_COLS} FROM workers WHERE worker_id = %s", (worker_id,)).fetchone()
        return WorkerRecord(*row) if row is not None else None

    def workers_of(self, endpoint_id: str) -> list[WorkerRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_WORKER_COLS} FROM workers WHERE endpoint_id = %s ORDER BY registered_s, worker_id",
                (endpoint_id,),
            ).fetchall()
        return [WorkerRecord(*r) for r in rows]

    def saw_workers(self, worker_ids: Collection[str], now_s: float, listing: Collection[str] = ()) -> None:
        if not worker_ids:
            return
        with self._conn() as conn:
            conn.execute(
                "UPDATE workers SET seen_s = greatest(coalesce(seen_s, %s), %s),"
                " lists_jobs = lists_jobs OR worker_id = ANY(%s) WHERE worker_id = ANY(%s)",
                (now_s, now_s, sorted(listing), sorted(worker_ids)),
            )

    def record_change(
        self,
        endpoint_id: str,
        action: str,
        fields: dict[str, Any],
        previous: dict[str, Any],
        actor: str,
        now_s: float,
    ) -> EndpointChange:
        change = _dumps({"fields": fields, "previous": previous})
        for attempt in range(3):  # two servers numbering the same endpoint's next version: the loser numbers again
            try:
                with self._conn(durable=True) as conn:
                    row = conn.execute(
                        "INSERT INTO endpoint_changes (endpoint_id, version, at_s, actor, action, change)"
                        " SELECT %(e)s, COALESCE(MAX(version), 0) + 1, %(now)s, %(actor)s, %(action)s, %(change)s"
                        " FROM endpoint_changes WHERE endpoint_id = %(e)s RETURNING seq, version",
                        {"e": endpoint_id, "now": now_s, "actor": actor, "action": action, "change": change},
                    ).fetchone()
                break
            except psycopg.errors.UniqueViolation:
                if attempt == 2:
                    raise
        assert row is not None
        return EndpointChange(int(row[0]), endpoint_id, int(row[1]), now_s, actor, action, dict(fields), dict(previous))

    def changes(self, endpoint_id: str | None = None, after_seq: int = 0) -> list[EndpointChange]:
        query = "SELECT seq, endpoint_id, version, at_s, actor, action, change FROM endpoint_changes WHERE seq > %(after)s"
        if endpoint_id is not None:
            query += " AND endpoint_id = %(e)s"
        with self._conn() as conn:
            rows = conn.execute(query + " ORDER BY seq", {"after": after_seq, "e": endpoint_id}).fetchall()
        out = []
        for row in rows:
            body = json.loads(row[6])
            out.append(
                EndpointChange(
                    int(row[0]), row[1], int(row[2]), float(row[3]), row[4], row[5],
                    body.get("fields", {}), body.get("previous", {}),
                )
            )
        return out

    def listen(self, on_queued: Callable[[str], None], on_ended: Callable[[str], None]) -> None:
        """Call `on_queued(endpoint_id)` / `on_ended(job_id)` (on a thread of the store's) when another server
        queues or ends a job. After a lost connection, `on_queued` is called for "" (anything may have changed)."""
        if self._listener is not None:
            return
        self._listener = threading.Thread(
            target=self._listen, args=(on_queued, on_ended), name="gpuserve-store-listen", daemon=True
        )
        self._listener.start()

    def _listen(self, on_queued: Callable[[str], None], on_ended: Callable[[str], None]) -> None:
        first = True
        peers: dict[str, float] = {}  # other listening servers -> monotonic s their last hello was heard
        while not self._closed.is_set():
            self._tell = True  # not listening (yet, or any more): whoever listens may need to hear us
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute("LISTEN gpuserve_queued")
                    conn.execute("LISTEN gpuserve_ended")
                    conn.execute("LISTEN gpuserve_hello")
                    if not first:
                        on_queued("")  # notifications sent while disconnected are gone
                    first = False
                    since = next_hello = time.monotonic()
                    while not self._closed.is_set():
                        if time.monotonic() >= next_hello:
                            conn.execute("SELECT pg_notify('gpuserve_hello', %s)", (self.replica,))
                            next_hello = time.monotonic() + _HELLO_S
                        for note in conn.notifies(timeout=0.5):
                            sender, _, what = note.payload.partition(" ")
                            if sender == self.replica:
                                continue
                            if note.channel == "gpuserve_hello":
                                peers[sender] = time.monotonic()
                                self._tell = True
                            elif note.channel == "gpuserve_queued":
                                self._may_have_queued(what)
                                on_queued(what)
                            else:
                                on_ended(what)
                        now = time.monotonic()
                        for peer in [p for p, heard in peers.items() if now - heard >= _PEER_GONE_S]:
                            del peers[peer]
                        self._tell = bool(peers) or now - since < _PEER_GONE_S
            except psycopg.Error:
                self._tell = True
                log.warning("store: lost the notification connection to %s; reconnecting", redact(self.url))
                self._closed.wait(1.0)
            except Exception:
                self._tell = True
                log.exception("store: a notification handler failed")
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(5.0)
            self._listener = None
        self._close_pools()
        self._release_dir()


# Statuses the SQL above spells out by hand; keep them in step with core.jobs.
assert {s.value for s in TERMINAL_STATUSES} == {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
