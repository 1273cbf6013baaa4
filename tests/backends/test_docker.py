"""The Docker backend against a real engine and the live server: jobs, scaling, SIGKILL, flash boot, rolling update, adoption.

Skips when no Docker engine answers, unless GPUSERVE_REQUIRE_DOCKER=1 (CI), where it fails instead.
Every test runs in this module's own namespace; the module fixture checks that no container or
volume of it is left at the end, and removes any it finds.
"""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import WorkerState
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.settings import ServerSettings
from gpuserve.platform import Platform
from tests.support import live as support
from tests.support.docker import docker_fixture, lb_server

pytestmark = pytest.mark.docker

NAMESPACE = f"test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
SETTINGS = ServerSettings(
    poll_timeout_s=2.0,
    heartbeat_interval_s=0.5,
    tick_interval_s=0.2,
    maintenance_interval_s=0.05,
)

HANDLER = """
import os, time
from gpuserve import serverless

print("handler module loaded", flush=True)

def handler(job):
    time.sleep(float(job["input"].get("sleep_s", 0)))
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "version": os.environ.get("VERSION", "")}

serverless.start({"handler": handler})
"""


client = docker_fixture(NAMESPACE, volumes=True)


def _deployment(
    tmp_path: Path,
    endpoint_id: str,
    *,
    min_workers: int = 0,
    max_workers: int = 1,
    idle_timeout_s: float = 30.0,
    flash_boot: bool = True,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> Deployment:
    folder = tmp_path / endpoint_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER))
    spec = support.endpoint_spec(
        endpoint_id,
        min_workers=min_workers,
        max_workers=max_workers,
        idle_timeout_s=idle_timeout_s,
        flash_boot=flash_boot,
        **{k: v for k, v in extra.items() if k in ("gpu_type", "gpus_per_worker")},
    )
    rest = {k: v for k, v in extra.items() if k not in ("gpu_type", "gpus_per_worker")}
    return Deployment(spec=spec, handler_path=str(folder / "handler.py"), env=env or {}, **rest)


class Live(support.Live):
    """The shared live harness with the Docker backend, in this module's namespace, with no API keys (operator routes open on loopback)."""

    def __init__(
        self,
        tmp_path: Path,
        client: Any,
        deployments: list[Deployment],
        port: int = 0,
        settings: ServerSettings = SETTINGS,
        **backend_options: Any,
    ) -> None:
        from gpuserve.backends.docker import docker_backend_factory

        options = {"retention_s": 0.0, "stop_timeout_s": 3, "orphan_grace_s": 5.0, **backend_options}
        factory = docker_backend_factory(client=client, namespace=NAMESPACE, state_dir=tmp_path / "state", **options)
        super().__init__(tmp_path, deployments, settings, backend=factory, keys=(), port=port, admin_keys=())

    @property
    def docker(self) -> Any:
        assert self.backend is not None
        return self.backend

    def containers(self, client: Any) -> list[Any]:
        from gpuserve.backends.docker import managed_containers

        return managed_containers(client, NAMESPACE)


def test_jobs_flow_through_containers_scale_out_and_back_to_zero(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "echo", max_workers=3, idle_timeout_s=1.0, cpu_limit=0.5, memory_limit_mib=256)
    with Live(tmp_path, client, [dep]) as live:
        jobs = [live.run("echo", {"sleep_s": 1.5}) for _ in range(3)]
        bodies = [live.wait("echo", j) for j in jobs]
        assert [b["status"] for b in bodies] == ["COMPLETED"] * 3
        workers = {b["output"]["worker"] for b in bodies}
        assert len(workers) >= 2  # scaled out: three 1.5-s jobs at one job per worker
        assert all(b["workerId"] == b["output"]["worker"] for b in bodies)
        # The container: labels, host network, limits, the worker environment.
        wid = bodies[0]["workerId"]
        container = client.containers.get(live.docker.container_id(wid))
        labels = container.labels
        assert labels["gpuserve.endpoint"] == "echo" and labels["gpuserve.worker"] == wid
        assert labels["gpuserve.version"] == dep.version and labels["gpuserve.namespace"] == NAMESPACE
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "host"
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 1024 * 1024
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["RUNPOD_WEBHOOK_GET_JOB"] == f"{live.url}/v2/echo/job-take/{wid}?gpu=cpu"
        assert env["RUNPOD_POD_ID"] == wid and env["RUNPOD_AI_API_KEY"].startswith("wk_")
        assert "handler module loaded" in live.docker.logs(wid)
        # Every phase of a cold start was measured.
        records = [r for r in live.docker.cold_starts if r.kind == "cold"]
        assert len(records) == len(workers)
        for r in records:
            assert r.create_s is not None and r.start_s is not None and r.runtime_init_s is not None
            assert r.first_take_s is not None and r.total_s is not None and r.total_s >= r.start_s
        # Idle timeout, no retention: back to zero workers and zero containers.
        live.until(lambda: live.registry.all("echo") == [] and live.containers(client) == [], "scaled to zero")


