"""The server with real worker processes: the unmodified runpod SDK as client and worker, the process backend,
SIGKILL mid-job, server restart, and the live controller scaling 0 -> N -> min."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from tests.support.live import KEY, deployment, wait_until

runpod = pytest.importorskip("runpod")


@pytest.fixture
def rp_endpoint(make_server):
    """A server with one runpod-SDK worker process per endpoint, and runpod's client pointed at it."""

    def start(handler: str, **kw):
        dep = deployment("ep", handler, **kw)
        h = make_server([dep])
        h.spawn_worker(dep, "w1")
        runpod.endpoint_url_base = f"{h.url}/v2"
        return h, runpod.Endpoint("ep", api_key=KEY)

    return start


def test_runpod_sdk_sync_and_async_round_trip(rp_endpoint):
    h, ep = rp_endpoint("echo_runpod.py")
    assert ep.run_sync({"x": 1}, timeout=60) == {"echo": {"x": 1}}
    job = ep.run({"y": 2})
    assert job.output(timeout=60) == {"echo": {"y": 2}}
    body = h.job_status(job.job_id)
    assert body["status"] == "COMPLETED" and body["workerId"] == "w1"
    assert {"delayTime", "executionTime"} <= body.keys()
    assert h.registry.get("w1").state.value == "IDLE"
    health = ep.health()
    assert health["jobs"]["completed"] == 2 and health["workers"]["idle"] == 1


def test_runpod_sdk_errors_keep_the_worker_serving(rp_endpoint):
    h, ep = rp_endpoint("misc_runpod.py")
    job = ep.run({"mode": "raise", "why": "bad input"})
    body = h.wait_status(job.job_id, {"FAILED"})
    assert json.loads(body["error"])["error_message"] == "handler refused: bad input"
    job = ep.run({"mode": "dict_error"})
    assert json.loads(h.wait_status(job.job_id, {"FAILED"})["error"]) == {"code": 1}
    assert ep.run_sync({"mode": "echo", "v": 1}, timeout=60) == {"echo": {"mode": "echo", "v": 1}}


def test_runpod_sdk_progress_then_completed(rp_endpoint):
    h, ep = rp_endpoint("misc_runpod.py")
    job = ep.run({"mode": "progress", "hold_s": 3})
    body = h.wait_status(job.job_id, {"IN_PROGRESS"})
    wait_until(lambda: h.job_status(job.job_id).get("output") == {"pct": 50} or h.job_status(job.job_id)["status"] == "COMPLETED")
    body = h.wait_status(job.job_id, {"COMPLETED"})
    assert body["output"] == {"done": True}


def test_runpod_sdk_stream_each_chunk_once_in_order(rp_endpoint):
    h, ep = rp_endpoint("stream_runpod.py")
    job = ep.run({"n": 5})
    assert list(job.stream()) == [{"i": i} for i in range(5)]
    assert h.job_status(job.job_id)["output"] == [{"i": i} for i in range(5)]


def test_runpod_sdk_cancel_running_job_reaches_the_handler(rp_endpoint, tmp_path):
    h, ep = rp_endpoint("slow_async_runpod.py")
    marker = tmp_path / "cancelled.txt"
    job = ep.run({"sleep_s": 60, "marker": str(marker)})
    h.wait_status(job.job_id, {"IN_PROGRESS"})
    assert job.cancel()["status"] == "CANCELLED"
    wait_until(marker.exists, what="the handler to see CancelledError")
    assert marker.read_text() == f"cancelled {job.job_id} on w1"
    assert h.job_status(job.job_id)["status"] == "CANCELLED"
    # The worker is free again and serves the next job.
    assert ep.run_sync({"sleep_s": 0}, timeout=60)["slept"] == 0


def test_runpod_sdk_execution_timeout_stops_the_job(rp_endpoint, tmp_path):
    h, ep = rp_endpoint("slow_async_runpod.py")
    marker = tmp_path / "stopped.txt"
    job = ep.run({"input": {"sleep_s": 20, "marker": str(marker)}, "policy": {"executionTimeout": 5000}})
    body = h.wait_status(job.job_id, {"TIMED_OUT"})
    assert "execution timeout of 5 s" in body["error"]
    wait_until(marker.exists, what="the stop signal to cancel the handler")
    assert h.job_status(job.job_id)["status"] == "TIMED_OUT"


