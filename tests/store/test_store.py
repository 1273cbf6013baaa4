"""The store suite, run against every JobStore (SQLite and PostgreSQL, tests/store/conftest.py): FIFO and
lowPriority, worker results, the lease fence, cancel/retry/purge, lost workers, leases, deadlines, restarts."""

from __future__ import annotations

import json

import pytest

from gpuserve.core.errors import IllegalTransitionError, NotFoundError
from gpuserve.core.jobs import JobStatus
from gpuserve.store import DoneOutcome
from gpuserve.store.base import SweepKind
from tests.store.conftest import committed_status


def submit(store, n=1, endpoint="ep", t=0.0, **kw):
    return [store.submit(endpoint, {"input": {"i": i}}, now_s=t + i, **kw) for i in range(n)]


def test_submit_is_committed_and_visible_to_another_connection(store):
    (job,) = submit(store)
    status, payload = committed_status(store, job.id)
    assert status == "IN_QUEUE"
    assert json.loads(payload) == {"input": {"i": 0}}
    assert store.count() == 1


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


def test_a_note_on_a_stopped_job_is_kept_once_and_only_from_its_worker(open_store):
    store = open_store()
    stopped, running = submit(store, 2)
    store.take("ep", "w", 2, 1)
    store.cancel(stopped.id, 2)
    note = "its handler was still running 4 s after the job was stopped, so worker w was replaced"
    assert not store.note_stopped(stopped.id, "intruder", note)
    assert not store.note_stopped(running.id, "w", note)  # still running: not a stopped job
    assert store.note_stopped(stopped.id, "w", note)
    assert not store.note_stopped(stopped.id, "w", note)  # a retried notice adds nothing
    assert store.get(stopped.id).error == note
    assert store.get(running.id).error is None and store.get(running.id).status is JobStatus.IN_PROGRESS
    store.close()
    assert open_store().get(stopped.id).error == note  # written through


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


def test_restart_requeues_running_jobs_whose_lease_expired_in_order(open_store):
    """SQLite requeues every running job at start (one server: its workers are gone); PostgreSQL those whose
    lease expired (other servers may hold the rest). Ten seconds past the lease, both agree."""
    s1 = open_store(lease_s=10)
    jobs = submit(s1, 4)
    s1.take("ep", "w", 2, 5)  # two running when the server dies
    s1.finish(jobs[0].id, "w", {"output": "kept"}, 6)
    s1.close()
    s2 = open_store(now_s=16, lease_s=10)
    assert s2.recovered == 3
    assert s2.get(jobs[0].id).status is JobStatus.COMPLETED and s2.get(jobs[0].id).output == "kept"
    stats = s2.stats("ep", 16)
    assert stats.in_queue == 3 and stats.in_progress == 0
    assert [j.id for j in s2.take("ep", "w2", 10, 17)] == [jobs[1].id, jobs[2].id, jobs[3].id]
    new = s2.submit("ep", {"input": {}}, now_s=18)
    assert new.seq > jobs[3].seq


def test_restart_drops_expired_jobs(open_store):
    s1 = open_store()
    s1.submit("ep", {"input": {}}, now_s=0, ttl_s=10)
    keep = s1.submit("ep", {"input": {}}, now_s=0, ttl_s=100)
    s1.close()
    s2 = open_store(now_s=50)
    assert s2.count() == 1 and s2.get(keep.id) is not None


def test_chunks_are_handed_out_once(store):
    (j,) = submit(store)
    store.take("ep", "w", 1, 1)
    assert store.add_chunk(j.id, "w", "a") and store.add_chunk(j.id, "w", "b")
    assert not store.add_chunk(j.id, "other", "x")
    assert store.read_chunks(j.id) == ["a", "b"]
    assert store.read_chunks(j.id) == []
    store.add_chunk(j.id, "w", "c")
    assert store.read_chunks(j.id) == ["c"]


def test_low_priority_jobs_go_last_fifo_among_themselves(store):
    low1, low2 = submit(store, 2, low_priority=True)
    normal1, normal2 = submit(store, 2, t=10)
    order = [j.id for j in store.take("ep", "w", 3, 20)] + [j.id for j in store.take("ep", "w", 3, 20)]
    assert order == [normal1.id, normal2.id, low1.id, low2.id]
    assert store.stats("ep", 20).in_queue == 0