def test_sigkill_mid_job_requeues_and_completes(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "victim", max_workers=1)
    with Live(tmp_path, client, [dep]) as live:
        job = live.run("victim", {"sleep_s": 2.0})
        first = live.wait("victim", job, {"IN_PROGRESS"})["workerId"]
        client.containers.get(live.docker.container_id(first)).kill("SIGKILL")
        done = live.wait("victim", job)
        assert done["status"] == "COMPLETED"
        assert done["output"]["worker"] != first and done.get("retries") == 1
        assert "handler module loaded" in live.docker.logs(first)  # the dead worker's last lines are kept
        # It stays listed UNHEALTHY a while, with the cause: docker-init died of the SIGKILL (128 + 9).
        lost = live.registry.get(first)
        assert lost is not None and lost.state is WorkerState.UNHEALTHY and lost.failure == "exited with code 137"


def test_a_container_that_exits_at_start_makes_queued_jobs_say_so(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "exits", max_workers=1)
    Path(str(dep.handler_path)).write_text("import sys\nprint('no model', flush=True)\nsys.exit(3)\n")
    with Live(tmp_path, client, [dep]) as live:
        job = live.run("exits", {})

        def reason() -> str:
            return str(live.status("exits", job).get("waiting", {}).get("reason", ""))

        live.until(lambda: reason().startswith("workers failing: exited with code 3, "), "the job says its workers exit")
        assert live.status("exits", job)["status"] == "IN_QUEUE"
        assert "no model" in live.docker.logs(next(w.worker_id for w in live.registry.all("exits") if w.failure))


def test_flash_boot_revives_a_paused_container_faster_than_a_cold_start(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "flash", max_workers=1, idle_timeout_s=0.5)
    with Live(tmp_path, client, [dep], retention_s=60.0) as live:
        first = live.wait("flash", live.run("flash", {}))
        wid = first["workerId"]
        live.until(lambda: live.docker.retained("flash") == [wid], "retired worker kept for flash boot")
        assert client.containers.get(live.docker.container_id(wid)).status == "paused"
        assert live.docker.workers("flash") == []  # a retained worker does not count
        second = live.wait("flash", live.run("flash", {}))
        assert second["status"] == "COMPLETED" and second["workerId"] == wid  # same container, revived
        live.until(lambda: len(live.docker.cold_starts) == 2, "both start records")
        cold, flash = live.docker.cold_starts
        assert (cold.kind, flash.kind) == ("cold", "flash_unpause")
        assert flash.create_s is None and flash.runtime_init_s is None  # no create, no re-init
        assert cold.total_s is not None and flash.total_s is not None
        assert flash.total_s < cold.total_s


def test_flash_boot_by_stop_restarts_the_same_container(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "flashstop", max_workers=1, idle_timeout_s=0.5)
    with Live(tmp_path, client, [dep], retention_s=60.0, flash_mode="stop") as live:
        wid = live.wait("flashstop", live.run("flashstop", {}))["workerId"]
        live.until(lambda: live.docker.retained("flashstop") == [wid], "retired worker kept for flash boot")
        assert client.containers.get(live.docker.container_id(wid)).status == "exited"
        second = live.wait("flashstop", live.run("flashstop", {}))
        assert second["status"] == "COMPLETED" and second["workerId"] == wid
        live.until(lambda: len(live.docker.cold_starts) == 2, "both start records")
        flash = live.docker.cold_starts[1]
        assert flash.kind == "flash_start" and flash.create_s is None and flash.runtime_init_s is not None
        assert len(live.containers(client)) == 1


