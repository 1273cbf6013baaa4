"""The local dev server's job states over real HTTP: every move is one the core state machine allows, bodies as the server's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpuserve.worker.devserver import DevServer


class Handler:
    """Records every input it runs; `slow` jobs hold until released, `fail` jobs raise."""

    def __init__(self) -> None:
        self.ran: list[dict[str, Any]] = []
        self.release = threading.Event()

    def __call__(self, job: dict[str, Any]) -> Any:
        self.ran.append(job["input"])
        if job["input"].get("mode") == "slow":
            self.release.wait(30)
        if job["input"].get("mode") == "fail":
            raise RuntimeError("dev failure")
        return {"echo": job["input"]}


@pytest.fixture
def dev() -> Iterator[tuple[httpx.Client, Handler]]:
    handler = Handler()
    server = DevServer({"handler": handler}, "127.0.0.1", 0)
    server.start()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, handler
    handler.release.set()
    server.httpd.shutdown()
    server.close()
    thread.join(10)
    # close() only stops the job loop (the dev server is a process that exits); in a test process,
    # end its parked tasks and close it, or they are collected later, in another test, as errors.
    server._loop_thread.join(10)
    tasks = asyncio.all_tasks(server.loop)
    for task in tasks:
        task.cancel()
    server.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    server.loop.close()


def _wait(client: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = client.get(f"/status/{job_id}").json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{job_id} never reached {status}: {body}"
        time.sleep(0.01)


def test_queued_cancelled_and_purged_jobs_never_run_and_show_no_times(dev):
    c, handler = dev
    slow = c.post("/run", json={"input": {"mode": "slow"}}).json()["id"]
    running = _wait(c, slow, "IN_PROGRESS")
    # Started: the delay and the worker show; the execution time only once it ends.
    assert set(running) == {"id", "status", "delayTime", "workerId"} and running["workerId"] == "local"
    queued = c.post("/run", json={"input": {"n": 1}}).json()["id"]
    assert c.get(f"/status/{queued}").json() == {"id": queued, "status": "IN_QUEUE"}
    assert c.post(f"/cancel/{queued}").json() == {"id": queued, "status": "CANCELLED"}
    assert c.get(f"/status/{queued}").json() == {"id": queued, "status": "CANCELLED"}
    purged = c.post("/run", json={"input": {"n": 2}}).json()["id"]
    assert c.post("/purge-queue").json() == {"removed": 1, "status": "completed"}
    assert c.get(f"/status/{purged}").json() == {"id": purged, "status": "CANCELLED"}
    handler.release.set()
    done = _wait(c, slow, "COMPLETED")
    assert done["output"] == {"echo": {"mode": "slow"}} and done["executionTime"] >= 0 and done["delayTime"] >= 0
    # A cancelled or purged job stays so: the dispatcher skips it, and nothing moves it back.
    after = c.post("/runsync", json={"input": {"n": 3}}).json()
    assert after["status"] == "COMPLETED"
    assert handler.ran == [{"mode": "slow"}, {"n": 3}]
    assert c.post(f"/cancel/{queued}").json() == {"id": queued, "status": "CANCELLED"}
    assert c.post(f"/retry/{queued}").status_code == 400


def test_retry_moves_a_failed_job_back_to_the_queue_only(dev):
    c, handler = dev
    failed = c.post("/runsync", json={"input": {"mode": "fail"}}).json()
    assert failed["status"] == "FAILED" and "dev failure" in failed["error"]
    assert set(failed) == {"id", "status", "delayTime", "executionTime", "workerId", "error"}
    assert c.post(f"/retry/{failed['id']}").json() == {"id": failed["id"], "status": "IN_QUEUE"}
    again = _wait(c, failed["id"], "FAILED")
    assert handler.ran == [{"mode": "fail"}, {"mode": "fail"}] and "dev failure" in again["error"]
    ok = c.post("/runsync", json={"input": {"n": 1}}).json()
    r = c.post(f"/retry/{ok['id']}")
    assert r.status_code == 400 and r.json()["error"] == f"job {ok['id']} is COMPLETED; only FAILED or TIMED_OUT jobs can be retried"
    assert c.get("/health").json()["jobs"] == {"completed": 1, "failed": 2, "retried": 1, "inProgress": 0, "inQueue": 0}