def test_every_take_is_a_new_attempt_and_a_stale_attempt_is_fenced_off(store):
    (j,) = submit(store)
    (first,) = store.take("ep", "w", 1, 1)
    assert first.attempt == 1
    assert store.requeue("w", [j.id], "worker w missed 3 heartbeats", 2, max_retries=3)
    (second,) = store.take("ep", "w", 1, 3)  # the same worker takes it again
    assert second.attempt == 2
    # Posts fenced with the first attempt's token change nothing: chunk, progress, result, failure.
    assert not store.add_chunk(j.id, "w", "stale", attempt=1)
    assert store.finish(j.id, "w", {"status": "IN_PROGRESS", "output": "stale"}, 4, attempt=1)[0] is DoneOutcome.IGNORED
    assert store.finish(j.id, "w", {"output": "stale"}, 4, attempt=1)[0] is DoneOutcome.IGNORED
    assert store.fail(j.id, "w", "stale", 4, attempt=1) is None
    assert store.read_chunks(j.id) == []
    job = store.get(j.id)
    assert job.status is JobStatus.IN_PROGRESS and not job.has_output
    # The current attempt's posts count, once.
    assert store.add_chunk(j.id, "w", "fresh", attempt=2)
    outcome, done = store.finish(j.id, "w", {"output": "fresh"}, 5, attempt=2)
    assert outcome is DoneOutcome.COMPLETED and done.output == "fresh" and done.retries == 1
    assert store.finish(j.id, "w", {"output": "again"}, 6, attempt=2)[0] is DoneOutcome.IGNORED
    assert store.read_chunks(j.id) == ["fresh"]


def test_an_unrenewed_lease_expires_requeues_then_fails_and_heartbeats_renew_it(open_store):
    store = open_store(lease_s=5, max_retries=1)
    a, b = submit(store, 2)
    store.take("ep", "w1", 2, 0)  # both leased until 5
    store.renew("w1", [a.id], 3)  # a heartbeat listing a: until 8
    store.renew("intruder", [b.id], 3)  # only the holder renews
    assert store.sweep(4.9) == []
    (ev,) = store.sweep(5.0)
    assert (ev.kind, ev.job.id, ev.worker_id) == (SweepKind.LEASE_EXPIRED, b.id, "w1")
    assert ev.job.status is JobStatus.IN_QUEUE and ev.job.retries == 1
    assert store.get(b.id).status is JobStatus.IN_QUEUE
    # The worker that lost the lease cannot post for it any more.
    assert store.finish(b.id, "w1", {"output": "late"}, 6)[0] is DoneOutcome.IGNORED
    assert not store.add_chunk(b.id, "w1", "late")
    assert store.sweep(7.9) == []
    (ev,) = store.sweep(8.0)
    assert ev.job.id == a.id and ev.job.status is JobStatus.IN_QUEUE
    # Past max_retries an expired lease fails the job, naming why.
    store.take("ep", "w2", 2, 9)
    events = store.sweep(14.0)
    assert {(e.kind, e.job.id, e.job.status) for e in events} == {
        (SweepKind.LEASE_EXPIRED, a.id, JobStatus.FAILED),
        (SweepKind.LEASE_EXPIRED, b.id, JobStatus.FAILED),
    }
    job = store.get(a.id)
    assert job.status is JobStatus.FAILED and job.error == "the lease of worker w2 expired (no heartbeat); gave up after 1 retries"
    assert store.health("ep")["failed"] == 2


def test_a_finished_or_requeued_job_has_no_lease_left_to_expire(open_store):
    store = open_store(lease_s=5)
    a, b = submit(store, 2)
    store.take("ep", "w", 2, 0)
    store.finish(a.id, "w", {"output": 1}, 1)
    store.requeue("w", [b.id], "lost", 1, max_retries=3)
    assert store.sweep(100.0) == []
    assert store.get(b.id).status is JobStatus.IN_QUEUE and store.get(b.id).retries == 1