def test_rolling_update_replaces_outdated_workers_without_losing_a_job(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "roll", min_workers=1, max_workers=2, env={"VERSION": "1"})
    with Live(tmp_path, client, [dep]) as live:
        live.until(lambda: any(w.state is WorkerState.IDLE for w in live.registry.all("roll")), "min worker ready")
        [old] = live.registry.all("roll")
        jobs = [live.run("roll", {"sleep_s": 0.3}) for _ in range(3)]
        live.wait("roll", jobs[0], {"IN_PROGRESS", "COMPLETED"})
        new = Deployment(spec=dep.spec, handler_path=dep.handler_path, env={"VERSION": "2"})
        assert live.admin.patch("/api/endpoints/roll", json={"set": {"env.VERSION": "2"}}).status_code == 200
        jobs += [live.run("roll", {"sleep_s": 0.3}) for _ in range(3)]
        bodies = [live.wait("roll", j) for j in jobs]
        assert [b["status"] for b in bodies] == ["COMPLETED"] * 6
        live.until(lambda: not live.runtime.rolling("roll"), "the rolling update is over")
        assert live.wait("roll", live.run("roll", {}))["output"]["version"] == "2"
        live.until(lambda: live.registry.get(old.worker_id) is None, "outdated worker replaced")
        live.until(
            lambda: {c.labels["gpuserve.version"] for c in live.containers(client)} == {new.version},
            "only containers of the new version remain",
        )


def test_restarted_server_adopts_running_containers(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "keep", min_workers=1, max_workers=1)
    with Live(tmp_path, client, [dep], keep_workers_on_shutdown=True) as first:
        first.until(lambda: any(w.state is WorkerState.IDLE for w in first.registry.all("keep")), "worker ready")
        [worker] = first.registry.all("keep")
        port = first.port
    from gpuserve.backends.docker import managed_containers

    [container] = managed_containers(client, NAMESPACE)  # the server is gone, the worker stays
    assert container.status == "running" and container.labels["gpuserve.worker"] == worker.worker_id
    with Live(tmp_path, client, [dep], port=port) as second:
        body = second.wait("keep", second.run("keep", {}))
        assert body["status"] == "COMPLETED" and body["workerId"] == worker.worker_id
        assert [w.worker_id for w in second.registry.all("keep")] == [worker.worker_id]  # not duplicated
        assert [c.id for c in second.containers(client)] == [container.id]


def test_gpu_endpoint_on_a_host_without_gpus_is_throttled(tmp_path: Path, client: Any) -> None:
    from gpuserve.gpu import inventory

    if inventory():
        pytest.skip("this host has GPUs; the zero-GPU path is what this test checks")
    dep = _deployment(tmp_path, "gpu", max_workers=1, gpu_type="H100")
    with Live(tmp_path, client, [dep]) as live:
        job = live.run("gpu", {})
        live.until(
            lambda: [w.state for w in live.registry.all("gpu")] == [WorkerState.THROTTLED], "worker THROTTLED"
        )
        assert live.http.get("/gpu/health").json()["workers"]["throttled"] == 1
        assert live.containers(client) == []  # no container for a worker without its GPU
        assert live.status("gpu", job)["status"] == "IN_QUEUE"


def test_model_sources_mount_host_cache_read_only_and_a_volume(tmp_path: Path, client: Any) -> None:
    from gpuserve.backends.docker import DockerBackend

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.txt").write_text("w1")
    backend = DockerBackend("http://127.0.0.1:9", WorkerRegistry(), client=client, namespace=NAMESPACE, state_dir=tmp_path / "s")
    try:
        with pytest.raises(ConfigError, match="model_path"):
            backend.configure(_deployment(tmp_path, "bad", model_source="host_cache", model_path=str(tmp_path / "nope")))
        cached = _deployment(tmp_path, "cached", model_source="host_cache", model_path=str(cache))
        volume_name = f"{NAMESPACE}-models"
        on_volume = _deployment(tmp_path, "vol", model_source="volume", model_path=volume_name)
        backend.ensure_volume(volume_name)
        assert client.volumes.get(volume_name).attrs["Labels"]["gpuserve.namespace"] == NAMESPACE
        probe = "import os; p=os.environ['MODEL_PATH']; print(p, sorted(os.listdir(p)), os.access(p, os.W_OK))"
        for dep, expect in ((cached, "/models ['weights.txt'] False"), (on_volume, "/runpod-volume [] True")):
            kwargs = backend._container_kwargs(_probe_worker(dep), dep)
            kwargs.update(command=["python", "-c", probe], detach=False, remove=True, name=None)
            kwargs["labels"] = {**kwargs["labels"], "gpuserve.worker": "probe"}
            out = client.containers.run(**kwargs).decode().strip()
            assert out == expect
    finally:
        backend.shutdown()
    assert [v.name for v in client.volumes.list(filters={"name": volume_name})] == []


