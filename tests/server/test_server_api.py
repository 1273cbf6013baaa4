"""Every client and worker route over real HTTP, with the test acting as a worker through the worker API."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from gpuserve.live.settings import MIB
from tests.support.live import KEY, deployment, wait_until
from tests.support.live import SERVER_FAST as FAST


def take(worker: httpx.Client, worker_id: str = "w1", batch: int | None = None) -> httpx.Response:
    if batch is None:
        return worker.get(f"/job-take/{worker_id}?gpu=cpu&job_in_progress=0")
    return worker.get(f"/job-take-batch/{worker_id}?gpu=cpu&batch_size={batch}&job_in_progress=0")


def done(worker: httpx.Client, job_id: str, body: object, worker_id: str = "w1", stream: bool = False) -> httpx.Response:
    # Exactly what the SDK sends: raw JSON under a form content type.
    return worker.post(
        f"/job-done/{worker_id}/{job_id}?gpu=cpu&isStream={'true' if stream else 'false'}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"},
    )


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
def test_run_take_done_status_round_trip(make_server, fast_path):
    h = make_server(fast_path=fast_path)
    w = h.add_worker()
    job_id = h.submit({"input": {"x": 1}, "webhook": "http://127.0.0.1:9/x", "s3Config": {"b": 1}})
    queued = h.job_status(job_id)
    # Runpod's body, plus gpuserve's `waiting` (the SDK ignores it): the worker has not taken a job yet.
    assert queued.pop("waiting")["code"] == "cold_start"
    assert queued == {"id": job_id, "status": "IN_QUEUE"}
    r = take(w)
    assert r.status_code == 200
    job = r.json()
    assert job == {"id": job_id, "input": {"x": 1}, "webhook": "http://127.0.0.1:9/x", "s3Config": {"b": 1}}
    running = h.job_status(job_id)
    assert running["status"] == "IN_PROGRESS" and running["workerId"] == "w1" and "delayTime" in running
    assert done(w, job_id, {"output": {"y": 2}}).status_code == 200
    body = h.job_status(job_id)
    assert body["status"] == "COMPLETED" and body["output"] == {"y": 2} and body["workerId"] == "w1"
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    # POST /status works too (the runpod local server only has POST).
    assert h.client.post(f"/v2/ep/status/{job_id}").json()["status"] == "COMPLETED"
    # Idempotent job-done: a retry of the same post changes nothing.
    assert done(w, job_id, {"output": {"y": 3}}).status_code == 200
    assert h.job_status(job_id)["output"] == {"y": 2}
    # Query parameters and errors behave the same on both paths.
    r = h.client.post("/v2/ep/runsync?wait=abc", json={"input": {}})
    assert r.status_code == 422 and "wait" in r.json()["error"] and "abc" in r.json()["error"]
    r = w.get("/job-take-batch/w1?batch_size=0")
    assert r.status_code == 422 and "batch_size" in r.json()["error"]
    assert h.client.get("/v2/missing/status/x").status_code == 404


def test_long_poll_is_woken_by_a_submit_and_204_when_empty(make_server):
    h = make_server()
    w = h.add_worker()
    assert take(w).status_code == 204  # held for poll_timeout_s, then nothing
    assert take(w, batch=3).status_code == 204
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(take, w)
        wait_until(lambda: h.rt.takers.parked("ep"), what="the take to park")
        job_id = h.submit({"input": {"n": 1}})
        r = pending.result(timeout=30)
    assert r.status_code == 200 and r.json()["id"] == job_id


def test_batch_take_returns_a_list_in_fifo_order(make_server):
    h = make_server()
    w = h.add_worker(capacity=4)
    ids = [h.submit({"input": {"i": i}}) for i in range(5)]
    r = take(w, batch=3)
    assert r.status_code == 200 and [j["id"] for j in r.json()] == ids[:3]
    r = take(w, batch=3)
    assert [j["id"] for j in r.json()] == ids[3:]
    view = h.registry.get("w1")
    assert view is not None and view.state.value == "RUNNING" and len(view.in_flight) == 5


def test_runsync_waits_for_the_result_and_always_returns_the_id(make_server):
    h = make_server()
    w = h.add_worker()

    def worker_loop() -> None:
        r = take(w)
        job = r.json()
        done(w, job["id"], {"output": {"echo": job["input"]}})

    t = threading.Thread(target=worker_loop)
    t.start()
    r = h.client.post("/v2/ep/runsync", json={"input": {"q": "hi"}})
    t.join(30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "COMPLETED" and body["output"] == {"echo": {"q": "hi"}}
    assert body["id"] and "executionTime" in body
    # Nobody takes this one: after ?wait the id and status come back, and the job stays queued.
    r = h.client.post("/v2/ep/runsync?wait=1000", json={"input": {}})
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE" and r.json()["id"]
    assert h.job_status(r.json()["id"])["status"] == "IN_QUEUE"
    for bad in (999, 300_001):
        r = h.client.post(f"/v2/ep/runsync?wait={bad}", json={"input": {}})
        assert r.status_code == 422 and "wait" in r.json()["error"] and str(bad) in r.json()["error"]


def test_failed_errors_progress_and_late_progress(make_server):
    h = make_server()
    w = h.add_worker(capacity=3)
    a, b, c = (h.submit({"input": {"i": i}}) for i in range(3))
    take(w, batch=3)
    done(w, a, {"error": json.dumps({"error_type": "ValueError", "error_message": "nope"})})
    fa = h.job_status(a)
    assert fa["status"] == "FAILED" and json.loads(fa["error"])["error_message"] == "nope"
    done(w, b, {"output": {"partial": 1}, "error": {"code": 1}})
    assert h.job_status(b)["status"] == "FAILED" and json.loads(h.job_status(b)["error"]) == {"code": 1}
    done(w, c, {"status": "IN_PROGRESS", "output": {"pct": 50}})
    assert h.job_status(c) | {} == h.job_status(c) and h.job_status(c)["status"] == "IN_PROGRESS"
    assert h.job_status(c)["output"] == {"pct": 50}
    done(w, c, {"output": "final"})
    done(w, c, {"status": "IN_PROGRESS", "output": {"pct": 99}})  # a late progress post
    assert h.job_status(c)["status"] == "COMPLETED" and h.job_status(c)["output"] == "final"
    # An unreadable result fails the job with a reason instead of losing it silently.
    d = h.submit({"input": {}})
    take(w)
    r = w.post(f"/job-done/w1/{d}?isStream=false", content=b"{not json")
    assert r.status_code == 400
    assert h.job_status(d)["status"] == "FAILED" and "could not be read" in h.job_status(d)["error"]


def test_stream_hands_each_chunk_out_once_and_keeps_the_key(make_server):
    h = make_server()
    w = h.add_worker()
    job_id = h.submit({"input": {}})
    first = h.client.get(f"/v2/ep/stream/{job_id}").json()
    assert first == {"id": job_id, "status": "IN_QUEUE", "stream": [], "attempt": 0}  # not run yet
    take(w)
    for i in range(3):
        w.post(f"/job-stream/w1/{job_id}?isStream=false", content=json.dumps({"output": {"i": i}}))
    got = h.client.get(f"/v2/ep/stream/{job_id}").json()
    assert got["status"] == "IN_PROGRESS" and got["stream"] == [{"output": {"i": i}} for i in range(3)]
    assert got["attempt"] == 1
    assert h.client.post(f"/v2/ep/stream/{job_id}").json()["stream"] == []
    w.post(f"/job-stream/w1/{job_id}?isStream=false", content=json.dumps({"output": {"i": 3}}))
    done(w, job_id, {"output": [{"i": i} for i in range(4)]}, stream=True)
    last = h.client.get(f"/v2/ep/stream/{job_id}").json()
    assert last["status"] == "COMPLETED" and last["stream"] == [{"output": {"i": 3}}]
    assert h.client.get(f"/v2/ep/stream/{job_id}").json() == {"id": job_id, "status": "COMPLETED", "stream": [], "attempt": 1}


def test_cancel_queued_and_running_with_stop_signal(make_server):
    h = make_server()
    w = h.add_worker()
    running, queued = h.submit({"input": {"i": 0}}), h.submit({"input": {"i": 1}})
    assert take(w).json()["id"] == running
    r = h.client.post(f"/v2/ep/cancel/{queued}", headers={"Content-Type": "application/json"})
    assert r.json() == {"id": queued, "status": "CANCELLED"}
    assert take(w).status_code == 204  # a cancelled job is never handed out
    with ThreadPoolExecutor(1) as pool:
        stop = pool.submit(w.get, "/job-stop/w1?gpu=cpu")
        wait_until(lambda: h.rt.stops.waiting("w1"), what="the stop poll to park")
        assert h.client.post(f"/v2/ep/cancel/{running}").json()["status"] == "CANCELLED"
        r = stop.result(timeout=30)
    assert r.status_code == 200 and r.json() == {"jobsToStop": [running]}
    assert w.get("/job-stop/w1?gpu=cpu").status_code == 204  # each signal goes out once
    # A late result for the cancelled job is ignored.
    done(w, running, {"output": "late"})
    assert h.job_status(running)["status"] == "CANCELLED"
    assert h.registry.get("w1").in_flight == set()


def test_retry_purge_and_health(make_server):
    h = make_server()
    w = h.add_worker()
    failed = h.submit({"input": {}})
    take(w)
    done(w, failed, {"error": "boom"})
    ok = h.submit({"input": {}})
    take(w)
    done(w, ok, {"output": 1})
    r = h.client.post(f"/v2/ep/retry/{ok}")
    assert r.status_code == 409 and "COMPLETED" in r.json()["error"]
    r = h.client.post(f"/v2/ep/retry/{failed}")
    assert r.json() == {"id": failed, "status": "IN_QUEUE"}
    assert h.job_status(failed)["status"] == "IN_QUEUE"
    more = [h.submit({"input": {"i": i}}) for i in range(2)]
    health = h.client.get("/v2/ep/health").json()
    assert health["jobs"] == {"completed": 1, "failed": 0, "inProgress": 0, "inQueue": 3, "retried": 1, "cancelled": 0}
    assert health["workers"]["idle"] == 1 and health["workers"]["running"] == 0
    assert h.client.post("/v2/ep/purge-queue").json() == {"removed": 3, "status": "completed"}
    assert all(h.job_status(j)["status"] == "NOT_FOUND" for j in [failed, *more])
    assert h.client.get("/v2/ep/health").json()["jobs"]["inQueue"] == 0


def test_bad_requests_are_refused_with_the_field_and_nothing_is_lost(make_server):
    h = make_server()
    before = h.store.count()
    c = h.client
    r = c.post("/v2/ep/run", content=b"{nope")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"inpt": {}})
    assert r.status_code == 422 and "input" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"input": "text"})
    assert r.status_code == 422 and "input must be a JSON object" in r.json()["error"] and "'text'" in r.json()["error"]
    r = c.post("/v2/ep/run", json=[1])
    assert r.status_code == 400
    r = c.post("/v2/ep/run", json={"input": {}, "policy": {"executionTimeout": 10}})
    assert r.status_code == 422 and "policy.executionTimeout" in r.json()["error"] and "10" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"input": {}, "policy": {"ttl": "soon"}})
    assert r.status_code == 422 and "policy.ttl" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"input": {}, "policy": {"lowPriority": "yes"}})
    assert r.status_code == 422 and "policy.lowPriority" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"input": {}, "policy": {"speed": 1}})
    assert r.status_code == 422 and "policy.speed" in r.json()["error"]
    r = c.post("/v2/ep/run", json={"input": {}, "webhook": "ftp://x"})
    assert r.status_code == 422 and "webhook" in r.json()["error"]
    big = b'{"input": {"blob": "' + b"x" * (10 * MIB) + b'"}}'
    r = c.post("/v2/ep/run", content=big)
    assert r.status_code == 413 and "10 MB" in r.json()["error"] and "/run" in r.json()["error"]
    bigger = b'{"input": {"blob": "' + b"x" * (20 * MIB) + b'"}}'
    r = c.post("/v2/ep/runsync", content=bigger)
    assert r.status_code == 413 and "20 MB" in r.json()["error"]
    # Under 20 MB but over 10 MB is fine for /runsync's limit (checked, then it waits briefly).
    r = c.post("/v2/ep/runsync?wait=1000", content=big)
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
    r = c.post("/v2/nope/run", json={"input": {}})
    assert r.status_code == 404 and "'nope'" in r.json()["error"]
    assert c.get("/v2/ep/status/does-not-exist").status_code == 404
    assert h.store.count() == before + 1  # only the valid /runsync job was stored
    # Valid jobs submitted between bad ones are all kept.
    ids = []
    for i in range(5):
        c.post("/v2/ep/run", content=b"garbage")
        ids.append(h.submit({"input": {"i": i}}))
    assert h.store.count() == before + 6 and all(h.job_status(j)["status"] == "IN_QUEUE" for j in ids)


def test_client_keys_and_worker_tokens_do_not_mix(make_server):
    h = make_server()
    w = h.add_worker()
    anon = httpx.Client(base_url=h.url)
    assert anon.post("/v2/ep/run", json={"input": {}}).status_code == 401
    bare = httpx.Client(base_url=h.url, headers={"Authorization": KEY})
    assert bare.post("/v2/ep/run", json={"input": {}}).status_code == 200
    wrong = httpx.Client(base_url=h.url, headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.get("/v2/ep/health").status_code == 401
    # A worker token cannot submit ...
    token = w.headers["Authorization"]
    as_worker = httpx.Client(base_url=h.url, headers={"Authorization": token})
    assert as_worker.post("/v2/ep/run", json={"input": {}}).status_code == 401
    # ... and a client key cannot take jobs, even with a real worker id.
    r = h.client.get("/v2/ep/job-take/w1?gpu=cpu&job_in_progress=0")
    assert r.status_code == 401
    r = httpx.get(f"{h.url}/v2/ep/job-take/w1?job_in_progress=0", headers={"Authorization": "Bearer " + KEY})
    assert r.status_code == 401
    assert h.client.post("/v2/ep/job-done/w1/x?isStream=false", content=b"{}").status_code == 401
    # The runpod sync client turns 401 into RuntimeError.
    import runpod

    runpod.endpoint_url_base = f"{h.url}/v2"
    with pytest.raises(RuntimeError, match="401"):
        runpod.Endpoint("ep", api_key="sk-wrong").health()
    for c in (anon, bare, wrong, as_worker):
        c.close()


def test_keys_are_stored_hashed(make_server):
    h = make_server()
    ep = h.rt.endpoints["ep"]
    assert KEY not in repr(ep) and all(len(k) == 64 for k in ep.key_hashes)


class _Receiver(BaseHTTPRequestHandler):
    codes: ClassVar[list[int]] = []
    got: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).got.append(json.loads(self.rfile.read(length)))
        code = type(self).codes.pop(0) if type(self).codes else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_posted_on_terminal_state_and_retried_on_non_200(make_server):
    h = make_server()
    w = h.add_worker()
    _Receiver.codes = [500, 503]  # two failures, then 200 on the third attempt
    _Receiver.got = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        job_id = h.submit({"input": {"a": 1}, "webhook": hook})
        assert take(w).json()["webhook"] == hook
        done(w, job_id, {"output": {"b": 2}})
        wait_until(lambda: len(_Receiver.got) == 3, what="three webhook attempts")
        assert all(g["id"] == job_id and g["status"] == "COMPLETED" and g["output"] == {"b": 2} for g in _Receiver.got)
        codes = wait_until(
            lambda: len(c := [code for jid, code in h.rt.webhooks.log if jid == job_id]) == 3 and c,
            what="the server to log three attempts",
        )
        assert codes == [500, 503, 200]
        # Failures are delivered too (unlike the runpod local server).
        failing = h.submit({"input": {}, "webhook": hook})
        take(w)
        done(w, failing, {"error": "bad"})
        wait_until(lambda: len(_Receiver.got) == 4, what="the FAILED webhook")
        assert _Receiver.got[-1]["status"] == "FAILED" and _Receiver.got[-1]["error"] == "bad"
    finally:
        receiver.shutdown()


def test_execution_timeout_and_ttl(make_server):
    # Maintenance passes run at chosen future times; a long heartbeat keeps the worker "alive" meanwhile.
    h = make_server(settings=replace(FAST, heartbeat_interval_s=3600))
    w = h.add_worker(capacity=2)
    timed = h.submit({"input": {}, "policy": {"executionTimeout": 5000}})
    take(w)
    # Run the deadline sweep at a chosen time instead of waiting 5 s of wall time.
    h.maintain(h.rt.clock.now_s() + 5.5)
    body = h.job_status(timed)
    assert body["status"] == "TIMED_OUT" and "execution timeout" in body["error"]
    assert w.get("/job-stop/w1").json() == {"jobsToStop": [timed]}
    done(w, timed, {"output": "too late"})
    assert h.job_status(timed)["status"] == "TIMED_OUT"
    expiring = h.submit({"input": {}, "policy": {"ttl": 10_000}})
    assert take(w).json()["id"] == expiring
    h.maintain(h.rt.clock.now_s() + 11)
    assert h.job_status(expiring)["status"] == "NOT_FOUND"  # deleted even mid-run
    assert w.get("/job-stop/w1").json() == {"jobsToStop": [expiring]}
    # Results expire: /run keeps them 30 min.
    kept = h.submit({"input": {}})
    take(w)
    done(w, kept, {"output": 1})
    h.maintain(h.rt.clock.now_s() + 29 * 60)
    assert h.job_status(kept)["status"] == "COMPLETED"
    h.maintain(h.rt.clock.now_s() + 31 * 60)
    assert h.job_status(kept)["status"] == "NOT_FOUND"


def test_missed_heartbeats_requeue_then_fail_past_the_retry_limit(make_server):
    h = make_server(settings=replace(FAST, heartbeat_interval_s=0.3))
    job_id = h.submit({"input": {}})
    for n in range(FAST.max_retries + 1):
        wid = f"lost{n}"
        w = h.add_worker(wid)
        assert take(w, wid).json()["id"] == job_id
        w.get(f"/ping/{wid}?job_id={job_id}&runpod_version=1.12.0")
        # This worker now falls silent: after 3 missed intervals it is UNHEALTHY.
        wait_until(lambda wid=wid: h.registry.get(wid).state.value == "UNHEALTHY", what=f"{wid} unhealthy")
        w.close()
    body = h.wait_status(job_id, {"FAILED"})
    assert "missed 3 heartbeats" in body["error"] and f"{FAST.max_retries} retries" in body["error"]


def test_unhealthy_report_requeues_at_once(make_server):
    h = make_server()
    w = h.add_worker()
    job_id = h.submit({"input": {}})
    take(w)
    r = w.get("/ping/w1?status=unhealthy&check=memory&reason=only%201%20GB&runpod_version=1.12.0")
    assert r.status_code == 200
    assert h.registry.get("w1").state.value == "UNHEALTHY"
    body = h.job_status(job_id)
    assert body["status"] == "IN_QUEUE" and body["retries"] == 1
    assert take(w).status_code == 204  # an unhealthy worker gets nothing


def test_stop_pod_drains_the_worker(make_server):
    h = make_server()
    w = h.add_worker()
    a, b = h.submit({"input": {}}), h.submit({"input": {}})
    take(w)
    done(w, a, {"output": 1, "stopPod": True})
    assert h.registry.get("w1").draining
    assert take(w).status_code == 204
    w2 = h.add_worker("w2")
    assert take(w2, "w2").json()["id"] == b


def test_operator_routes_and_openapi(make_server):
    h = make_server()
    w = h.add_worker()
    h.submit({"input": {}})
    h.submit({"input": {}})
    take(w)
    body = h.client.get("/api/endpoints").json()
    (ep,) = body["endpoints"]
    assert ep["id"] == "ep" and ep["queue"]["inQueue"] == 1 and ep["queue"]["inProgress"] == 1
    assert ep["workers"] == [
        {"id": "w1", "state": "RUNNING", "inFlight": 1, "capacity": 1, "ageS": ep["workers"][0]["ageS"], "idleForS": 0.0, "costUsd": 0.0, "failure": None}
    ]
    assert httpx.get(f"{h.url}/api/endpoints").status_code == 401
    assert [e["id"] for e in h.admin.get("/api/endpoints").json()["endpoints"]] == ["ep"]  # an admin key sees every endpoint
    r = h.admin.get("/api/workers/w1/logs")
    assert r.status_code == 404 and "no backend" in r.json()["error"]
    spec = httpx.get(f"{h.url}/openapi.json").json()
    for path in ("/v2/{endpoint_id}/run", "/v2/{endpoint_id}/job-take/{worker_id}", "/v2/{endpoint_id}/health"):
        assert path in spec["paths"]
    assert httpx.get(f"{h.url}/docs").status_code == 200


def test_many_concurrent_clients_lose_nothing(make_server):
    h = make_server()
    w = h.add_worker(capacity=64)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: h.submit({"input": {"i": i}}), range(200)))
    assert len(set(ids)) == 200 and h.store.count() == 200
    seen: list[str] = []
    while len(seen) < 200:
        r = take(w, batch=64)
        for job in r.json():
            seen.append(job["id"])
            done(w, job["id"], {"output": job["input"]["i"]})
    assert sorted(seen) == sorted(ids)
    assert h.client.get("/v2/ep/health").json()["jobs"]["completed"] == 200


def test_runsync_retention_is_one_minute(make_server):
    h = make_server(settings=replace(FAST, heartbeat_interval_s=3600))
    w = h.add_worker()
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(h.client.post, "/v2/ep/runsync", json={"input": {}})
        job = wait_until(lambda: (r := take(w)).status_code == 200 and r.json(), what="the runsync job")
        done(w, job["id"], {"output": 1})
        assert fut.result(30).json()["status"] == "COMPLETED"
    now = time.time()
    h.maintain(now + 50)
    assert h.job_status(job["id"])["status"] == "COMPLETED"
    h.maintain(now + 61)
    assert h.job_status(job["id"])["status"] == "NOT_FOUND"


def test_deployment_helper_builds_runpod_sdk_deployments():
    dep = deployment("x", concurrency=2)
    assert dep.sdk == "runpod" and dep.spec.concurrency_per_worker == 2