def test_process_backend_sigkill_mid_job_requeues_and_completes(make_server):
    dep = deployment("ep", "slow_async_runpod.py", max_workers=1, idle_timeout_s=60)
    h = make_server([dep], backend="process")
    job_id = h.submit({"input": {"sleep_s": 2}})
    first = h.wait_status(job_id, {"IN_PROGRESS"})["workerId"]
    pid = h.rt.backend.process_id(first)
    os.killpg(pid, signal.SIGKILL)  # the whole worker (its heartbeat process too), as a crashed container
    body = h.wait_status(job_id, {"COMPLETED"}, timeout_s=90)
    assert body["workerId"] != first and body["retries"] == 1
    assert body["output"]["worker"] == body["workerId"]


def test_process_backend_refresh_worker_replaces_the_process(make_server):
    dep = deployment("ep", "misc_runpod.py", max_workers=1, idle_timeout_s=60)
    h = make_server([dep], backend="process")
    a = h.submit({"input": {"mode": "refresh"}})
    first = h.wait_status(a, {"COMPLETED"})["workerId"]
    b = h.submit({"input": {"mode": "echo"}})
    second = h.wait_status(b, {"COMPLETED"}, timeout_s=90)["workerId"]
    assert second != first


def test_process_backend_gpuserve_sdk_worker_and_logs(make_server):
    dep = replace(deployment("ep", "echo_gpuserve.py"), sdk="gpuserve")
    h = make_server([dep], backend="process")
    r = h.client.post("/v2/ep/runsync", json={"input": {"hello": "world"}})
    body = r.json()
    assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"hello": "world"}}
    logs = h.admin.get(f"/api/workers/{body['workerId']}/logs").json()
    assert logs["workerId"] == body["workerId"] and isinstance(logs["logs"], str)
    assert h.admin.get("/api/workers/nobody/logs").status_code == 404


def test_restart_recovers_queued_and_in_progress_jobs(make_server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    first = make_server([deployment("ep", "echo_runpod.py")], data_dir=data)
    queued = [first.submit({"input": {"i": i}}) for i in range(3)]
    w = first.add_worker()
    running = w.get("/job-take/w1?job_in_progress=0").json()["id"]
    assert running == queued[0]
    first.stop()
    second = make_server([deployment("ep", "echo_runpod.py", idle_timeout_s=60)], data_dir=data, backend="process")
    for i, job_id in enumerate(queued):
        body = second.wait_status(job_id, {"COMPLETED"}, timeout_s=90)
        assert body["output"] == {"echo": {"i": i}}
    assert second.store.count() == 3


@pytest.mark.parametrize("min_workers", [0, 1])
def test_controller_scales_zero_to_n_and_back_to_min(make_server, min_workers):
    dep = deployment(
        "ep", "slow_async_runpod.py", min_workers=min_workers, max_workers=3, idle_timeout_s=1.0, scaler_value=1
    )
    h = make_server([dep], backend="process")
    wait_until(lambda: len(h.rt.worker_views("ep")) == min_workers, what=f"{min_workers} active worker(s)")
    ids = [h.submit({"input": {"sleep_s": 1}}) for _ in range(6)]
    # Six queued jobs with one job per worker: the request-count policy asks for 6, max allows 3.
    wait_until(lambda: len(h.rt.worker_views("ep")) == 3, what="three workers")
    steps = [h.rt.controller.last_step("ep")]
    assert steps[0] is not None
    workers_used = {h.wait_status(j, {"COMPLETED"}, timeout_s=90)["workerId"] for j in ids}
    assert len(workers_used) >= 2  # the burst was spread over several workers
    # Idle for longer than idle_timeout_s: back to min_workers (never below).
    wait_until(lambda: len(h.rt.worker_views("ep")) == min_workers, timeout_s=60, what="scale back to min")
    assert h.client.get("/v2/ep/health").json()["jobs"]["completed"] == 6
