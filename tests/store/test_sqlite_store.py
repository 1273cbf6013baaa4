"""SqliteJobStore: FIFO, worker results, cancel/retry/purge, lost workers, deadlines and restart recovery."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gpuserve.core.errors import IllegalTransitionError, NotFoundError
from gpuserve.core.jobs import JobStatus
from gpuserve.store import DoneOutcome, SqliteJobStore
from gpuserve.store.base import SweepKind


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
def store(db_path):
    s = SqliteJobStore(db_path)
    yield s
    s.close()


def submit(store, n=1, endpoint="ep", t=0.0, **kw):
    return [store.submit(endpoint, {"input": {"i": i}}, now_s=t + i, **kw) for i in range(n)]


def test_submit_is_committed_and_visible_to_another_connection(store, db_path):
    (job,) = submit(store)
    other = sqlite3.connect(db_path)
    row = other.execute("SELECT status, payload FROM jobs WHERE id=?", (job.id,)).fetchone()
    assert row[0] == "IN_QUEUE"
    assert json.loads(row[1]) == {"input": {"i": 0}}
    assert store.count() == 1
    mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_fifo_per_endpoint_and_batch_take(store):
    a = submit(store, 3, "a")
    b = submit(store, 2, "b", t=10)
    assert [j.id for j in store.take("a", "w1", 2, 20)] == [a[0].id, a[1].id]
    assert [j.id for j in store.take("b", "w2", 5, 20)] == [b[0].id, b[1].id]
    assert [j.id for j in store.take("a", "w1", 5, 20)] == [a[2].id]
    assert store.take("a", "w1", 5, 20) == []


def test_worker_json_carries_id_input_and_passthrough_keys(store):
    job = store.submit("ep", {"input": {"x": 1}, "webhook": "http://h/", "s3Config": {"bucketName": "b"}}, now_s=0)
    (taken,) = store.take("ep", "w", 1, 1)
    assert json.loads(taken.worker_json()) == {
        "id": job.id,
        "input": {"x": 1},
        "webhook": "http://h/",
        "s3Config": {"bucketName": "b"},
    }


def test_stats_counts_and_low_priority_never_drives_scaling(store):
    submit(store, 2, t=100)
    submit(store, 3, t=103, low_priority=True)
    stats = store.stats("ep", 110)
    assert (stats.in_queue, stats.in_queue_scaling, stats.in_progress) == (5, 2, 0)
    assert stats.oldest_queued_age_s == pytest.approx(10)
    assert stats.submitted_total == 5 and stats.last_arrival_s == pytest.approx(105)
    store.take("ep", "w", 3, 111)  # the two normal ones and the first low-priority one, FIFO
    stats = store.stats("ep", 111)
    assert (stats.in_queue, stats.in_queue_scaling, stats.in_progress) == (2, 0, 3)


def test_finish_completed_failed_progress_and_idempotence(store):
    j1, j2, j3 = submit(store, 3)
    store.take("ep", "w", 3, 5)
    assert store.finish(j1.id, "w", {"status": "IN_PROGRESS", "output": {"pct": 50}}, 6)[0] is DoneOutcome.PROGRESS
    assert store.get(j1.id).status_body()["output"] == {"pct": 50}
    assert store.get(j1.id).status is JobStatus.IN_PROGRESS
    assert store.finish(j1.id, "w", {"output": 42}, 7)[0] is DoneOutcome.COMPLETED
    # A duplicate or a late progress post never changes a terminal job.
    assert store.finish(j1.id, "w", {"output": 43}, 8)[0] is DoneOutcome.IGNORED
    assert store.finish(j1.id, "w", {"status": "IN_PROGRESS", "output": 1}, 8)[0] is DoneOutcome.IGNORED
    body = store.get(j1.id).status_body()
    assert body["status"] == "COMPLETED" and body["output"] == 42
    assert body["delayTime"] == 5000 and body["executionTime"] == 2000 and body["workerId"] == "w"
    # A dict error is stringified and still FAILED.
    assert store.finish(j2.id, "w", {"output": {"a": 1}, "error": {"code": 1}}, 9)[0] is DoneOutcome.FAILED
    assert json.loads(store.get(j2.id).error) == {"code": 1}
    # Another worker cannot finish a job it does not hold.
    assert store.finish(j3.id, "intruder", {"output": 1}, 9)[0] is DoneOutcome.IGNORED
    assert store.finish(j3.id, "w", {}, 9)[0] is DoneOutcome.COMPLETED
    assert store.get(j3.id).status_body()["output"] is None
    assert store.health("ep") == {"completed": 2, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0, "cancelled": 0}


def test_cancel_queued_and_running_and_late_result_ignored(store):
    q, r = submit(store, 2)
    store.take("ep", "w", 1, 3)  # takes q (FIFO)
    job, before = store.cancel(r.id, 4)
    assert before is JobStatus.IN_QUEUE and job.status is JobStatus.CANCELLED
    assert store.take("ep", "w", 5, 4) == []  # a cancelled job is no longer handed out
    job, before = store.cancel(q.id, 5)
    assert before is JobStatus.IN_PROGRESS and job.status is JobStatus.CANCELLED
    assert store.finish(q.id, "w", {"output": "late"}, 6)[0] is DoneOutcome.IGNORED
    assert store.get(q.id).status is JobStatus.CANCELLED
    assert store.cancel("nope", 7) is None


def test_retry_only_failed_or_timed_out_same_id(store):
    (j,) = submit(store)
    with pytest.raises(IllegalTransitionError):
        store.retry(j.id, 1)
    store.take("ep", "w", 1, 1)
    store.finish(j.id, "w", {"error": "boom"}, 2)
    again = store.retry(j.id, 3)
    assert again.id == j.id and again.status is JobStatus.IN_QUEUE and again.retries == 1
    assert again.error is None
    assert store.health("ep")["retried"] == 1
    with pytest.raises(NotFoundError):
        store.retry("missing", 3)


def test_purge_removes_only_queued(store):
    jobs = submit(store, 4)
    store.take("ep", "w", 1, 5)
    assert store.purge("ep") == 3
    assert store.count("ep") == 1
    assert store.get(jobs[0].id).status is JobStatus.IN_PROGRESS
    assert all(store.get(j.id) is None for j in jobs[1:])


def test_lost_worker_requeues_first_then_fails_past_limit(store):
    a, b = submit(store, 2)
    store.take("ep", "w1", 1, 2)
    requeued = store.requeue("w1", [a.id, b.id], "worker w1 missed 3 heartbeats", 3, max_retries=1)
    assert [j.id for j in requeued] == [a.id]
    assert store.get(a.id).status is JobStatus.IN_QUEUE and store.get(a.id).retries == 1
    # The requeued job keeps its place: it goes out before the younger one.
    assert [j.id for j in store.take("ep", "w2", 1, 4)] == [a.id]
    store.requeue("w2", [a.id], "worker w2 exited", 5, max_retries=1)
    job = store.get(a.id)
    assert job.status is JobStatus.FAILED
    assert "worker w2 exited" in job.error and "1 retries" in job.error
    assert store.get(b.id).status is JobStatus.IN_QUEUE


def test_deadlines_execution_timeout_ttl_and_retention(store):
    run, ttl, done = store.submit("ep", {"input": {}}, now_s=0, execution_timeout_s=5), None, None
    ttl = store.submit("ep", {"input": {}}, now_s=0, ttl_s=10)
    done = store.submit("ep", {"input": {}}, now_s=0, retention_s=60)
    store.take("ep", "w", 1, 1)  # run
    assert store.sweep(5.9) == []
    (ev,) = store.sweep(6.0)
    assert ev.kind is SweepKind.TIMED_OUT and ev.worker_id == "w" and ev.job.id == run.id
    assert store.get(run.id).status is JobStatus.TIMED_OUT
    assert store.finish(run.id, "w", {"output": 1}, 7)[0] is DoneOutcome.IGNORED
    store.take("ep", "w", 2, 8)  # ttl and done
    store.finish(done.id, "w", {"output": 1}, 9)
    kinds = {(e.kind, e.job.id) for e in store.sweep(10)}
    assert (SweepKind.TTL_EXPIRED, ttl.id) in kinds  # deleted even mid-run
    assert store.get(ttl.id) is None
    assert store.next_deadline_s() is not None
    assert store.get(done.id) is not None
    kinds = {(e.kind, e.job.id) for e in store.sweep(69)}
    assert (SweepKind.RESULT_EXPIRED, done.id) in kinds and store.get(done.id) is None


def test_restart_recovers_queued_and_running_jobs_in_order(db_path):
    s1 = SqliteJobStore(db_path)
    jobs = submit(s1, 4)
    s1.take("ep", "w", 2, 5)  # two running when the server dies
    s1.finish(jobs[0].id, "w", {"output": "kept"}, 6)
    s1.close()
    s2 = SqliteJobStore(db_path, now_s=7)
    assert s2.recovered == 3
    assert s2.get(jobs[0].id).status is JobStatus.COMPLETED and s2.get(jobs[0].id).output == "kept"
    stats = s2.stats("ep", 7)
    assert stats.in_queue == 3 and stats.in_progress == 0
    assert [j.id for j in s2.take("ep", "w2", 10, 8)] == [jobs[1].id, jobs[2].id, jobs[3].id]
    new = s2.submit("ep", {"input": {}}, now_s=9)
    assert new.seq > jobs[3].seq
    s2.close()


def test_restart_drops_expired_jobs(db_path):
    s1 = SqliteJobStore(db_path)
    s1.submit("ep", {"input": {}}, now_s=0, ttl_s=10)
    keep = s1.submit("ep", {"input": {}}, now_s=0, ttl_s=100)
    s1.close()
    s2 = SqliteJobStore(db_path, now_s=50)
    assert s2.count() == 1 and s2.get(keep.id) is not None
    s2.close()


def test_chunks_are_handed_out_once(store):
    (j,) = submit(store)
    store.take("ep", "w", 1, 1)
    assert store.add_chunk(j.id, "w", "a") and store.add_chunk(j.id, "w", "b")
    assert not store.add_chunk(j.id, "other", "x")
    assert store.read_chunks(j.id) == ["a", "b"]
    assert store.read_chunks(j.id) == []
    store.add_chunk(j.id, "w", "c")
    assert store.read_chunks(j.id) == ["c"]


def test_invalid_synchronous_mode_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJobStore(tmp_path / "x.db", synchronous="OFF")


def test_bookkeeping_after_many_expired_jobs_does_not_depend_on_how_many(store):
    """10,000 short jobs (24 h ttl, 10 min timeout, 1 s retention): once their results expire, the
    in-memory structures are back to their empty size, yet a deadline still pending fires on time."""
    from gpuserve.store.sqlite import _COMPACT_MIN

    (keeper,) = submit(store, t=0.0, execution_timeout_s=30.0)
    assert [j.id for j in store.take("ep", "w-long", 1, 0.5)] == [keeper.id]  # runs through it all
    n = 10_000
    for i in range(n):
        t = 1.0 + i * 0.001
        store.submit("ep", {"input": {"i": i}}, now_s=t, retention_s=1.0)
        (job,) = store.take("ep", "w1", 1, t)
        assert store.finish(job.id, "w1", {"output": i}, t)[0] is DoneOutcome.COMPLETED
        assert len(store._deadlines) <= max(_COMPACT_MIN, 4 * len(store._jobs)) + 3  # bounded all along
    expired = [e for e in store.sweep(20.0) if e.kind is SweepKind.RESULT_EXPIRED]
    assert len(expired) == n
    sizes = store.bookkeeping()
    # Before: 20,000 dead ttl and timeout entries stayed in the heap for a day.
    assert sizes["jobs"] == 1 and sizes["deadlines"] <= _COMPACT_MIN and sizes["queued_entries"] == 0
    assert [(e.kind, e.job.id) for e in store.sweep(31.0)] == [(SweepKind.TIMED_OUT, keeper.id)]
    assert store.count() == 1


def test_the_store_is_private_to_its_owner(tmp_path):
    """Payloads may carry secrets (s3Config): the folder is 0700, the database and its WAL 0600."""
    path = tmp_path / "data" / "jobs.sqlite3"
    s = SqliteJobStore(path)
    try:
        submit(s)
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    finally:
        s.close()
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert modes["jobs.sqlite3"] == 0o600 and modes.get("jobs.sqlite3-wal", 0o600) == 0o600, modes


def test_a_data_dir_that_cannot_hold_the_store_is_one_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from gpuserve.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        SqliteJobStore(blocker / "data" / "jobs.sqlite3")
    assert str(err.value).startswith("data_dir cannot hold the job store jobs.sqlite3 (")
    assert str(blocker / "data") in str(err.value) and "\n" not in str(err.value)
