"""gpuserve's job-done extension (gpuserve_take hands over queued jobs) and one-write responses on the wire."""

from __future__ import annotations

import socket

import pytest

from tests.support.live import deployment, wait_until

HEADER = "x-gpuserve-take-on-done"


@pytest.mark.parametrize("fast_path", [True, False])
def test_job_done_hands_over_queued_jobs_only_when_asked(make_server, fast_path):
    h = make_server(fast_path=fast_path)
    w = h.add_worker()
    ids = [h.submit({"input": {"i": i}}) for i in range(4)]
    r = w.get("/job-take/w1")
    assert r.status_code == 200 and r.headers[HEADER] == "1"  # the announcement gpuserve's SDK looks for
    assert r.json()["id"] == ids[0]

    # Without the flag the answer is Runpod's, and nothing else is handed out.
    plain = w.post(f"/job-done/w1/{ids[0]}?isStream=false", json={"output": 0})
    assert plain.json() == {"id": ids[0], "accepted": "COMPLETED"}
    assert h.job_status(ids[1])["status"] == "IN_QUEUE"

    r = w.get("/job-take/w1")
    assert r.json()["id"] == ids[1]
    # With it: the result is recorded and the next queued jobs come back in FIFO order, taken by this worker.
    r = w.post(f"/job-done/w1/{ids[1]}?isStream=false&gpuserve_take=5", json={"output": 1})
    body = r.json()
    assert body["id"] == ids[1] and body["accepted"] == "COMPLETED"
    assert [j["id"] for j in body["next"]] == ids[2:]
    assert body["next"][0] == {"id": ids[2], "input": {"i": 2}}
    assert h.job_status(ids[1])["output"] == 1
    for job_id in ids[2:]:
        st = h.job_status(job_id)
        assert st["status"] == "IN_PROGRESS" and st["workerId"] == "w1"
    assert h.registry.get("w1").in_flight == set(ids[2:])  # type: ignore[union-attr]

    # A progress update never takes jobs; an empty queue hands over an empty list.
    extra = h.submit({"input": {"i": 9}})
    r = w.post(f"/job-done/w1/{ids[2]}?gpuserve_take=1", json={"status": "IN_PROGRESS", "output": "half"})
    assert "next" not in r.json() and h.job_status(extra)["status"] == "IN_QUEUE"
    w.post(f"/job-done/w1/{ids[2]}?gpuserve_take=1", json={"output": 2})
    w.post(f"/job-done/w1/{ids[3]}?gpuserve_take=1", json={"output": 3})  # took `extra`
    r = w.post(f"/job-done/w1/{extra}?gpuserve_take=1", json={"output": 9})
    assert r.json() == {"id": extra, "accepted": "COMPLETED", "next": []}
    assert all(h.job_status(j)["status"] == "COMPLETED" for j in [*ids, extra])

    r = w.post(f"/job-done/w1/{extra}?gpuserve_take=x", json={"output": 9})
    assert r.status_code == 422 and "gpuserve_take" in r.json()["error"]


def test_a_draining_worker_is_handed_nothing(make_server):
    h = make_server()
    w = h.add_worker()
    first = h.submit({"input": {}})
    second = h.submit({"input": {}})
    assert w.get("/job-take/w1").json()["id"] == first
    h.registry.set_draining("w1", True)
    r = w.post(f"/job-done/w1/{first}?gpuserve_take=1", json={"output": 1})
    assert r.json()["next"] == [] and h.job_status(second)["status"] == "IN_QUEUE"


@pytest.mark.parametrize("client", ["lean", "httpx"])
def test_gpuserve_worker_takes_its_next_jobs_with_its_results(make_server, monkeypatch, client):
    if client == "httpx":  # the worker's fallback client (https, proxies) speaks the extension too
        monkeypatch.setenv("GPUSERVE_WORKER_HTTP", "httpx")
    h = make_server([deployment(handler="echo_gpuserve.py", max_workers=1)])
    handed: list[int] = []
    real_job_done = h.rt.job_done

    async def counting_job_done(worker, job_id, body, take=0):  # the real method, with a record of what it handed out
        outcome, jobs = await real_job_done(worker, job_id, body, take)
        handed.append(len(jobs))
        return outcome, jobs

    monkeypatch.setattr(h.rt, "job_done", counting_job_done)
    ids = [h.submit({"input": {"i": i}}) for i in range(6)]  # queued before the worker exists
    dep = h.rt.endpoints["ep"].deployment
    h.spawn_worker(dep, "w1")
    for i, job_id in enumerate(ids):
        assert h.wait_status(job_id, {"COMPLETED"})["output"] == {"echo": {"i": i}}
    # The first job came by job-take; each later one came back with the result before it.
    wait_until(lambda: len(handed) >= len(ids), what="a job-done per job")
    assert handed[: len(ids) - 1] == [1] * (len(ids) - 1)
    assert handed[len(ids) - 1] == 0


def _raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_pipelined_requests_and_connection_close_are_answered_whole_and_in_order(make_server):
    h = make_server()
    auth = b"Authorization: Bearer sk-test-key\r\n"
    req = b"GET /v2/ep/health HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    last = b"GET /v2/ep/status/nope HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n"
    raw = _raw_exchange(h.url, req + req + last)  # the server closes after the third answer
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"200", b"404"]
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])
        assert len(body) == length
    assert b"nope" in answers[2]


def test_large_answers_arrive_whole(make_server):
    h = make_server()
    w = h.add_worker()
    job_id = h.submit({"input": {}})
    assert w.get("/job-take/w1").json()["id"] == job_id
    big = "x" * (3 * 1024 * 1024)  # well past the point where gathered writes go out at once
    w.post(f"/job-done/w1/{job_id}", json={"output": big})
    for _ in range(3):  # on one kept-alive connection, several times
        assert h.job_status(job_id)["output"] == big
