"""Leases: a job whose job-take reply was lost goes back to the queue within two heartbeats and runs elsewhere.

The hand-driven worker speaks real HTTP to a real server; the worker that finishes the job is
a real process on the unmodified runpod SDK. What is counted: jobs submitted that did not end
COMPLETED with their own output (lost), which must be zero.
"""

from __future__ import annotations

import time

import httpx

from tests.support.live import Harness, deployment, wait_until


def _ping(worker: httpx.Client, wid: str, job_ids: list[str]) -> None:
    r = worker.get(f"/ping/{wid}", params={"job_id": ",".join(job_ids)} if job_ids else {})
    assert r.status_code == 200, r.text


def test_a_lost_take_reply_is_requeued_within_two_heartbeats_and_completes_on_another_worker(make_server) -> None:
    h: Harness = make_server()
    interval_s = h.settings.heartbeat_interval_s
    w1 = h.add_worker("w1")
    # A healthy worker: it runs one job, and its heartbeat lists it while it runs.
    first = h.submit({"input": {"n": 1}})
    took = w1.get("/job-take/w1")
    assert took.status_code == 200 and took.json()["id"] == first
    _ping(w1, "w1", [first])
    assert w1.post(f"/job-done/w1/{first}", json={"output": {"echo": {"n": 1}}}).json()["accepted"] == "COMPLETED"

    # The next take's answer is lost on the way: the server holds job `lost` for w1, w1 never saw it.
    lost = h.submit({"input": {"n": 2}})
    assert w1.get("/job-take/w1").json()["id"] == lost
    assert h.registry.jobs_of("w1") == [lost]
    heartbeats = 0
    while h.job_status(lost)["status"] == "IN_PROGRESS" and heartbeats < 5:
        _ping(w1, "w1", [])  # healthy heartbeats, one interval apart, listing nothing
        heartbeats += 1
        if h.job_status(lost)["status"] == "IN_PROGRESS":
            time.sleep(interval_s * 1.05)
    requeued = h.job_status(lost)
    assert requeued["status"] == "IN_QUEUE" and requeued["retries"] == 1, requeued  # attempt counted
    assert heartbeats <= 2  # the second heartbeat, one interval after the first, released it
    assert h.registry.jobs_of("w1") == [] and h.registry.get("w1").state.value == "IDLE"

    # Another worker, a real runpod-SDK process, runs it; w1 keeps its heartbeat meanwhile.
    h.spawn_worker(deployment(), "w2")

    def completed() -> bool:
        _ping(w1, "w1", [])
        return h.job_status(lost)["status"] == "COMPLETED"

    wait_until(completed, 60, "the requeued job completed on w2")
    done = h.job_status(lost)
    assert done["workerId"] == "w2" and done["output"] == {"echo": {"n": 2}}

    # The lease is fenced: w1's late result is ignored, and a heartbeat listing the job tells w1 to stop it.
    late = w1.post(f"/job-done/w1/{lost}", json={"output": "stale"})
    assert late.json()["accepted"] == "IGNORED"
    _ping(w1, "w1", [lost])
    stop = w1.get("/job-stop/w1")
    assert stop.status_code == 200 and stop.json() == {"jobsToStop": [lost]}

    outputs = {first: {"echo": {"n": 1}}, lost: {"echo": {"n": 2}}}
    lost_count = sum(
        1 for job_id, want in outputs.items()
        if (b := h.job_status(job_id))["status"] != "COMPLETED" or b["output"] != want
    )
    assert lost_count == 0
    assert h.store.count() == 2


def test_a_heartbeat_listing_a_job_the_server_does_not_know_gets_a_stop_signal(make_server) -> None:
    h: Harness = make_server()
    w1 = h.add_worker("w1")
    assert w1.get("/job-take/w1").status_code == 204  # up and polling, nothing queued
    _ping(w1, "w1", ["ghost-from-a-previous-life"])
    stop = w1.get("/job-stop/w1")
    assert stop.status_code == 200 and stop.json() == {"jobsToStop": ["ghost-from-a-previous-life"]}
    _ping(w1, "w1", ["ghost-from-a-previous-life"])  # still listed: told again, not piled up
    assert w1.get("/job-stop/w1").json() == {"jobsToStop": ["ghost-from-a-previous-life"]}
