"""The process backend: real subprocesses, injected time for back-off and grace; and live against the server."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from gpuserve.backends.process import ProcessBackend, crash_backoff_s
from gpuserve.core.errors import ConfigError, NotFoundError
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from tests.support.live import Live, code_deployment

DEAD_SERVER = "http://127.0.0.1:9"  # nothing listens: these scripts never call it


def _script(tmp_path: Path, name: str, code: str) -> Deployment:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return Deployment(spec=EndpointSpec(name), handler_path=str(path))


def _wait_exit(backend: ProcessBackend, worker_id: str) -> None:
    pid = backend.process_id(worker_id)
    assert pid is not None
    backend._procs[worker_id].popen.wait(30)  # type: ignore[union-attr]


def test_backoff_grows_and_is_capped() -> None:
    assert [crash_backoff_s(n) for n in range(0, 5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert crash_backoff_s(50) == 60.0


def test_configure_rejects_a_missing_handler(tmp_path: Path) -> None:
    backend = ProcessBackend(DEAD_SERVER, WorkerRegistry(), logs_dir=tmp_path)
    with pytest.raises(ConfigError, match="handler"):
        backend.configure(Deployment(spec=EndpointSpec("x"), handler_path=str(tmp_path / "nope.py")))
    with pytest.raises(ConfigError, match="handler"):
        backend.configure(Deployment(spec=EndpointSpec("x")))
    with pytest.raises(NotFoundError):
        backend.apply(EndpointSpec("x"), ScaleAction(start=1), 0.0)


def test_spawn_env_logs_and_clean_exit_on_stop(tmp_path: Path) -> None:
    dep = _script(
        tmp_path,
        "envdump",
        """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        for k in ("RUNPOD_POD_ID", "RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_PING_INTERVAL",
                  "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "GPUSERVE_WORKER_ID", "GPUSERVE_COLD_START_FILE"):
            print(k, os.environ.get(k), flush=True)
        print("has-token", bool(os.environ.get("RUNPOD_AI_API_KEY")), flush=True)
        time.sleep(60)
        """,
    )
    registry = WorkerRegistry()
    backend = ProcessBackend("http://127.0.0.1:8123/", registry, logs_dir=tmp_path / "logs", ping_interval_ms=500)
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=1), now_s=100.0)
    [view] = backend.workers("envdump")
    assert view.state is WorkerState.INITIALIZING and view.created_s == 100.0
    wid = view.worker_id
    deadline = time.monotonic() + 30
    while "has-token" not in backend.logs(wid) and time.monotonic() < deadline:
        time.sleep(0.02)
    text = backend.logs(wid)
    assert f"RUNPOD_POD_ID {wid}" in text
    assert f"RUNPOD_WEBHOOK_GET_JOB http://127.0.0.1:8123/v2/envdump/job-take/{wid}?gpu=cpu" in text
    assert f"RUNPOD_WEBHOOK_POST_OUTPUT http://127.0.0.1:8123/v2/envdump/job-done/{wid}/$ID?gpu=cpu" in text
    assert "RUNPOD_PING_INTERVAL 500" in text and "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS true" in text
    assert "has-token True" in text
    assert backend.logs(wid, tail_lines=1).strip() == "has-token True"
    # The token the process got is the one the registry knows (only its hash is kept).
    backend.apply(dep.spec, ScaleAction(stop=(wid,)), now_s=101.0)
    assert backend.workers("envdump") == []  # hidden from the controller at once
    _wait_exit(backend, wid)
    backend.poll(101.5)
    assert registry.get(wid) is None and backend.exit_code(wid) is None  # exited as asked: forgotten
    assert "has-token" in backend.logs(wid)  # logs outlive the worker
    with pytest.raises(NotFoundError):
        backend.logs("no-such-worker")


def test_sigkill_after_the_grace_when_sigterm_is_ignored(tmp_path: Path) -> None:
    dep = _script(
        tmp_path,
        "stubborn",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(120)
        """,
    )
    registry = WorkerRegistry()
    backend = ProcessBackend(DEAD_SERVER, registry, logs_dir=tmp_path / "logs", stop_grace_s=5.0)
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=1), now_s=0.0)
    wid = registry.all("stubborn")[0].worker_id
    deadline = time.monotonic() + 30
    while "ignoring" not in backend.logs(wid) and time.monotonic() < deadline:
        time.sleep(0.02)
    backend.apply(dep.spec, ScaleAction(stop=(wid,)), now_s=10.0)
    backend.poll(14.9)  # within the grace: SIGTERM only, still running
    assert backend._procs[wid].popen.poll() is None  # type: ignore[union-attr]
    backend.poll(15.0)  # grace over: SIGKILL
    _wait_exit(backend, wid)
    backend.poll(15.1)
    assert registry.get(wid) is None


