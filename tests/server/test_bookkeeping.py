"""Bounded bookkeeping on a real server: after many short jobs expire, and many workers come and go,
the server's in-memory structures are back to their empty size (none grows with total jobs or workers)."""

from __future__ import annotations

from dataclasses import replace

from gpuserve.live.webhooks import WEBHOOK_LOG_KEPT
from gpuserve.store.sqlite import _COMPACT_MIN
from tests.support.live import SERVER_FAST, Harness, wait_until

JOBS = 700  # two deadline entries each: past the 1,024 at which the heap is compacted
WORKERS = 40


def test_expired_jobs_and_gone_workers_leave_nothing_behind(make_server) -> None:
    h: Harness = make_server(settings=replace(SERVER_FAST, run_retention_s=0.2))
    w1 = h.add_worker("w1")
    for i in range(JOBS):
        job_id = h.submit({"input": {"i": i}})
        assert w1.get("/job-take/w1").json()["id"] == job_id
        assert w1.post(f"/job-done/w1/{job_id}", json={"output": i}).json()["accepted"] == "COMPLETED"
    # Workers that each had a job cancelled (a stop signal kept for them), then went away.
    for n in range(WORKERS):
        wid = f"gone-{n}"
        worker = h.add_worker(wid)
        job_id = h.submit({"input": {"n": n}})
        assert worker.get(f"/job-take/{wid}").json()["id"] == job_id
        assert h.client.post(f"/v2/ep/cancel/{job_id}").json()["status"] == "CANCELLED"
        worker.close()
        h.registry.remove(wid)
    wait_until(lambda: h.store.bookkeeping()["jobs"] == 0, 30, "every result expired")
    wait_until(lambda: h.rt.stops.size() == 0, 30, "the stop channels of gone workers dropped")
    sizes = h.store.bookkeeping()
    assert sizes["deadlines"] <= _COMPACT_MIN and sizes["queued_entries"] == 0, sizes
    assert h.store.count() == 0
    w = h.registry.get("w1")
    assert w is not None and w.in_flight == set() and w.leases == {}
    assert h.rt.done_waiters.job_ids() == [] and h.rt.webhooks.log.maxlen == WEBHOOK_LOG_KEPT
