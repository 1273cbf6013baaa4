"""Stopping the server (SIGTERM) drains it: no new jobs, running ones finish or are requeued, callers learn their ids."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from gpuserve.live.clock import SteadyClock
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.settings import ServerSettings
from gpuserve.platform import process_backend
from gpuserve.store.sqlite import SqliteJobStore
from tests.support.live import TERMINAL, deployment, serve_process, stop_process, wait_until


def test_server_stop_lets_the_running_job_finish_and_the_worker_exit_cleanly(make_server):
    dep = replace(deployment("ep", "slow_gpuserve.py", max_workers=1, idle_timeout_s=60), sdk="gpuserve")
    h = make_server([dep], backend="process")
    job_id = h.submit({"input": {"sleep_s": 2}})
    worker_id = h.wait_status(job_id, {"IN_PROGRESS"})["workerId"]
    backend = h.rt.backend
    h.platform.stop()
    # The result was posted while the socket was still open, so the store has it.
    job = SqliteJobStore(h.data_dir / "jobs.sqlite3").get(job_id)
    assert job is not None and job.status.value == "COMPLETED"
    # SIGTERM, not SIGKILL: the worker logged its own orderly exit after that one job.
    assert "exits after 1 job(s)" in backend.logs(worker_id)


DRAIN_HANDLER = """
import os, time
from gpuserve import serverless

def handler(job):
    inp = job["input"]
    release = inp.get("release")
    deadline = time.monotonic() + inp.get("sleep_s", 0)
    while time.monotonic() < deadline and not (release and os.path.exists(release)):
        time.sleep(0.05)
    return {"n": inp["n"]}

serverless.start({"handler": handler})
"""


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    return serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")


def test_the_default_drain_is_30_s_for_the_server_and_its_workers(tmp_path: Path) -> None:
    settings = ServerSettings()
    backend = process_backend(WorkerRegistry(), "http://127.0.0.1:1", settings, SteadyClock(), tmp_path)
    assert settings.drain_timeout_s == 30.0 and backend.stop_grace_s == 30.0  # was uvicorn's 1 s + the SDK's 9 s


def test_sigterm_refuses_new_jobs_answers_runsync_callers_with_their_ids_and_requeues_what_ran(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(DRAIN_HANDLER)
    (tmp_path / "endpoints.yaml").write_text(
        "server: {heartbeat_interval_s: 1, drain_timeout_s: 3}\n"
        "endpoints:\n"
        f"  ep: {{handler: {handler}, api_keys: [sk-drain], scaling: {{max_workers: 1, idle_timeout_s: 30, extra_workers: 0}}}}\n"
    )
    release = tmp_path / "release"
    proc, url = _serve(tmp_path)
    http = httpx.Client(base_url=f"{url}/v2/ep", headers={"Authorization": "Bearer sk-drain"}, timeout=120)
    answers: dict[str, httpx.Response] = {}

    def runsync(name: str, job_input: dict[str, object]) -> None:
        answers[name] = http.post("/runsync", json={"input": job_input})

    def health() -> dict[str, int]:
        return dict(http.get("/health").json()["jobs"])

    try:
        running = threading.Thread(target=runsync, args=("running", {"n": 1, "sleep_s": 120, "release": str(release)}))
        running.start()
        wait_until(lambda: health()["inProgress"] == 1, 60, "the first job running")
        queued = threading.Thread(target=runsync, args=("queued", {"n": 2}))
        queued.start()
        wait_until(lambda: health()["inQueue"] == 1, 30, "the second job queued behind it")
        accepted = {http.post("/run", json={"input": {"n": 3}}).json()["id"]: 3}

        proc.send_signal(signal.SIGTERM)
        refused = None
        for n in range(100, 400):  # bounded: the drain lasts about 3 s
            r = http.post("/run", json={"input": {"n": n}})
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 200, r.text
            accepted[r.json()["id"]] = n  # sent before the signal arrived: must not be lost either
            time.sleep(0.01)
        assert refused is not None, "no 503 during the drain"
        assert int(refused.headers["Retry-After"]) >= 1 and "shutting down" in refused.json()["error"]

        running.join(60)
        queued.join(60)
        # uvicorn re-raises the signal it caught once its shutdown is done: "ended by SIGTERM", cleanly.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        http.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Each /runsync caller got its job id and a status it can poll, not a bare 500.
    for name in ("running", "queued"):
        r = answers[name]
        assert r.status_code == 200, (name, r.status_code, r.text)
        assert r.json()["status"] in ("IN_QUEUE", "IN_PROGRESS") and r.json()["id"]
    accepted[answers["running"].json()["id"]] = 1
    accepted[answers["queued"].json()["id"]] = 2

    # The job store and the worker logs are readable by their owner only (payloads may hold secrets).
    data = tmp_path / "data"
    assert (data / "logs").stat().st_mode & 0o777 == 0o700
    private = [data / "jobs.sqlite3", *(data / "logs").glob("*.log")]
    assert len(private) >= 2 and all(p.stat().st_mode & 0o777 == 0o600 for p in private)

    store = SqliteJobStore(tmp_path / "data" / "jobs.sqlite3")
    try:
        stored = {job_id: store.get(job_id) for job_id in accepted}
        assert all(j is not None and j.status.value == "IN_QUEUE" for j in stored.values()), stored
        ran = stored[answers["running"].json()["id"]]
        assert ran is not None and ran.retries == 1  # cut by the drain: requeued, the attempt counted
        assert all(j is not None and j.retries == 0 for i, j in stored.items() if i != ran.id)
    finally:
        store.close()

    # The next life runs every accepted job: none lost.
    release.write_text("go")
    proc, url = _serve(tmp_path)
    try:
        with httpx.Client(base_url=f"{url}/v2/ep", headers={"Authorization": "Bearer sk-drain"}, timeout=30) as http:
            def finished() -> dict[str, dict[str, object]] | None:
                bodies = {job_id: http.get(f"/status/{job_id}").json() for job_id in accepted}
                return bodies if all(b["status"] in TERMINAL for b in bodies.values()) else None

            bodies = wait_until(finished, 120, "every accepted job ended")
        lost = [job_id for job_id, n in accepted.items() if bodies[job_id]["status"] != "COMPLETED" or bodies[job_id]["output"] != {"n": n}]
        assert lost == []
    finally:
        stop_process(proc, signal.SIGTERM)
