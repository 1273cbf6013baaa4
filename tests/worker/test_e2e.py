"""End to end through gpuserve's server and process backend: gpuserve's SDK, and Runpod's unmodified SDK for parity."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpuserve.core.types import WorkerState
from gpuserve.live.registry import Heartbeat, WorkerRegistry
from tests.support.live import Live, code_deployment

HEADER = {
    "gpuserve": "from gpuserve import serverless\n",
    "runpod": "import runpod\nserverless = runpod.serverless\n",
}
SDKS = ["gpuserve", "runpod"]


class RecordingRegistry(WorkerRegistry):
    """The real registry, also remembering the job ids each heartbeat listed."""

    def __init__(self) -> None:
        super().__init__()
        self.pinged: list[tuple[str, tuple[str, ...]]] = []

    def on_ping(self, worker_id: str, job_ids: list[str], now_s: float, lease_grace_s: float | None = None) -> Heartbeat:
        self.pinged.append((worker_id, tuple(job_ids)))
        return super().on_ping(worker_id, job_ids, now_s, lease_grace_s)


def _dep(tmp_path: Path, sdk: str, name: str, body: str, **kw: Any):
    return code_deployment(tmp_path, f"{name}-{sdk}", HEADER[sdk] + body, sdk=sdk, **kw)


KINDS = {
    "sync": """
def handler(job):
    return {"kind": "sync", "x": job["input"]["x"]}
serverless.start({"handler": handler})
""",
    "async": """
import asyncio
async def handler(job):
    await asyncio.sleep(0.01)
    return {"kind": "async", "x": job["input"]["x"]}
serverless.start({"handler": handler})
""",
    "gen": """
import time
def handler(job):
    for i in range(job["input"]["x"]):
        time.sleep(0.05)
        yield {"i": i}
serverless.start({"handler": handler, "return_aggregate_stream": True})
""",
    "agen": """
import asyncio
async def handler(job):
    for i in range(job["input"]["x"]):
        await asyncio.sleep(0.05)
        yield f"tok{i}"
serverless.start({"handler": handler, "return_aggregate_stream": True})
""",
}


@pytest.mark.parametrize("sdk", SDKS)
def test_every_handler_kind(tmp_path: Path, sdk: str) -> None:
    deps = {kind: _dep(tmp_path, sdk, kind, code) for kind, code in KINDS.items()}
    with Live(tmp_path, deps.values()) as live:
        jobs = {kind: live.run(dep.endpoint_id, {"x": 5}) for kind, dep in deps.items()}
        # Streams: poll /stream until terminal; every chunk must come exactly once, in order.
        streamed: dict[str, list[Any]] = {"gen": [], "agen": []}
        for kind in streamed:
            eid = deps[kind].endpoint_id
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r = live.http.get(f"/{eid}/stream/{jobs[kind]}").json()
                streamed[kind] += [c["output"] for c in r["stream"]]
                if r["status"] in ("COMPLETED", "FAILED") and not r["stream"]:
                    break
                time.sleep(0.02)
        results = {kind: live.wait(deps[kind].endpoint_id, jobs[kind]) for kind in deps}
    assert results["sync"]["output"] == {"kind": "sync", "x": 5}
    assert results["async"]["output"] == {"kind": "async", "x": 5}
    assert streamed["gen"] == [{"i": i} for i in range(5)]
    assert streamed["agen"] == [f"tok{i}" for i in range(5)]
    assert results["gen"]["output"] == [{"i": i} for i in range(5)]
    assert results["agen"]["output"] == [f"tok{i}" for i in range(5)]
    for body in results.values():
        assert body["status"] == "COMPLETED" and body["workerId"] and "executionTime" in body and "delayTime" in body


CONCURRENT = """
import asyncio
async def handler(job):
    await asyncio.sleep(2)
    return job["input"]["n"]