def test_crash_marks_unhealthy_and_backs_off_new_spawns(tmp_path: Path) -> None:
    dep = _script(tmp_path, "crashy", "import sys\nprint('dying', flush=True)\nsys.exit(3)\n")
    registry = WorkerRegistry()
    backend = ProcessBackend(DEAD_SERVER, registry, logs_dir=tmp_path / "logs")
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=1), now_s=0.0)
    first = registry.all("crashy")[0].worker_id
    _wait_exit(backend, first)
    backend.poll(1.0)
    assert registry.get(first).state is WorkerState.UNHEALTHY  # type: ignore[union-attr]
    assert backend.exit_code(first) == 3
    assert backend.backoff_until_s("crashy") == 2.0  # 1 s after one crash
    # The controller, seeing no counted worker, asks for one: it waits out the back-off.
    backend.apply(dep.spec, ScaleAction(start=1), now_s=1.5)
    second = next(w.worker_id for w in registry.all("crashy") if w.worker_id != first)
    assert registry.get(second).state is WorkerState.INITIALIZING  # type: ignore[union-attr]
    backend.poll(1.9)
    assert backend.process_id(second) is None
    backend.poll(2.0)
    assert backend.process_id(second) is not None
    _wait_exit(backend, second)
    backend.poll(2.5)
    assert backend.backoff_until_s("crashy") == 4.5  # the second crash in a row: 2 s
    backend.poll(2.5 + 30.0)  # crashed workers linger for display, then go
    assert registry.all("crashy") == []
    backend.shutdown()


def test_shutdown_stops_every_worker(tmp_path: Path) -> None:
    dep = _script(tmp_path, "sleeper", "import time\ntime.sleep(120)\n")
    registry = WorkerRegistry()
    backend = ProcessBackend(DEAD_SERVER, registry, logs_dir=tmp_path / "logs", stop_grace_s=5.0)
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=3), now_s=0.0)
    procs = [p.popen for p in backend._procs.values()]
    assert len(procs) == 3
    backend.shutdown()
    assert all(p is not None and p.poll() is not None for p in procs)
    assert registry.all() == []


# -- live, through gpuserve's server --------------------------------------------------------------

SLOW = """
import os, time
from gpuserve import serverless

def handler(job):
    time.sleep(float(job["input"].get("sleep_s", 0)))
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "version": os.environ.get("VERSION")}

serverless.start({"handler": handler})
"""


def test_scale_from_zero_then_idle_timeout_back_to_zero(tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "scaler", SLOW, max_workers=2, idle_timeout_s=1.0)
    with Live(tmp_path, [dep]) as live:
        assert live.workers("scaler") == []
        job = live.run("scaler", {})
        body = live.wait("scaler", job)
        assert body["status"] == "COMPLETED"
        wid = body["workerId"]
        record = live.backend.cold_start(wid)
        assert record is not None and record.total_s > 0
        assert record.first_take_s is not None and record.start_s is not None
        live.until(lambda: live.workers("scaler") == [], "idle worker stopped after idle_timeout_s")
        assert any(r.worker_id == wid for r in live.backend.cold_starts)


def test_new_version_marks_outdated_finishes_job_then_replaces(tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "roll", SLOW, min_workers=1, max_workers=1, env={"VERSION": "1"})
    with Live(tmp_path, [dep]) as live:
        live.until(lambda: any(w.state is WorkerState.IDLE for w in live.workers("roll")), "min worker ready")
        [old] = live.workers("roll")
        job = live.run("roll", {"sleep_s": 1.5})
        live.wait("roll", job, {"IN_PROGRESS"})
        new_dep = Deployment(spec=dep.spec, handler_path=dep.handler_path, env={"VERSION": "2"})
        r = live.admin.patch("/api/endpoints/roll", json={"set": {"env.VERSION": "2"}})
        assert r.status_code == 200 and r.json()["workerVersion"] == new_dep.version, r.text
        # A replacement comes up first (one above max_workers), then the old worker turns OUTDATED.
        live.until(lambda: (w := live.registry.get(old.worker_id)) is None or w.state is WorkerState.OUTDATED, "old worker OUTDATED")
        body = live.wait("roll", job)
        assert body["status"] == "COMPLETED" and body["output"] == {"worker": old.worker_id, "version": "1"}
        live.until(lambda: live.registry.get(old.worker_id) is None, "outdated worker retired")
        job2 = live.run("roll", {})
        body2 = live.wait("roll", job2)
        assert body2["output"]["version"] == "2" and body2["workerId"] != old.worker_id
        assert {w.spec_version for w in live.workers("roll")} == {new_dep.version}


KILLABLE = """
import os, time
from gpuserve import serverless

def handler(job):
    with open(os.path.join(os.environ["MARKS"], os.environ["GPUSERVE_WORKER_ID"]), "a") as f:
        f.write(job["id"] + "\\n")
    time.sleep(float(job["input"]["sleep_s"]))
    return os.environ["GPUSERVE_WORKER_ID"]

serverless.start({"handler": handler})
"""


def test_sigkill_mid_job_requeues_and_completes_on_a_new_worker(tmp_path: Path) -> None:
    import os
    import signal

    marks = tmp_path / "marks"
    marks.mkdir()
    dep = code_deployment(tmp_path, "victim", KILLABLE, max_workers=1, env={"MARKS": str(marks)})
    with Live(tmp_path, [dep]) as live:
        job = live.run("victim", {"sleep_s": 2.0})
        body = live.wait("victim", job, {"IN_PROGRESS"})
        first = body["workerId"]
        live.until(lambda: (marks / first).exists(), "handler started")
        pid = live.backend.process_id(first)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        live.until(
            lambda: (w := live.registry.get(first)) is None or w.state is WorkerState.UNHEALTHY,
            "killed worker marked unhealthy",
        )
        done = live.wait("victim", job)
        assert done["status"] == "COMPLETED" and done["output"] != first
        assert (marks / done["output"]).read_text().split() == [job]