def test_stream_chunks_are_stored_go_out_once_and_a_finished_jobs_unread_ones_survive_a_restart(open_store):
    s1 = open_store()
    (j,) = submit(s1)
    s1.take("ep", "w", 1, 1)
    assert s1.add_chunk(j.id, "w", {"n": 0}) and s1.add_chunk(j.id, "w", {"n": 1})
    assert s1.read_stream(j.id) == (1, [{"n": 0}, {"n": 1}])
    assert s1.add_chunk(j.id, "w", {"n": 2}) and s1.add_chunk(j.id, "w", {"n": 3})
    s1.finish(j.id, "w", {"output": "done"}, 2)
    s1.close()
    s2 = open_store(now_s=3)
    assert s2.read_stream(j.id) == (1, [{"n": 2}, {"n": 3}])  # unread before the restart: served once
    assert s2.read_stream(j.id) == (1, [])
    s2.close()
    s3 = open_store(now_s=4)
    assert s3.read_stream(j.id) == (1, [])  # what went out before a restart never comes back
    assert s3.read_stream("no-such-job") is None


def test_a_rerun_streams_anew_at_a_higher_attempt_across_a_restart_and_the_dead_attempts_chunks_go(open_store):
    s1 = open_store(lease_s=10)
    (j,) = submit(s1)
    (first,) = s1.take("ep", "w", 1, 1)
    assert first.attempt == 1
    s1.add_chunk(j.id, "w", "a1")
    assert s1.read_stream(j.id) == (1, ["a1"])  # a reader saw attempt 1
    s1.add_chunk(j.id, "w", "a2")  # unread when the server dies
    s1.close()
    # SQLite requeues a running job at start; PostgreSQL once its lease has expired (here at once).
    s2 = open_store(now_s=20, lease_s=10)
    assert s2.get(j.id).status is JobStatus.IN_QUEUE
    assert s2.read_stream(j.id) == (1, [])  # the dead attempt's unread chunk is gone with it
    (second,) = s2.take("ep", "w2", 1, 21)
    assert second.attempt == 2  # above every attempt a reader has seen chunks of
    assert not s2.add_chunk(j.id, "w", "late", attempt=1)
    assert s2.add_chunk(j.id, "w2", "b1", attempt=2)
    assert s2.read_stream(j.id) == (2, ["b1"])


def test_a_webhook_is_an_outbox_row_written_with_the_end_claimed_retried_and_kept_across_a_restart(open_store):
    s1 = open_store()
    hooked = s1.submit("ep", {"input": {"i": 1}, "webhook": "http://hook.example/x"}, now_s=0)
    plain = s1.submit("ep", {"input": {"i": 2, "note": "webhook"}}, now_s=0)
    s1.take("ep", "w", 2, 1)
    s1.finish(plain.id, "w", {"output": 2}, 2)
    assert s1.pending_webhooks() == 0  # no webhook, no row
    s1.finish(hooked.id, "w", {"output": {"b": 2}}, 2)
    assert s1.pending_webhooks() == 1
    (row,) = s1.claim_webhooks(3, claim_s=30, limit=10)
    assert (row.job_id, row.url, row.attempts) == (hooked.id, "http://hook.example/x", 1)
    body = json.loads(row.body)
    assert body["id"] == hooked.id and body["status"] == "COMPLETED" and body["output"] == {"b": 2}
    assert s1.claim_webhooks(4, claim_s=30, limit=10) == []  # claimed: nobody else sends it meanwhile
    s1.webhook_retry(row.outbox_id, 10)
    s1.close()
    s2 = open_store()
    assert s2.claim_webhooks(9, claim_s=30, limit=10) == []
    (again,) = s2.claim_webhooks(10, claim_s=30, limit=10)
    assert (again.outbox_id, again.attempts, again.body) == (row.outbox_id, 2, row.body)
    s2.webhook_done(again.outbox_id)
    assert s2.pending_webhooks() == 0 and s2.claim_webhooks(100, claim_s=30, limit=10) == []
    # A claim that is never settled (its server died mid-POST) comes due again after claim_s.
    cancelled = s2.submit("ep", {"input": {}, "webhook": "http://hook.example/c"}, now_s=20)
    s2.cancel(cancelled.id, 21)
    (c,) = s2.claim_webhooks(22, claim_s=5, limit=10)
    assert json.loads(c.body)["status"] == "CANCELLED"
    assert s2.claim_webhooks(26, claim_s=5, limit=10) == []
    assert [r.attempts for r in s2.claim_webhooks(27, claim_s=5, limit=10)] == [2]


