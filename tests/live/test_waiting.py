"""Explainable waiting: the pure reasons (fake views), and /status, /health over real HTTP with real workers."""

from __future__ import annotations

import pytest

from gpuserve.core.types import WorkerState, WorkerView
from gpuserve.live.waiting import explain_waiting
from tests.support.live import Live, code_deployment, endpoint_spec, wait_until


def view(state: WorkerState, created_s: float = 0.0, in_flight: int = 0, capacity: int = 1, failure: str | None = None) -> WorkerView:
    return WorkerView(f"w-{state.value}-{created_s}", state, created_s, in_flight, capacity, failure=failure)


NOT_FOUND = "image not found (127.0.0.1:5000/acme/worker:v2)"


INIT, RUN, THR, UNH, IDLE = (
    WorkerState.INITIALIZING,
    WorkerState.RUNNING,
    WorkerState.THROTTLED,
    WorkerState.UNHEALTHY,
    WorkerState.IDLE,
)


@pytest.mark.parametrize(
    ("workers", "max_workers", "low", "code", "reason"),
    [
        ([view(INIT, 10.0), view(INIT, 12.0)], 3, False, "cold_start", "waiting for a worker to start (cold start, 3.2 s so far)"),
        ([view(RUN, in_flight=1)] * 3, 3, False, "max_workers", "max_workers reached (3 busy)"),
        ([view(RUN, in_flight=1), view(THR)], 2, False, "throttled", "no GPU of type A100 free (THROTTLED)"),
        ([view(UNH), view(UNH)], 2, False, "workers_failing", "workers failing: 2 unhealthy, restarting with back-off"),
        # The newest known cause; failing workers explain a starting one (it will likely fail alike) and lowPriority jobs too.
        ([view(UNH, 1.0, failure="exited with code 1"), view(UNH, 2.0, failure=NOT_FOUND), view(UNH, 3.0), view(INIT, 4.0)],
         2, False, "workers_failing", f"workers failing: {NOT_FOUND}, 3 unhealthy, restarting with back-off"),
        ([view(UNH, failure="exited with code 1")], 2, True, "workers_failing",
         "workers failing: exited with code 1, 1 unhealthy, restarting with back-off"),
        # A ready worker is busy: one crash beside it is not why the job waits.
        ([view(UNH, failure="exited with code 1"), view(RUN, in_flight=1)], 1, False, "max_workers", "max_workers reached (1 busy)"),
        ([view(RUN, in_flight=1)], 3, True, "low_priority", "lowPriority: waiting for a free worker"),
        ([view(RUN, in_flight=1, capacity=2)], 1, False, "worker_free", "a worker has room: it takes the job at its next poll"),
        ([view(IDLE)], 1, True, "worker_free", "a worker has room: it takes the job at its next poll"),
        ([], 0, False, "max_workers", "max_workers is 0: no worker will start"),
        ([view(RUN, in_flight=1)], 3, False, "scaling", "waiting for the autoscaler to start a worker"),
        ([view(WorkerState.OUTDATED)], 1, False, "scaling", "waiting for the autoscaler to start a worker"),
    ],
)
def test_reasons(workers, max_workers, low, code, reason):
    spec = endpoint_spec("ep", max_workers=max_workers, gpu_type="A100")
    w = explain_waiting(spec, workers, 1, low_priority=low, now_s=13.2)
    assert (w.code, w.reason, w.position) == (code, reason, 1)
    behind = explain_waiting(spec, workers, 4, low_priority=low, now_s=13.2)
    assert behind.reason == f"{reason}, 3 job(s) ahead" and behind.position == 4


# Held at start-up until BOOT exists (a cold start that lasts as long as the test needs), then each
# job until JOB exists.
GATED = """
import os, time
from gpuserve import serverless

def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)

wait_for({boot!r})

def handler(job):
    wait_for({job!r})
    return {{"ok": True}}

serverless.start({{"handler": handler}})
"""


def test_status_and_health_explain_a_cold_start_then_max_workers(tmp_path):
    boot, gate = tmp_path / "boot", tmp_path / "job"
    dep = code_deployment(tmp_path, "gated", GATED.format(boot=str(boot), job=str(gate)), max_workers=1)
    with Live(tmp_path, [dep]) as live:

        def waiting(job_id: str) -> dict:
            return live.status("gated", job_id).get("waiting") or {}

        first = live.run("gated", {"n": 1})
        wait_until(lambda: waiting(first).get("code") == "cold_start", 30, "the first job waits on a cold start")
        body = live.status("gated", first)
        assert body["status"] == "IN_QUEUE" and body["waiting"]["position"] == 1
        assert body["waiting"]["reason"].startswith("waiting for a worker to start (cold start, ")
        assert body["waiting"]["reason"].endswith(" s so far)")
        second = live.run("gated", {"n": 2})
        w2 = waiting(second)
        assert w2["code"] == "cold_start" and w2["position"] == 2 and w2["reason"].endswith(", 1 job(s) ahead")
        health = live.http.get("/gated/health").json()
        assert health["waiting"]["code"] == "cold_start" and health["waiting"]["inQueue"] == 2

        boot.touch()  # the worker comes up, takes the first job and holds it: the second now waits on max_workers
        live.wait("gated", first, {"IN_PROGRESS"})
        assert "waiting" not in live.status("gated", first)
        wait_until(lambda: waiting(second).get("code") == "max_workers", 30, "the second job waits on max_workers")
        assert waiting(second) == {"code": "max_workers", "reason": "max_workers reached (1 busy)", "position": 1}
        low = live.run("gated", {"n": 3}, policy={"lowPriority": True})
        assert waiting(low) == {
            "code": "low_priority",
            "reason": "lowPriority: waiting for a free worker, 1 job(s) ahead",
            "position": 2,
        }
        assert live.http.get("/gated/health").json()["waiting"] == {
            "code": "max_workers", "reason": "max_workers reached (1 busy)", "inQueue": 2,
        }

        gate.touch()
        for job_id in (first, second, low):
            assert live.wait("gated", job_id)["status"] == "COMPLETED"
            assert "waiting" not in live.status("gated", job_id)
        assert "waiting" not in live.http.get("/gated/health").json()


CRASHING = """
import sys
print("loading the model failed", flush=True)
sys.exit(1)
"""


def test_jobs_on_an_endpoint_whose_handler_crashes_say_so(tmp_path):
    """A handler that exits at start-up: its workers are UNHEALTHY with the exit code, and every queued job says it."""
    dep = code_deployment(tmp_path, "crashing", CRASHING, max_workers=1)
    with Live(tmp_path, [dep]) as live:
        jobs = [live.run("crashing", {"n": i}) for i in range(2)]

        def says_failing() -> bool:
            return all(live.status("crashing", j).get("waiting", {}).get("code") == "workers_failing" for j in jobs)

        wait_until(says_failing, 30, "the queued jobs say the workers fail")
        for position, job_id in enumerate(jobs, start=1):
            body = live.status("crashing", job_id)
            assert body["status"] == "IN_QUEUE" and body["waiting"]["position"] == position
            assert body["waiting"]["reason"].startswith("workers failing: exited with code 1, "), body
        health = live.http.get("/crashing/health").json()
        assert health["waiting"]["reason"].startswith("workers failing: exited with code 1, ") and health["workers"]["unhealthy"] >= 1
        listed = live.http.get(f"{live.url}/api/endpoints").json()["endpoints"][0]["workers"]
        assert {w["failure"] for w in listed if w["state"] == "UNHEALTHY"} == {"exited with code 1"}
