"""PostgreSQL only: the versioned schema the server migrates, errors naming the store, takes from several
stores on one database (as several servers would) never handing a job out twice, a result and the next take
in one statement, and notifications sent only while another server listens."""

from __future__ import annotations

import threading

import psycopg
import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.core.jobs import JobStatus
from gpuserve.store.base import DoneOutcome
from gpuserve.store.postgres import SCHEMA_VERSION, PostgresJobStore
from tests.support.live import wait_until
from tests.support.postgres import clear


@pytest.fixture
def url(pg_database):
    clear(pg_database)
    return pg_database


def test_the_schema_is_created_once_and_versioned(url):
    a = PostgresJobStore(url)
    b = PostgresJobStore(url)  # a second server on the same database migrates nothing
    try:
        assert a.schema_version() == b.schema_version() == SCHEMA_VERSION >= 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    finally:
        a.close()
        b.close()


def test_a_database_from_a_newer_gpuserve_is_refused_by_name(url):
    PostgresJobStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    try:
        with pytest.raises(ConfigError, match=f"holds schema version {SCHEMA_VERSION + 1}, newer than"):
            PostgresJobStore(url)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))


def test_an_unreachable_database_is_one_error_without_the_password(unused_port):
    with pytest.raises(ConfigError) as err:
        PostgresJobStore(f"postgresql://someone:s3cret@127.0.0.1:{unused_port}/db", connect_timeout_s=1)
    text = str(err.value)
    assert text.startswith("store cannot use the PostgreSQL database (connection failed: ")
    assert "Connection refused" in text and "\n" not in text
    assert "someone:***@127.0.0.1" in text and "s3cret" not in text


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_takes_from_several_stores_hand_each_job_out_once_in_order(url):
    """Four stores (four servers' worth of pools) race eight takers over 400 jobs: SKIP LOCKED, no duplicates."""
    stores = [PostgresJobStore(url) for _ in range(4)]
    try:
        jobs = [stores[0].submit("ep", {"input": {"i": i}}, now_s=float(i)) for i in range(400)]
        taken: list[list[str]] = [[] for _ in range(8)]

        def taker(k: int) -> None:
            store = stores[k % 4]
            while True:
                got = store.take("ep", f"w{k}", 3, 1000.0)
                if not got:
                    return
                taken[k].extend(j.id for j in got)
                for j in got:
                    store.finish(j.id, f"w{k}", {"output": j.payload["input"]["i"]}, 1001.0)

        threads = [threading.Thread(target=taker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        every = [i for ids in taken for i in ids]
        assert len(every) == len(set(every)) == 400
        # Each taker saw its jobs in queue order (FIFO holds per take, across takers).
        seq = {j.id: j.seq for j in jobs}
        for ids in taken:
            assert [seq[i] for i in ids] == sorted(seq[i] for i in ids)
        assert stores[1].health("ep")["completed"] == 400
    finally:
        for s in stores:
            s.close()


def test_a_database_at_an_older_version_is_migrated_in_place(url):
    from gpuserve.store.postgres import _MIGRATIONS

    with psycopg.connect(url, autocommit=True) as conn:  # as the first release left it, with a job
        conn.execute(
            "DROP TABLE IF EXISTS schema_version, leaders, job_chunks, endpoint_counters, endpoint_changes, jobs,"
            " webhook_outbox, write_probe, workers CASCADE"
        )
        conn.execute("DROP SEQUENCE IF EXISTS job_seq")
        conn.execute(_MIGRATIONS[0])
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
    store = PostgresJobStore(url)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 5
        assert store.lead("ep", 0.0, 5.0) == 1  # the table version 2 added
        assert store.record_change("ep", "update", {"image": "x"}, {}, "ops", 1.0).version == 1  # version 3's
        assert store.pending_webhooks() == 0  # the outbox version 4 added
        assert store.find_worker("w") is None and store.workers_of("ep") == []  # version 5's workers
    finally:
        store.close()


def test_one_leader_per_endpoint_a_new_term_when_its_lease_expires_and_resign_hands_over(url):
    a, b = PostgresJobStore(url), PostgresJobStore(url)
    try:
        assert a.lead("ep", 0.0, 5.0) == 1
        assert b.lead("ep", 1.0, 5.0) is None  # a's lease runs until 5
        assert b.lead("other", 1.0, 5.0) == 1  # per endpoint
        assert a.lead("ep", 4.0, 5.0) == 1  # renewed, same term: until 9
        assert b.lead("ep", 8.9, 5.0) is None
        assert b.lead("ep", 9.0, 5.0) == 2  # a stopped renewing: b leads, in a new term
        assert a.lead("ep", 9.5, 5.0) is None  # the deposed leader is fenced off
        b.resign("ep")
        assert a.lead("ep", 9.6, 5.0) == 3  # at once after a clean handover
    finally:
        a.close()
        b.close()


def test_an_outbox_row_left_unfilled_by_a_dead_server_is_filled_from_its_job_and_the_job_kept_till_then(url):
    store = PostgresJobStore(url)
    try:
        job = store.submit("ep", {"input": {}, "webhook": "http://hook.example/x"}, now_s=0, retention_s=5)
        store.take("ep", "w", 1, 1)
        store.finish(job.id, "w", {"output": 7}, 2)
        with psycopg.connect(url, autocommit=True) as conn:  # as a server killed between the two statements leaves it
            conn.execute("UPDATE webhook_outbox SET url = NULL, body = NULL")
        store.sweep(100)  # past retention: the job stays, its webhook's body is made from it
        assert store.get(job.id) is not None
        (row,) = store.claim_webhooks(100, claim_s=30, limit=10)
        assert row.url == "http://hook.example/x" and '"output": 7' in row.body and row.attempts == 1
        store.webhook_done(row.outbox_id)
        store.sweep(101)
        assert store.get(job.id) is None  # nothing holds it now
    finally:
        store.close()


def test_a_worker_recorded_by_one_server_is_found_by_another_seen_and_dropped(url):
    from gpuserve.store.base import WorkerRecord

    a, b = PostgresJobStore(url), PostgresJobStore(url)
    try:
        a.put_worker(WorkerRecord("ep-1", "ep", "digest-1", 2, "v1", 10.0))
        a.put_worker(WorkerRecord("ep-2", "ep", "digest-2", 1, "v1", 11.0))
        a.put_worker(WorkerRecord("other-1", "other", "digest-3", 1, "v1", 9.0))
        assert b.find_worker("ep-1") == WorkerRecord("ep-1", "ep", "digest-1", 2, "v1", 10.0, None)
        b.saw_workers(["ep-1", "ep-2"], 20.0, listing=["ep-1"])
        b.saw_workers(["ep-1"], 15.0)  # a slower server's older news moves nothing back
        assert [(w.worker_id, w.seen_s, w.lists_jobs) for w in a.workers_of("ep")] == [
            ("ep-1", 20.0, True), ("ep-2", 20.0, False)]
        a.put_worker(WorkerRecord("ep-1", "ep", "digest-1b", 2, "v2", 30.0))  # adopted: new token, seen kept
        assert b.find_worker("ep-1") == WorkerRecord("ep-1", "ep", "digest-1b", 2, "v2", 10.0, 20.0, True)
        a.drop_worker("ep-1")
        assert b.find_worker("ep-1") is None and [w.worker_id for w in b.workers_of("ep")] == ["ep-2"]
    finally:
        a.close()
        b.close()


def test_finish_and_take_ends_the_job_and_leases_the_next_in_one_call_as_finish_then_take_would(url):
    store = PostgresJobStore(url)
    try:
        first = store.submit("ep", {"input": 1, "webhook": "http://hook.example/x"}, now_s=0)
        second = store.submit("ep", {"input": 2}, now_s=0)
        low = store.submit("ep", {"input": 3}, now_s=0, low_priority=True)
        (held,) = store.take("ep", "w", 1, 1)
        assert held.id == first.id
        (outcome, ended), jobs = store.finish_and_take(first.id, "w", {"output": 10}, 2, held.attempt, "ep", 5)
        assert outcome is DoneOutcome.COMPLETED and ended is not None and ended.status is JobStatus.COMPLETED
        assert ended.output == 10 and ended.completed_s == 2
        assert [j.id for j in jobs] == [second.id, low.id]  # FIFO, lowPriority last
        assert all(j.status is JobStatus.IN_PROGRESS and j.worker_id == "w" and j.attempt == 1 for j in jobs)
        assert store.get(first.id).status is JobStatus.COMPLETED  # committed, as another read sees it
        (hook,) = store.claim_webhooks(3, claim_s=30, limit=10)  # the end's webhook, filled in
        assert hook.job_id == first.id and '"output": 10' in hook.body
        # An error body fails the job; an empty queue hands over nothing.
        (outcome, ended), jobs = store.finish_and_take(second.id, "w", {"error": "boom"}, 4, 1, "ep", 1)
        assert outcome is DoneOutcome.FAILED and ended.status is JobStatus.FAILED and ended.error == "boom"
        assert jobs == []
    finally:
        store.close()


def test_finish_and_take_ignores_a_fenced_result_but_still_takes_and_a_progress_post_takes_nothing(url):
    store = PostgresJobStore(url)
    try:
        job = store.submit("ep", {"input": 1}, now_s=0)
        (held,) = store.take("ep", "w", 1, 1)
        waiting = store.submit("ep", {"input": 2}, now_s=1)
        # A progress post: the output is kept, the job runs on, and the worker is handed nothing.
        (outcome, seen), jobs = store.finish_and_take(job.id, "w", {"status": "IN_PROGRESS", "output": "half"}, 2,
                                                      held.attempt, "ep", 1)
        assert outcome is DoneOutcome.PROGRESS and seen.output == "half" and jobs == []
        # A result from an attempt that lost its lease (stale attempt number): ignored, the job stays as it is,
        # and the worker's free slot still takes the next job.
        (outcome, seen), jobs = store.finish_and_take(job.id, "w", {"output": "late"}, 3, held.attempt + 1, "ep", 1)
        assert outcome is DoneOutcome.IGNORED and seen.status is JobStatus.IN_PROGRESS and seen.output == "half"
        assert [j.id for j in jobs] == [waiting.id]
        # Another worker's result for a job it does not hold: ignored too.
        (outcome, _), jobs = store.finish_and_take(waiting.id, "other", {"output": 1}, 4, None, "ep", 1)
        assert outcome is DoneOutcome.IGNORED and jobs == []
        assert store.get(waiting.id).worker_id == "w"
    finally:
        store.close()


def test_a_lone_listening_server_stops_notifying_and_starts_again_when_another_listens(url, monkeypatch):
    from gpuserve.store import postgres

    monkeypatch.setattr(postgres, "_PEER_GONE_S", 1.0)
    a, b = PostgresJobStore(url), PostgresJobStore(url)
    heard: list[str] = []
    try:
        assert a._tell  # not listening: it tells, whoever may listen
        a.listen(lambda _e: None, lambda _j: None)
        wait_until(lambda: not a._tell, 30, "A, alone, to stop notifying")
        b.listen(heard.append, lambda _j: None)  # B's hello reaches A
        wait_until(lambda: a._tell, 30, "A to hear B's hello")
        a.submit("ep", {"input": 1}, now_s=0)
        wait_until(lambda: heard == ["ep"], 30, "B to hear A's submit")
        b.close()
        wait_until(lambda: not a._tell, 30, "A to notice B is gone")
    finally:
        a.close()
        b.close()


def test_a_submit_with_stats_reads_the_queue_as_stats_would_just_after_it(url):
    store = PostgresJobStore(url)
    try:
        # (lowPriority of the job submitted, at time): an empty queue, a normal job behind queued lowPriority
        # ones (it heads the queue), lowPriority behind normal ones, and with a job running.
        for n, (low, now_s) in enumerate([(True, 1.0), (True, 2.0), (False, 3.0), (True, 4.0), (False, 5.0)]):
            if n == 4:
                store.take("ep", "w", 1, 4.5)
            job, stats = store.submit_with_stats("ep", {"input": n}, now_s=now_s, low_priority=low)
            assert job.status is JobStatus.IN_QUEUE and job.low_priority is low
            assert stats == store.stats("ep", now_s), n
        assert stats.in_queue == 4 and stats.in_progress == 1 and stats.submitted_total == 5
        store.submit("other", {"input": 0}, now_s=9.0)  # another endpoint's queue is not this one's
        assert store.submit_with_stats("ep", {"input": 5}, now_s=10.0)[1] == store.stats("ep", 10.0)
    finally:
        store.close()
