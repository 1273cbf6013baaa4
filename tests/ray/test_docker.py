"""Containers on the Ray backend: an endpoint with an image runs, placed by Ray, as a container on its node (real Ray, real Docker).

Skips when no Docker engine answers, unless GPUSERVE_REQUIRE_DOCKER=1 (CI), where it fails instead.
The cluster's GPUs are declared, not real, so the backend passes none into the containers
(`container_gpus=False`); everything else is what a GPU node does.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.backends.ray_backend import ray_backend_factory
from gpuserve.core.types import WorkerState
from tests.ray.conftest import GPU_TYPE, GPUS_PER_NODE, NODE_ARGS, NODES, RayCluster
from tests.support.docker import docker_fixture, lb_server
from tests.support.live import FAST, Live, code_deployment, wait_until

pytestmark = pytest.mark.docker

NAMESPACE = f"test-ray-{os.getpid()}-{uuid.uuid4().hex[:6]}"
IMAGE = "gpuserve/worker:latest"
SETTINGS = replace(FAST, account_max_workers=None, drain_timeout_s=3.0)

# Holds each job until the release file appears in its (mounted) folder, so jobs are mid-run when a node goes.
HELD = """
import os, time
from gpuserve import serverless

print("worker", os.environ["GPUSERVE_WORKER_ID"], "in a container:", os.path.exists("/.dockerenv"), flush=True)

def handler(job):
    for _ in range(6000):
        if os.path.exists("/app/release"):
            break
        time.sleep(0.05)
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "container": os.path.exists("/.dockerenv")}