serverless.start({"handler": handler, "concurrency_modifier": lambda current: 4})
"""


@pytest.mark.parametrize("sdk", SDKS)
def test_concurrency_four_async_jobs_per_worker(tmp_path: Path, sdk: str) -> None:
    dep = _dep(tmp_path, sdk, "conc", CONCURRENT, max_workers=1, concurrency=4, env={"RUNPOD_LOG_LEVEL": "DEBUG"})
    registry = RecordingRegistry()
    with Live(tmp_path, [dep], registry=registry) as live:
        # One job first: it starts alone, so it also ends alone and frees exactly one slot.
        ids = [live.run(dep.endpoint_id, {"n": 0})]
        live.wait(dep.endpoint_id, ids[0], {"IN_PROGRESS"})
        time.sleep(0.5)  # spacing, not an assertion: job 0 ends well before the others
        ids += [live.run(dep.endpoint_id, {"n": i}) for i in range(1, 8)]
        bodies = [live.wait(dep.endpoint_id, j) for j in ids]
        log = live.all_logs(tail_chars=10**7)
    assert [b.get("output") for b in bodies] == list(range(8)), [b.get("error") for b in bodies]
    assert len({b["workerId"] for b in bodies}) == 1  # one worker did all eight
    assert "job-take-batch" in log  # a batch take while several slots were free
    if sdk == "gpuserve":
        # A single take once exactly one slot is free. Runpod's SDK re-checks its slots only
        # once a second, so whether it ever sees exactly one free slot depends on timing.
        assert "job-take asked 1" in log
    listed = [set(ids) & set(jobs) for _, jobs in registry.pinged]
    assert max(len(s) for s in listed) >= 2  # heartbeats list the in-flight ids


CPU_BOUND = """
import hashlib
def handler(job):
    d = b"x"
    for _ in range(job["input"]["rounds"]):
        d = hashlib.sha256(d).digest()
    return d.hex()[:8]
serverless.start({"handler": handler})
"""


def test_cpu_bound_sync_handler_keeps_the_worker_alive(tmp_path: Path) -> None:
    # 0.4-s heartbeats: 1.2 s of silence would mark the worker UNHEALTHY and requeue its job.
    from tests.support.live import FAST

    settings = replace(FAST, heartbeat_interval_s=0.4)
    dep = _dep(tmp_path, "gpuserve", "cpu", CPU_BOUND)
    with Live(tmp_path, [dep], settings=settings) as live:
        job = live.run(dep.endpoint_id, {"rounds": 7_000_000})
        body = live.wait(dep.endpoint_id, job, timeout_s=120)
        workers = [(w.worker_id, w.state) for w in live.workers(dep.endpoint_id)]
    assert body["status"] == "COMPLETED"
    assert body["executionTime"] >= 1200  # the job outlasted a liveness window (3 x 0.4 s)
    assert workers == [(body["workerId"], WorkerState.IDLE)]  # never declared dead nor replaced


ERRORS = """
def handler(job):
    if job["input"]["mode"] == "raise":
        raise RuntimeError("handler exploded")
    if job["input"]["mode"] == "dict":
        return {"error": {"code": 1}}
    return "fine"
serverless.start({"handler": handler})
"""


@pytest.mark.parametrize("sdk", SDKS)
def test_errors_fail_the_job_and_the_worker_keeps_serving(tmp_path: Path, sdk: str) -> None:
    dep = _dep(tmp_path, sdk, "err", ERRORS)
    with Live(tmp_path, [dep]) as live:
        raised = live.wait(dep.endpoint_id, live.run(dep.endpoint_id, {"mode": "raise"}))
        dict_error = live.wait(dep.endpoint_id, live.run(dep.endpoint_id, {"mode": "dict"}))
        fine = live.wait(dep.endpoint_id, live.run(dep.endpoint_id, {"mode": "fine"}))
    assert raised["status"] == "FAILED"
    info = json.loads(raised["error"])
    assert info["error_message"] == "handler exploded" and "RuntimeError" in info["error_type"]
    assert "Traceback" in info["error_traceback"]
    assert dict_error["status"] == "FAILED" and "code" in str(dict_error["error"])
    assert fine["status"] == "COMPLETED" and fine["output"] == "fine"
    assert raised["workerId"] == fine["workerId"]


PROGRESS = """
import os, time
def handler(job):
    serverless.progress_update(job, {"pct": 50})
    gate = os.path.join(os.environ["GATE"], job["id"])
    while not os.path.exists(gate):
        time.sleep(0.02)
    return {"pct": 100}
