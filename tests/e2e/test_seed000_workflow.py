"""Runpod's development workflow end to end, as a user runs it: every step a `gpuserve` command or an HTTP call.

init a project, write the handler and test it locally, build its Dockerfile and push the image
to a registry, deploy it (`image:` in endpoints.yaml, `gpuserve serve --backend docker`), run
jobs (progress and the waiting reason shown), follow a worker's log, exec into it, change its
scaling without a restart, deploy a tag that does not exist (the worker's failure shown), then
roll out the fixed handler as a new tag. Needs a Docker engine and the password-protected
registry scripts/registry-setup.sh starts (GPUSERVE_TEST_REGISTRY, _USER, _PASSWORD); skips
without them, unless GPUSERVE_REQUIRE_DOCKER=1 or GPUSERVE_REQUIRE_REGISTRY=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.docker import (
    REQUIRE_DOCKER,
    REQUIRE_REGISTRY,
    registry_address,
    registry_login,
    remove_tagged,
    worker_image_client,
    write_docker_config,
)
from tests.support.live import serve_process, stop_process, wait_until

pytestmark = pytest.mark.docker

NAMESPACE = f"test-e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # the registry's repository folder

# What the user writes in place of the starter handler: a line in the log per job, a progress
# update, and some thinking time, so the progress is seen while the job runs.
HANDLER = '''
import time
from gpuserve import serverless

GREETING = "hello"


def handler(job):
    name = job["input"].get("name", "world")
    print(f"greeting {name}", flush=True)
    serverless.progress_update(job, {"step": "greeting", "pct": 50})
    time.sleep(job["input"].get("think_s", 0))
    return {"greeting": f"{GREETING}, {name}"}


if __name__ == "__main__":
    serverless.start({"handler": handler})
'''


REQUIRED_BY = (*REQUIRE_REGISTRY, *REQUIRE_DOCKER)


@pytest.fixture(scope="module")
def registry() -> str:
    return registry_address(REQUIRED_BY)


@pytest.fixture(scope="module")
def docker(registry: str) -> Iterator[Any]:
    client = worker_image_client(REQUIRED_BY)  # the base every user image starts FROM (scripts/docker-setup.sh)
    yield client
    remove_tagged(client, NAMESPACE, force=True)  # by tag: the base images stay


class User:
    """The user's shell: `gpuserve ...` as processes, in the project folder, logged in to the registry."""

    def __init__(self, home: Path, registry: str) -> None:
        config = write_docker_config(home / "docker-config", {registry: registry_login()})  # what `docker login REGISTRY` leaves
        self.cwd = home
        self.env = {**os.environ, "DOCKER_CONFIG": str(config), "COLUMNS": "80"}
        self.url = ""

    def gpuserve(self, *args: str, ok: bool = True, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if self.url and argv[0] in {"run", "logs", "exec", "deploy", "endpoints"}:  # the server to talk to
            argv[argv.index("--") if "--" in argv else len(argv) : 0] = ["--url", self.url]
        if argv[0] == "run":
            argv += ["--timeout", "120"]  # a job that never ends fails the test, not the suite's timeout
        r = subprocess.run(
            [sys.executable, "-m", "gpuserve.cli", *argv],
            capture_output=True, text=True, cwd=self.cwd, env=self.env, timeout=timeout_s,
        )
        if ok:
            assert r.returncode == 0, f"gpuserve {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def listed(self, admin_key: str) -> dict[str, Any]:
        """The endpoint as `gpuserve endpoints --json` prints it."""
        (ep,) = json.loads(self.gpuserve("endpoints", "--json", "--api-key", admin_key).stdout)["endpoints"]
        return dict(ep)

    def polled(self, admin_key: str) -> dict[str, Any]:
        """The same over HTTP (GET /api/endpoints), for waits that poll: no process start per look."""
        r = httpx.get(f"{self.url}/api/endpoints", headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
        assert r.status_code == 200, r.text
        (ep,) = r.json()["endpoints"]
        return dict(ep)


def _follow(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The lines a running `gpuserve logs --follow` prints, as they come (a thread reads its pipe)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _seen(lines: queue.Queue[str], text: str, timeout_s: float = 60) -> None:
    deadline_left = timeout_s
    got: list[str] = []
    while deadline_left > 0:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            deadline_left -= 0.5
            continue
        got.append(line)
        if text in line:
            return
    raise AssertionError(f"`logs --follow` never printed {text!r}; it printed {got!r}")


def test_seed_000_workflow_write_test_build_push_deploy_monitor_debug_adjust_update(
    tmp_path: Path, registry: str, docker: Any
) -> None:
    from gpuserve.backends.docker import managed_containers, namespace_for

    user = User(tmp_path, registry)
    project = tmp_path / "hello"

    # 1. Write: a starter project, then the user's own handler in it.
    init = user.gpuserve("init", "hello")
    assert "python handler.py" in init.stdout and "gpuserve serve" in init.stdout
    assert sorted(p.name for p in project.iterdir()) == ["Dockerfile", "endpoints.yaml", "handler.py", "test_input.json"]
    (project / "handler.py").write_text(HANDLER)
    config = yaml.safe_load((project / "endpoints.yaml").read_text())
    (api_key,) = config["endpoints"][0]["api_keys"]
    (admin_key,) = config["server"]["admin_keys"]

    # 2. Test it locally: the SDK runs test_input.json once and prints the result.
    local = subprocess.run(
        [sys.executable, "handler.py"], capture_output=True, text=True, cwd=project, env=user.env, timeout=60
    )
    assert local.returncode == 0, local.stderr
    *printed, result = local.stdout.splitlines()  # the handler's own prints, then the result
    assert printed == ["greeting world"] and json.loads(result) == {"output": {"greeting": "hello, world"}}
    assert '"pct": 50' in local.stderr  # the progress update, shown by the local run

    # 3. The Dockerfile init wrote: the handler on the local worker base, nothing downloaded.
    dockerfile = (project / "Dockerfile").read_text()
    assert "FROM gpuserve/worker:latest" in dockerfile and "pip" not in dockerfile

    # 4. Build and push to the registry; then this host forgets the image, so deploying must pull it.
    v1 = f"{registry}/{NAMESPACE}/hello:v1"
    pushed = user.gpuserve("build", "hello", "--push", v1)
    assert f"{v1} pushed (sha256:" in " ".join(pushed.stdout.split())
    docker.images.remove(v1, force=True)

    # 5. Deploy: endpoints.yaml runs the image (short heartbeats and drain, for a test's lifetime).
    text = (project / "endpoints.yaml").read_text()
    text = re.sub(r"handler: handler\.py", f"image: {v1}", text)
    text = text.replace("  port: 8000\n", "  port: 8000\n  heartbeat_interval_s: 1\n  poll_timeout_s: 2\n  drain_timeout_s: 3\n")
    (project / "endpoints.yaml").write_text(text)
    assert "OK" in user.gpuserve("validate", "hello/endpoints.yaml").stdout
    data_dir = tmp_path / "data"
    saved = dict(os.environ)
    os.environ["DOCKER_CONFIG"] = user.env["DOCKER_CONFIG"]  # the server pulls with the user's login
    try:
        proc, user.url = serve_process(project / "endpoints.yaml", data_dir, "--backend", "docker")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    follower: subprocess.Popen[str] | None = None
    waiting_run: subprocess.Popen[str] | None = None
    try:
        # 6. Run a job: the client sees why it waits (the first worker's cold start), its progress, the result.
        run = user.gpuserve("run", "hello", '{"name": "you", "think_s": 2}', "--api-key", api_key)
        assert json.loads(run.stdout) == {"greeting": "hello, you"}
        assert "waiting: waiting for a worker to start (cold start" in run.stderr, run.stderr
        assert 'progress: {"step": "greeting", "pct": 50}' in run.stderr, run.stderr
        match = re.search(r"COMPLETED \(.*worker (\S+)\)", run.stderr)
        assert match, run.stderr
        worker = match.group(1)

        # 7. Monitor: the endpoints table (80 columns) lists the worker; its log follows new lines.
        table = user.gpuserve("endpoints", "--api-key", admin_key).stdout
        assert worker in table and "hello" in table, table
        assert max(len(line) for line in table.splitlines()) <= 80, table
        follower = subprocess.Popen(
            [sys.executable, "-m", "gpuserve.cli", "logs", worker, "--follow", "--api-key", admin_key, "--url", user.url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=user.env,
        )
        lines = _follow(follower)
        _seen(lines, "greeting you")  # the log so far: it is connected
        marker = f"follow-{uuid.uuid4().hex[:8]}"
        assert json.loads(user.gpuserve("run", "hello", json.dumps({"name": marker}), "--api-key", api_key).stdout) == {
            "greeting": f"hello, {marker}"
        }
        _seen(lines, f"greeting {marker}")  # written after the follow started
        follower.send_signal(signal.SIGINT)
        follower.wait(30)

        # 8. Debug the running worker: a command inside its container, its exit code passed through.
        inside = user.gpuserve("exec", worker, "--api-key", admin_key, "--", "sh", "-c", "echo $GPUSERVE_WORKER_ID; cat /app/handler.py")
        assert inside.stdout.splitlines()[0] == worker
        assert 'GREETING = "hello"' in inside.stdout
        assert user.gpuserve("exec", worker, "--api-key", admin_key, "--", "sh", "-c", "exit 7", ok=False).returncode == 7
        # The client key is not an operator's.
        refused = user.gpuserve("exec", worker, "--api-key", api_key, "--", "true", ok=False)
        assert refused.returncode == 2 and "HTTP 403" in refused.stderr, refused.stderr

        # 9. Adjust settings without a restart: applied at once, the worker kept.
        changed = user.gpuserve("endpoints", "update", "hello", "--set", "scaling.max_workers=3", "--api-key", admin_key)
        assert "scaling.max_workers=3" in changed.stdout and "no worker replaced" in changed.stdout, changed.stdout
        listed = user.listed(admin_key)
        assert listed["maxWorkers"] == 3 and [w["id"] for w in listed["workers"]] == [worker]
        assert listed["workers"][0]["state"] == "IDLE"

        # 10. A deploy with a mistyped tag: the replacement cannot start, and says why.
        typo = f"{registry}/{NAMESPACE}/hello:v2-typo"
        user.gpuserve("deploy", "hello", typo, "--api-key", admin_key)

        def failing() -> list[dict[str, Any]]:
            return [w for w in user.polled(admin_key)["workers"] if w["state"] == "UNHEALTHY" and w["failure"]]

        (broken,) = wait_until(failing, 90, "the replacement on the missing tag turns UNHEALTHY")
        assert broken["failure"] == f"image not found ({typo})"
        table = user.gpuserve("endpoints", "--api-key", admin_key).stdout
        assert f"{broken['id']}: image not found" in table and typo in " ".join(table.split()), table
        # The failed replacement retires nobody: the old worker keeps serving, and answers a job sent now.
        serving = {w["id"]: w["state"] for w in user.polled(admin_key)["workers"]}
        assert serving.get(worker) in ("IDLE", "RUNNING"), serving
        still = user.gpuserve("run", "hello", '{"name": "still"}', "--api-key", api_key)
        assert json.loads(still.stdout) == {"greeting": "hello, still"}, still.stdout

        # 11. Update the logic: edit, build and push a new tag, deploy it; workers roll over to it.
        (project / "handler.py").write_text(HANDLER.replace('GREETING = "hello"', 'GREETING = "hi"'))
        v2 = f"{registry}/{NAMESPACE}/hello:v2"
        assert f"{v2} pushed (sha256:" in " ".join(user.gpuserve("build", "hello", "--push", v2).stdout.split())
        rolled = user.gpuserve("deploy", "hello", v2, "--api-key", admin_key)
        assert f"hello: version 3 ({v2}); workers" in " ".join(rolled.stdout.split()), rolled.stdout

        def rolled_over() -> list[dict[str, Any]] | None:
            workers = user.polled(admin_key)["workers"]
            return workers if workers and all(w["id"] not in (worker, broken["id"]) for w in workers) else None

        wait_until(rolled_over, 120, "the old and the broken worker are replaced")
        new = user.gpuserve("run", "hello", '{"name": "you"}', "--api-key", api_key)
        assert json.loads(new.stdout) == {"greeting": "hi, you"}
        assert f"worker {worker})" not in new.stderr
        history = user.gpuserve("endpoints", "history", "hello", "--api-key", admin_key).stdout
        assert "scaling.max_workers" in history and typo in history and v2 in history, history
    finally:
        for child in (follower, waiting_run):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
        stop_process(proc, signal.SIGTERM)
        left = managed_containers(docker, namespace_for(data_dir))
        for container in left:
            container.remove(force=True)
    assert [c.name for c in left] == [], "the server left containers behind"