def test_timeouts_and_failures_past_the_retry_limit_write_their_webhooks_too(store):
    a = store.submit("ep", {"input": {}, "webhook": "http://hook.example/a"}, now_s=0, execution_timeout_s=5)
    b = store.submit("ep", {"input": {}, "webhook": "http://hook.example/b"}, now_s=0)
    store.take("ep", "w", 2, 1)
    store.sweep(6)  # a timed out
    store.requeue("w", [b.id], "lost", 6, max_retries=0)  # b failed: no retries allowed
    rows = {r.job_id: json.loads(r.body) for r in store.claim_webhooks(7, claim_s=30, limit=10)}
    assert rows[a.id]["status"] == "TIMED_OUT" and rows[b.id]["status"] == "FAILED"
    assert store.probe() is None


def test_large_inputs_and_outputs_come_back_exactly_from_take_status_webhook_and_after_a_restart(open_store):
    """Past SQLite's spill_payload_bytes (100 kB) an input or output is kept in its row only and read back
    when asked for; PostgreSQL keeps none in memory anyway. Either way, what comes back is exact."""
    big_in = {"blob": "é" + "x" * 300_000, "n": list(range(1000))}
    big_out = {"out": "y" * 250_000 + "ü"}
    progress = {"pct": "z" * 200_000}
    s1 = open_store()
    hooked = s1.submit("ep", {"input": big_in, "webhook": "http://hook.example/x", "s3Config": {"b": 1}}, now_s=0)
    cancelled = s1.submit("ep", {"input": big_in}, now_s=0)
    queued = s1.submit("ep", {"input": big_in, "webhook": "http://hook.example/q"}, now_s=0)
    assert s1.get(hooked.id).webhook == "http://hook.example/x"
    taken = s1.take("ep", "w", 2, 1)
    assert [json.loads(j.worker_json()) for j in taken] == [
        {"id": hooked.id, "input": big_in, "webhook": "http://hook.example/x", "s3Config": {"b": 1}},
        {"id": cancelled.id, "input": big_in},
    ]
    assert s1.finish(cancelled.id, "w", {"status": "IN_PROGRESS", "output": progress}, 2)[0] is DoneOutcome.PROGRESS
    assert s1.get(cancelled.id).status_body()["output"] == progress
    s1.cancel(cancelled.id, 3)  # the interim output stays the job's output
    chunk = {"c": "k" * 150_000}
    assert s1.add_chunk(hooked.id, "w", chunk) and s1.add_chunk(hooked.id, "w", 1)
    assert s1.finish(hooked.id, "w", {"output": big_out}, 3)[0] is DoneOutcome.COMPLETED
    assert s1.get(hooked.id).status_body()["output"] == big_out and s1.get(hooked.id).output == big_out
    assert s1.get(cancelled.id).status_body()["output"] == progress
    (row,) = s1.claim_webhooks(4, claim_s=30, limit=10)
    assert row.job_id == hooked.id and json.loads(row.body)["output"] == big_out
    s1.close()
    s2 = open_store(now_s=5)
    assert s2.get(hooked.id).output == big_out and s2.get(cancelled.id).status_body()["output"] == progress
    assert s2.get(queued.id).webhook == "http://hook.example/q"
    assert s2.read_stream(hooked.id)[1] == [chunk, 1] and s2.read_stream(hooked.id)[1] == []  # unread, then once
    (again,) = s2.take("ep", "w2", 5, 6)
    assert json.loads(again.worker_json()) == {"id": queued.id, "input": big_in, "webhook": "http://hook.example/q"}
    # An interim output of a run the restart ended is not the rerun's: it starts with none.
    assert s2.finish(queued.id, "w2", {"status": "IN_PROGRESS", "output": progress}, 7)[0] is DoneOutcome.PROGRESS
    s2.close()
    s3 = open_store(now_s=8)
    if s3.get(queued.id).status is JobStatus.IN_QUEUE:  # SQLite requeues at start; PostgreSQL once the lease ends
        assert s3.get(queued.id).has_output is False and s3.get(queued.id).status_body().get("output") is None