serverless.start({"handler": handler})
"""


@pytest.mark.parametrize("sdk", SDKS)
def test_progress_shows_while_running_and_never_regresses(tmp_path: Path, sdk: str) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    dep = _dep(tmp_path, sdk, "prog", PROGRESS, env={"GATE": str(gate)})
    with Live(tmp_path, [dep]) as live:
        job = live.run(dep.endpoint_id, {})
        live.until(lambda: live.status(dep.endpoint_id, job).get("output") == {"pct": 50}, "progress visible")
        assert live.status(dep.endpoint_id, job)["status"] == "IN_PROGRESS"
        (gate / job).write_text("go")
        body = live.wait(dep.endpoint_id, job)
        time.sleep(0.3)  # room for a late progress post (Runpod's SDK sends them from a thread)
        again = live.status(dep.endpoint_id, job)
    assert body["status"] == "COMPLETED" and body["output"] == {"pct": 100}
    assert again["status"] == "COMPLETED" and again["output"] == {"pct": 100}


CANCELLABLE = """
import asyncio, os
async def handler(job):
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        open(os.path.join(os.environ["MARKS"], job["id"]), "w").write("cancelled")
        raise
    return "not cancelled"
serverless.start({"handler": handler})
"""


@pytest.mark.parametrize("sdk", SDKS)
def test_cancel_reaches_a_running_async_handler(tmp_path: Path, sdk: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = _dep(tmp_path, sdk, "cancel", CANCELLABLE, env={"MARKS": str(marks)})
    with Live(tmp_path, [dep]) as live:
        job = live.run(dep.endpoint_id, {})
        live.wait(dep.endpoint_id, job, {"IN_PROGRESS"})
        r = live.http.post(f"/{dep.endpoint_id}/cancel/{job}")
        assert r.json()["status"] == "CANCELLED"
        live.until(lambda: (marks / job).exists(), "handler saw CancelledError", 30)
        # The worker is free again: a queued job runs next.
        nxt = live.run(dep.endpoint_id, {})
        live.wait(dep.endpoint_id, nxt, {"IN_PROGRESS"})
        assert live.status(dep.endpoint_id, job)["status"] == "CANCELLED"


REFRESH = """
import os
def handler(job):
    return os.environ.get("GPUSERVE_WORKER_ID") or os.environ["RUNPOD_POD_ID"]
serverless.start({"handler": handler, "refresh_worker": True})
"""


@pytest.mark.parametrize("sdk", SDKS)
def test_refresh_worker_replaces_the_process(tmp_path: Path, sdk: str) -> None:
    dep = _dep(tmp_path, sdk, "fresh", REFRESH, max_workers=1)
    with Live(tmp_path, [dep]) as live:
        first = live.wait(dep.endpoint_id, live.run(dep.endpoint_id, {}))
        live.until(lambda: live.registry.get(first["workerId"]) is None, "refreshed worker exited and was removed")
        second = live.wait(dep.endpoint_id, live.run(dep.endpoint_id, {}))
    assert first["status"] == second["status"] == "COMPLETED"
    assert first["output"] == first["workerId"]
    assert second["workerId"] != first["workerId"] and second["output"] == second["workerId"]


def test_examples_served_from_their_endpoints_yaml(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    from gpuserve.config.endpoints import load_endpoints

    deps = [e.deployment for e in load_endpoints(pytestconfig.rootpath / "examples" / "endpoints.yaml").endpoints]
    inputs = {
        "echo": ({"x": 1}, {"echo": {"x": 1}}),
        "streaming": ({"text": "a b", "delay_s": 0}, [{"index": 0, "token": "a"}, {"index": 1, "token": "b"}]),
        "async-concurrent": ({"seconds": 0.01}, None),
        "slow-progress": ({"steps": 2, "work": 10}, None),
    }
    with Live(tmp_path, deps) as live:
        jobs = {eid: live.run(eid, inp) for eid, (inp, _) in inputs.items()}
        bodies = {eid: live.wait(eid, job) for eid, job in jobs.items()}
    for eid, (_, expected) in inputs.items():
        assert bodies[eid]["status"] == "COMPLETED", bodies[eid]
        if expected is not None:
            assert bodies[eid]["output"] == expected
    assert bodies["async-concurrent"]["output"]["worker_id"] == bodies["async-concurrent"]["workerId"]
    assert bodies["slow-progress"]["output"]["steps"] == 2