serverless.start({"handler": handler})
"""


docker = docker_fixture(NAMESPACE, name="docker")


def _containers(docker: Any) -> dict[str, Any]:
    from gpuserve.backends.docker import managed_containers

    return {c.labels["gpuserve.worker"]: c for c in managed_containers(docker, NAMESPACE)}


def _states(live: Live) -> Counter[WorkerState]:
    return Counter(w.state for w in live.workers("img"))


def test_ray_places_containers_throttles_the_extra_one_and_removes_a_lost_nodes_container(
    tmp_path: Path, ray_cluster: RayCluster, docker: Any
) -> None:
    # Another test may have removed a node: back to the full cluster, so each node holds one worker.
    while len(ray_cluster.nodes) < NODES - 1:
        ray_cluster.nodes.append(ray_cluster.cluster.add_node(**NODE_ARGS))
    ray_cluster.cluster.wait_for_nodes()
    dep = code_deployment(
        tmp_path, "img", HELD, max_workers=NODES + 1, idle_timeout_s=60.0, gpu_type=GPU_TYPE, gpus_per_worker=GPUS_PER_NODE,
    )
    dep = replace(dep, image=IMAGE)
    release = tmp_path / "img" / "release"  # /app/release in the containers (the handler's folder, mounted)
    backend = ray_backend_factory(ray_cluster.address, namespace=NAMESPACE, container_gpus=False)
    with Live(tmp_path, [dep], SETTINGS, backend=backend) as live:
        jobs = [live.run("img", {"n": i}) for i in range(NODES + 1)]
        # One worker per node (each takes both of its GPUs); Ray has no node for the last one.
        live.until(
            lambda: _states(live)[WorkerState.RUNNING] == NODES and _states(live)[WorkerState.THROTTLED] == 1,
            "a worker running on each node and one THROTTLED",
            timeout_s=180,
        )
        running = [w.worker_id for w in live.workers("img") if w.state is WorkerState.RUNNING]
        throttled = next(w.worker_id for w in live.workers("img") if w.state is WorkerState.THROTTLED)
        placement = {wid: live.backend.placement(wid) for wid in running}
        assert len({node for node, _ in placement.values()}) == NODES, placement
        # Each runs as a container of this server's namespace, labelled with its worker; none for the THROTTLED one.
        containers = _containers(docker)
        assert set(containers) == set(running), (containers, running)
        assert all(c.status == "running" and c.image.tags and IMAGE in c.image.tags for c in containers.values())
        some = running[0]
        live.until(lambda: f"worker {some} in a container: True" in live.admin.get(f"/api/workers/{some}/logs").json().get("logs", ""),
                   "the container's log through the operator route")
        record = live.backend.cold_start(some)
        assert record is not None and record.create_s is not None and record.start_s is not None

        # Lose a node (not the head: the driver is attached there): its worker UNHEALTHY, its job requeued, its container removed.
        victim = ray_cluster.nodes[0]
        lost = next(wid for wid, (node, _) in placement.items() if node == victim.node_id)
        held = set(live.registry.get(lost).in_flight)
        assert len(held) == 1
        ray_cluster.cluster.remove_node(victim)
        ray_cluster.nodes.remove(victim)
        live.until(lambda: live.registry.get(lost) is None or live.registry.get(lost).state is WorkerState.UNHEALTHY,
                   "the lost node's worker UNHEALTHY")
        live.until(lambda: all(live.status("img", j)["status"] in ("IN_QUEUE", "IN_PROGRESS") for j in held), "its job requeued")
        wait_until(lambda: lost not in _containers(docker), 60, "the lost worker's container removed")
        assert live.registry.get(throttled).state is WorkerState.THROTTLED  # still no node with two free GPUs

        release.touch()
        done = {j: live.wait("img", j, timeout_s=180) for j in jobs}
        assert all(body["status"] == "COMPLETED" for body in done.values()), done
        assert all(body["output"]["container"] for body in done.values())
        for job in held:  # finished in another container, after a second attempt
            assert done[job]["output"]["worker"] != lost
        survivors = [w for w in running if w != lost]
    # The server stopped its workers: their containers are gone with them.
    left = _containers(docker)
    assert not set(left) & set(survivors), left


def test_a_load_balancing_container_on_a_ray_node_answers_through_the_proxy(tmp_path: Path, ray_cluster: RayCluster, docker: Any) -> None:
    from tests.lb.support import LB_FAST, lb_deployment
    from tests.support.live import API_KEY

    dep = lb_deployment("web", tmp_path / "files", min_workers=0, max_workers=1, idle_timeout_s=60)
    dep = replace(
        dep, image=IMAGE, command=("python", "-c", lb_server("0.0.0.0")), workdir=None, env={},
        spec=replace(dep.spec, gpu_type=GPU_TYPE, gpus_per_worker=1),
    )
    settings = replace(LB_FAST, account_max_workers=None, drain_timeout_s=3.0)
    backend = ray_backend_factory(ray_cluster.address, namespace=NAMESPACE, container_gpus=False)
    with Live(tmp_path, [dep], settings, backend=backend) as live:
        # Held from zero while Ray places the worker and its container's server answers 204, then 200.
        r = httpx.get(f"{live.url}/lb/web/echo", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=180)
        assert r.status_code == 200, r.text + live.all_logs()
        body = r.json()
        worker = body["worker"]
        assert body["container"] is True and body["path"] == "/echo"
        assert live.backend.placement(worker)[0] is not None
        w = live.registry.get(worker)
        assert w is not None and w.first_initializing_s is not None and w.first_take_s is not None
        assert w.first_take_s > w.first_initializing_s
        assert worker in _containers(docker)
        port = w.upstream_url.rsplit(":", 1)[1]
        live.until(lambda: f"server on port {port}" in live.admin.get(f"/api/workers/{worker}/logs").json().get("logs", ""),
                   "the container's log")
        # `gpuserve exec` runs inside the container.
        out = live.admin.post(f"/api/workers/{worker}/exec", json={"command": ["python", "-c", "import os; print(os.path.exists('/.dockerenv'))"]})
        assert out.status_code == 200 and "True" in out.json()["output"], out.text
    assert worker not in _containers(docker)  # removed with its worker


def test_an_image_the_node_cannot_pull_makes_the_worker_unhealthy_naming_it(tmp_path: Path, ray_cluster: RayCluster, docker: Any) -> None:
    missing = "127.0.0.1:9/gpuserve-missing:v1"  # nothing listens on port 9: the registry is unreachable
    dep = replace(code_deployment(tmp_path, "bad", HELD, max_workers=1, gpu_type=GPU_TYPE, gpus_per_worker=1), image=missing)
    backend = ray_backend_factory(ray_cluster.address, namespace=NAMESPACE, container_gpus=False)
    with Live(tmp_path, [dep], SETTINGS, backend=backend) as live:
        live.run("bad", {})
        live.until(lambda: any(w.state is WorkerState.UNHEALTHY for w in live.registry.all("bad")), "the worker UNHEALTHY", 120)
        failure = next(w.failure for w in live.registry.all("bad") if w.state is WorkerState.UNHEALTHY)
        assert failure is not None and missing in failure and "unreachable" in failure, failure
        assert not [wid for wid in _containers(docker) if wid.startswith("bad-")]


def test_serve_with_no_container_gpus_runs_an_image_endpoint_on_declared_gpus(tmp_path: Path, ray_cluster: RayCluster, docker: Any) -> None:
    """`gpuserve serve --backend ray --no-container-gpus`: the flag reaches the backend, or Docker is asked for GPUs this host lacks."""
    import signal

    from gpuserve.backends.container_spec import namespace_for
    from gpuserve.backends.docker import managed_containers
    from tests.support.live import serve_process, stop_process

    (tmp_path / "handler.py").write_text(
        "import os\nfrom gpuserve import serverless\n\n"
        "serverless.start({'handler': lambda job: {'container': os.path.exists('/.dockerenv'), 'n': job['input']['n']}})\n"
    )
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        "server: {heartbeat_interval_s: 1, drain_timeout_s: 3, account_max_workers: null}\n"
        "endpoints:\n"
        f"  - {{id: img, handler: handler.py, image: '{IMAGE}', gpu_type: {GPU_TYPE}, gpus_per_worker: 1,\n"
        "     scaling: {min_workers: 0, max_workers: 1, idle_timeout_s: 60}}\n"
    )
    data_dir = tmp_path / "data"
    proc, url = serve_process(config, data_dir, "--backend", "ray", "--ray-address", ray_cluster.address, "--no-container-gpus")
    try:
        body = httpx.post(f"{url}/v2/img/runsync?wait=150000", json={"input": {"n": 7}}, timeout=180).json()
        assert body["status"] == "COMPLETED" and body["output"] == {"container": True, "n": 7}, body
    finally:
        stop_process(proc, signal.SIGTERM)
    wait_until(lambda: not managed_containers(docker, namespace_for(data_dir)), 60, "the server's container removed with it")