def _probe_worker(dep: Deployment) -> Any:
    from gpuserve.backends.docker import _Worker

    return _Worker("probe", dep.endpoint_id, dep.version, "wk_probe", "pending")


def test_build_a_worker_folder_and_deploy_it_to_a_running_endpoint(
    tmp_path: Path, client: Any, pytestconfig: pytest.Config
) -> None:
    import shutil

    from typer.testing import CliRunner

    from gpuserve.cli import app

    folder = tmp_path / "gpu-worker"
    shutil.copytree(pytestconfig.rootpath / "examples" / "gpu_worker", folder)
    tag = f"gpuserve/{NAMESPACE}:example"
    runner = CliRunner()
    built = runner.invoke(app, ["build", str(folder), "--tag", tag])
    assert built.exit_code == 0, built.output
    try:
        assert client.images.get(tag).attrs["Config"]["Cmd"] == ["python", "-u", "/app/handler.py"]
        dep = _deployment(tmp_path, "deployed", max_workers=1)
        with Live(tmp_path, client, [dep]) as live:
            assert live.wait("deployed", live.run("deployed", {}))["output"]["version"] == ""
            done = runner.invoke(app, ["deploy", "deployed", tag, "--url", live.url])
            assert done.exit_code == 0, done.output
            live.until(lambda: not live.runtime.rolling("deployed"), "the rolling update is over")
            body = live.wait("deployed", live.run("deployed", {"x": [1.0] * 16}))
            assert body["status"] == "COMPLETED"
            assert body["output"]["device"] == "python" and body["output"]["weights"] == "seed 0"  # the example model
            bad = httpx.post(f"{live.url}/api/endpoints/deployed/deploy", json={"image": ""})
            assert bad.status_code == 422 and "image must be a non-empty string" in bad.json()["error"]
            refused = runner.invoke(app, ["build", str(tmp_path / "nowhere")])
            assert refused.exit_code == 2 and "does not exist" in " ".join(refused.output.split())
    finally:
        client.images.remove(tag, force=True)


def test_a_server_from_endpoints_yaml_runs_on_the_docker_backend_factory(tmp_path: Path, client: Any) -> None:
    from gpuserve.backends.docker import DockerBackend, docker_backend_factory
    from gpuserve.config.endpoints import parse_endpoints

    dep = _deployment(tmp_path, "yaml")  # writes the handler file
    config = parse_endpoints(
        {"endpoints": [{"id": "yaml", "handler": dep.handler_path, "env": {"VERSION": "y"}, "scaling": {"max_workers": 1}}]},
        tmp_path,
    )
    factory = docker_backend_factory(client=client, namespace=NAMESPACE, retention_s=0.0, stop_timeout_s=3)
    server = Platform.from_config(config, data_dir=tmp_path / "data", settings=SETTINGS, backend=factory)
    with server:
        assert isinstance(server.runtime.backend, DockerBackend)
        assert server.runtime.backend.state_dir == tmp_path / "data" / "docker"
        r = httpx.post(f"{server.url}/v2/yaml/runsync", json={"input": {}}, timeout=60)
        assert r.json()["status"] == "COMPLETED" and r.json()["output"]["version"] == "y"


