"""Endpoint updates without restarts on a real server with real worker processes: scaling at once, rolling updates, durable versions, roles."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.config.endpoints import parse_endpoints
from gpuserve.core.types import COUNTED_STATES, WorkerState
from gpuserve.live.registry import Change, LiveWorker
from gpuserve.platform import Platform
from tests.support.live import ADMIN_KEY, API_KEY, FAST, TERMINAL, Live, code_deployment, wait_until
from tests.support.live import process_backend_for_tests as _process_backend

HANDLER = """
import os, time
from gpuserve import serverless

def handler(job):
    marks = os.environ.get("MARKS")
    if marks:
        with open(os.path.join(marks, job["id"]), "a") as f:
            f.write(os.environ["GPUSERVE_WORKER_ID"] + "\\n")
    time.sleep(float(job["input"].get("sleep_s", 0)))
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "version": os.environ.get("VERSION", "") + VARIANT}

VARIANT = ""
serverless.start({"handler": handler})
"""


class StateLog:
    """Every state a worker was put in, and the fewest serving workers (IDLE or RUNNING, not draining) seen once armed."""

    def __init__(self) -> None:
        self.states: list[tuple[str, WorkerState]] = []
        self.min_serving: int | None = None
        self.armed = False
        self.registry: Any = None

    def __call__(self, w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...]) -> None:
        if change is Change.STATE:
            self.states.append((w.worker_id, w.state))
        if self.armed:
            serving = sum(
                1
                for x in self.registry.all(w.endpoint_id)
                if x.state in (WorkerState.IDLE, WorkerState.RUNNING) and not x.draining
            )
            self.min_serving = serving if self.min_serving is None else min(self.min_serving, serving)


def _watch(live: Live) -> StateLog:
    log = StateLog()
    log.registry = live.registry
    live.registry.subscribe(log)
    return log


def _serving(live: Live, eid: str) -> list[LiveWorker]:
    return [w for w in live.workers(eid) if w.state in (WorkerState.IDLE, WorkerState.RUNNING) and not w.draining]


def test_a_live_max_workers_update_takes_effect_without_replacing_workers(tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "ep", HANDLER, min_workers=1, max_workers=1)
    with Live(tmp_path, [dep]) as live:
        live.until(lambda: len(_serving(live, "ep")) == 1, "the min worker is ready")
        [first] = live.workers("ep")
        log = _watch(live)
        jobs = [live.run("ep", {"sleep_s": 1.0}) for _ in range(2)]
        r = live.admin.patch("/api/endpoints/ep", json={"set": {"scaling.max_workers": 2}})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1 and r.json()["rolling"] is False
        assert r.json()["workerVersion"] == r.json()["previousWorkerVersion"] == dep.version
        live.until(lambda: len(live.workers("ep")) == 2, "a second worker under the new max_workers")
        bodies = [live.wait("ep", j) for j in jobs]
        assert [b["status"] for b in bodies] == ["COMPLETED", "COMPLETED"]
        assert first.worker_id in {w.worker_id for w in live.workers("ep")}  # not replaced
        assert WorkerState.OUTDATED not in {s for _, s in log.states}
        assert {w.spec_version for w in live.workers("ep")} == {dep.version}
        (listed,) = httpx.get(f"{live.url}/api/endpoints", headers={"Authorization": f"Bearer {API_KEY}"}).json()["endpoints"]
        assert listed["maxWorkers"] == 2


def test_a_handler_update_rolls_workers_through_outdated_with_no_job_lost_or_run_twice(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = code_deployment(tmp_path, "roll", HANDLER, min_workers=2, max_workers=2, env={"VERSION": "1", "MARKS": str(marks)})
    new_handler = tmp_path / "roll" / "handler_v2.py"
    new_handler.write_text(textwrap.dedent(HANDLER).replace('VARIANT = ""', 'VARIANT = "-new-file"'))
    with Live(tmp_path, [dep]) as live:
        live.until(lambda: len(_serving(live, "roll")) == 2, "two workers ready")
        old = {w.worker_id for w in live.workers("roll")}
        log = _watch(live)
        jobs = [live.run("roll", {"sleep_s": 0.3}) for _ in range(8)]
        log.armed = True
        r = live.admin.patch("/api/endpoints/roll", json={"set": {"handler": str(new_handler)}})
        assert r.status_code == 200, r.text
        assert r.json()["rolling"] is True and r.json()["workerVersion"] != dep.version
        jobs += [live.run("roll", {"sleep_s": 0.3}) for _ in range(6)]
        bodies = [live.wait("roll", j) for j in jobs]
        assert [b["status"] for b in bodies] == ["COMPLETED"] * len(jobs)
        live.until(lambda: not live.runtime.rolling("roll"), "the rolling update is over")
        live.until(lambda: not old & {w.worker_id for w in live.workers("roll")}, "old workers gone")
        assert {w for w, s in log.states if s is WorkerState.OUTDATED} == old  # each went through OUTDATED
        assert log.min_serving is not None and log.min_serving >= 2  # a replacement was up before each left
        for job_id in jobs:  # each job ran exactly once
            assert len((marks / job_id).read_text().splitlines()) == 1, job_id
        after = live.wait("roll", live.run("roll", {}))
        assert after["output"]["version"] == "1-new-file" and after["workerId"] not in old


def _config(tmp_path: Path, handler: Path) -> Any:
    return parse_endpoints(
        {
            "server": {"admin_keys": [{"name": "alice", "key": "sk-alice"}, "sk-bob"]},
            "api_keys": [API_KEY],
            "endpoints": [
                {"id": "ep", "handler": str(handler), "scaling": {"max_workers": 1, "idle_timeout_s": 30}},
                {"id": "old", "handler": str(handler)},
            ],
        },
        tmp_path,
    )


def _platform(tmp_path: Path, handler: Path) -> Platform:
    return Platform.from_config(
        _config(tmp_path, handler), data_dir=tmp_path / "data", backend=_process_backend(), port=0, settings=FAST
    ).start()


def test_updates_adds_and_removes_are_stored_listed_admin_only_and_survive_a_restart(tmp_path: Path) -> None:
    handler = code_deployment(tmp_path, "h", HANDLER).handler_path
    assert handler is not None
    runner = CliRunner()
    platform = _platform(tmp_path, Path(handler))
    try:
        url = platform.url

        def cli(*args: str, key: str = "sk-alice") -> Any:
            return runner.invoke(app, [*args, "--url", url, "--api-key", key])

        done = cli("endpoints", "update", "ep", "--set", "scaling.max_workers=4", "--set", "env.FOO=bar")
        assert done.exit_code == 0, done.output
        assert "version 1" in done.output and "no worker replaced" not in done.output  # env: what workers run
        done = cli("endpoints", "update", "ep", "--set", "scaling.idle_timeout_s=12", key="sk-bob")
        assert done.exit_code == 0 and "no worker replaced" in done.output, done.output
        (tmp_path / "extra.yaml").write_text(f"id: extra\nhandler: {Path(handler).name}\nscaling: {{max_workers: 1}}\n")
        Path(tmp_path / Path(handler).name).write_text(Path(handler).read_text())
        done = cli("endpoints", "add", str(tmp_path / "extra.yaml"))
        assert done.exit_code == 0, done.output
        done = cli("endpoints", "remove", "old")
        assert done.exit_code == 0, done.output
        as_client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert as_client.post("/v2/extra/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
        assert as_client.post("/v2/old/run", json={"input": {}}).status_code == 404
        # A client key may use the job API, never change an endpoint.
        for method, path, body in [
            ("PATCH", "/api/endpoints/ep", {"set": {"scaling.max_workers": 9}}),
            ("POST", "/api/endpoints", {"endpoint": {"id": "x", "image": "y"}}),
            ("DELETE", "/api/endpoints/ep", None),
            ("GET", "/api/endpoints/ep/history", None),
            ("POST", "/api/endpoints/ep/deploy", {"image": "y"}),
        ]:
            r = as_client.request(method, path, json=body)
            assert r.status_code == 403 and "admin role" in r.json()["error"], (path, r.text)
        history = cli("endpoints", "history", "ep")
        assert history.exit_code == 0, history.output
        lines = history.output.strip().splitlines()
        assert [line.split()[0] for line in lines] == ["v1", "v2"]
        assert "alice" in lines[0] and "scaling.max_workers: 1 -> 4" in lines[0] and 'env.FOO: null -> "bar"' in lines[0]
        assert "admin_keys[1]" in lines[1] and "scaling.idle_timeout_s: 30.0 -> 12" in lines[1]
        assert "sk-alice" not in history.output and "sk-bob" not in history.output
    finally:
        platform.stop()
    # The same endpoints.yaml again: the stored versions win for what they changed.
    platform = _platform(tmp_path, Path(handler))
    try:
        rt = platform.runtime
        assert sorted(rt.endpoints) == ["ep", "extra"]
        dep = rt.endpoints["ep"].deployment
        assert dep.spec.scaling.max_workers == 4 and dep.spec.scaling.idle_timeout_s == 12 and dep.env["FOO"] == "bar"
        r = httpx.get(f"{platform.url}/api/endpoints/ep/history", headers={"Authorization": "Bearer sk-alice"})
        assert [v["version"] for v in r.json()["versions"]] == [1, 2]
        alice = {"Authorization": "Bearer sk-alice"}
        r = httpx.get(f"{platform.url}/api/endpoints/old/history", headers=alice)
        assert [v["action"] for v in r.json()["versions"]] == ["remove"]
        # reset: the file wins again; one it declares comes back, one added at run time goes.
        assert httpx.post(f"{platform.url}/api/endpoints/old/reset", headers=alice).status_code == 200
        assert httpx.post(f"{platform.url}/api/endpoints/extra/reset", headers=alice).status_code == 200
        r = httpx.post(f"{platform.url}/api/endpoints/ep/reset", headers=alice)
        assert r.status_code == 200 and r.json()["version"] == 3, r.text
        assert sorted(rt.endpoints) == ["ep", "old"] and rt.endpoints["ep"].deployment.spec.scaling.max_workers == 1
    finally:
        platform.stop()


def test_bad_set_values_are_one_line_naming_the_setting_and_the_value(tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "ep", HANDLER, max_workers=1)
    runner = CliRunner()
    with Live(tmp_path, [dep]) as live:
        for assignment, words in [
            ("scaling.max_workers=-1", ["scaling.max_workers", "-1"]),
            ("scaling.max_wrkers=2", ["scaling.max_wrkers", "not a known setting", "max_workers"]),
            ("scaling.min_workers=5", ["scaling.max_workers", "min_workers"]),  # above max_workers (1)
            ("handler=/no/such/file.py", ["handler", "/no/such/file.py", "not a file"]),
            ("id=other", ["id", "remove"]),
            ("max_workers", ["--set", "SETTING=VALUE"]),
        ]:
            done = runner.invoke(
                app, ["endpoints", "update", "ep", "--set", assignment, "--url", live.url, "--api-key", ADMIN_KEY]
            )
            lines = done.output.strip().splitlines()
            assert done.exit_code == 2 and len(lines) == 1, (assignment, done.output)
            assert all(w in lines[0] for w in words), (assignment, lines[0])
        assert live.store.changes("ep") == []  # nothing refused was stored
        assert live.runtime.endpoints["ep"].deployment.spec.scaling.max_workers == 1


def test_removing_an_endpoint_lets_its_running_job_finish_and_drains_its_workers(tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "gone", HANDLER, max_workers=1)
    with Live(tmp_path, [dep]) as live:
        running = live.run("gone", {"sleep_s": 1.0})
        live.wait("gone", running, {"IN_PROGRESS"})
        queued = live.run("gone", {})
        r = live.admin.delete("/api/endpoints/gone")
        assert r.status_code == 200 and r.json()["queuedJobsDeleted"] == 1, r.text
        job = wait_until(lambda: (j := live.store.get(running)) is not None and j.status.value in TERMINAL and j, 30, "the running job ends")
        assert job.status.value == "COMPLETED" and live.store.get(queued) is None
        live.until(lambda: live.workers("gone") == [], "its worker stopped")
        assert live.http.post("/gone/run", json={"input": {}}).status_code == 404
        assert not [w for w in live.registry.all() if w.state in COUNTED_STATES]