def test_two_servers_on_one_host_leave_each_others_containers_alone(tmp_path: Path, client: Any) -> None:
    """Each server's namespace comes from its data directory; stopping one removes only its own containers."""
    from gpuserve.backends.docker import docker_backend_factory, managed_containers, namespace_for
    from gpuserve.live.runtime import Endpoint

    factory = docker_backend_factory(client=client, retention_s=0.0, stop_timeout_s=3)
    dirs = [tmp_path / "a", tmp_path / "b"]
    spaces = [namespace_for(d) for d in dirs]
    assert spaces[0] != spaces[1] and namespace_for(dirs[0]) == spaces[0]  # stable per directory
    servers = [
        Platform([Endpoint(_deployment(d, "ep", min_workers=1))], data_dir=d, settings=SETTINGS, backend=factory).start()
        for d in dirs
    ]
    try:
        for space in spaces:
            deadline = time.monotonic() + 120
            while not [c for c in managed_containers(client, space) if c.status == "running"]:
                assert time.monotonic() < deadline, f"no running container in namespace {space}"
                time.sleep(0.2)
        theirs = [c.id for c in managed_containers(client, spaces[1])]
        servers[0].stop()  # removes every container of its namespace, and only those
        assert managed_containers(client, spaces[0]) == []
        still = managed_containers(client, spaces[1])
        assert [c.id for c in still] == theirs and all(c.status == "running" for c in still)
        r = httpx.post(f"{servers[1].url}/v2/ep/runsync", json={"input": {}}, timeout=60)
        assert r.json()["status"] == "COMPLETED"
    finally:
        for server in servers:
            server.stop()
        for space in spaces:
            for c in managed_containers(client, space):
                c.remove(force=True)


def test_a_load_balancing_endpoint_in_containers_from_zero_and_back(tmp_path: Path, client: Any) -> None:
    from dataclasses import replace

    from gpuserve.core.types import EndpointKind, LoadBalancingSpec

    spec = replace(
        support.endpoint_spec("lbd", max_workers=1, idle_timeout_s=1.0, flash_boot=False),
        kind=EndpointKind.LOAD_BALANCER,
        load_balancing=LoadBalancingSpec(hold_timeout_s=60.0),
    )
    dep = Deployment(spec=spec, command=("python", "-u", "-c", lb_server()))
    settings = replace(SETTINGS, lb_health_interval_s=0.1, heartbeat_interval_s=1.0)
    with Live(tmp_path, client, [dep], settings=settings) as live:
        # Held at zero workers while a container starts and its /ping says 204, then answered.
        r = httpx.get(f"{live.url}/lb/lbd/hello?x=1", timeout=90)
        assert r.status_code == 200, r.text + live.all_logs()
        body = r.json()
        assert body["path"] == "/hello?x=1"
        worker = live.registry.get(body["worker"])
        assert worker is not None and worker.first_initializing_s is not None  # a 204 came first
        (container,) = live.containers(client)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert f"PORT={body['port']}" in container.attrs["Config"]["Env"]
        # The backend writes the record at its next poll after the first 200.
        record = support.wait_until(
            lambda: (rec := live.docker.cold_start(body["worker"])) is not None and rec.total_s is not None and rec,
            30,
            "the cold-start record",
        )
        assert record.first_take_s is not None and record.first_take_s > 0  # the first 204 -> the first 200
        assert f"server on port {body['port']}" in live.docker.logs(body["worker"])
        live.until(lambda: not live.containers(client), "the idle container removed", 60)


def test_exec_runs_in_the_container_and_its_log_streams(tmp_path: Path, client: Any) -> None:
    dep = _deployment(tmp_path, "opsep", max_workers=1)
    with Live(tmp_path, client, [dep]) as live:
        worker = live.wait("opsep", live.run("opsep", {}))["workerId"]
        r = live.admin.post(f"/api/workers/{worker}/exec", json={"command": ["sh", "-c", "echo $GPUSERVE_WORKER_ID; exit 4"]})
        assert r.status_code == 200, r.text
        assert r.json()["exitCode"] == 4 and r.json()["output"].split() == [worker]
        # Inside the container: its own hostname, not this machine's.
        (container,) = [c for c in live.containers(client) if c.status == "running"]
        r = live.admin.post(f"/api/workers/{worker}/exec", json={"command": ["hostname"]})
        assert r.json()["output"].strip() == container.attrs["Config"]["Hostname"]
        log = live.admin.get(f"/api/workers/{worker}/logs/stream", params={"since_s": 600}).text
        assert "handler module loaded" in log
        assert live.admin.post("/api/workers/nobody/exec", json={"command": ["true"]}).status_code == 404
