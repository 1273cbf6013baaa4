"""Load-balancing endpoints on the Ray backend: the user's server started on a Ray node, reached through the server's proxy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx

from gpuserve.backends.ray_backend import ray_backend_factory
from gpuserve.core.types import WorkerState
from tests.lb.support import LB_FAST, lb_deployment
from tests.ray.conftest import GPU_TYPE, RayCluster, actor_gone
from tests.support.live import API_KEY, Live, wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SETTINGS = replace(LB_FAST, account_max_workers=None, drain_timeout_s=3.0)


def test_lb_worker_on_a_ray_node_answers_through_the_proxy_and_a_sick_one_is_replaced(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    files = tmp_path / "files"
    dep = lb_deployment("gen", files, load_s=1.0, min_workers=0, max_workers=1, idle_timeout_s=60)
    dep = replace(dep, spec=replace(dep.spec, gpu_type=GPU_TYPE, gpus_per_worker=1))
    with Live(tmp_path, [dep], SETTINGS, backend=ray_backend_factory(ray_cluster.address)) as live:
        # From zero: the request is held while Ray places the worker and its server loads (204), then answered.
        r = httpx.post(f"{live.url}/lb/gen/echo?q=1", content=b"hello", headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text + live.all_logs()
        body = r.json()
        worker = body["worker"]
        assert body["path"] == "/echo" and body["query"] == "q=1" and body["length"] == 5
        node, gpus = live.backend.placement(worker)
        assert node is not None and len(gpus) == 1  # placed by Ray on a node with a free A100
        w = live.registry.get(worker)
        assert w is not None and w.upstream_url is not None and w.health_url is not None
        port = int(w.upstream_url.rsplit(":", 1)[1])
        assert w.health_url == f"{w.upstream_url}/ping"
        # Its health said 204 (loading) first, then 200: the cold start runs from one to the other.
        assert w.first_initializing_s is not None and w.first_take_s is not None and w.first_take_s > w.first_initializing_s
        record = live.backend.cold_start(worker)
        assert record is not None and record.create_s is not None and record.total_s is not None
        # The server's own output comes back through the operator's logs route.
        live.until(lambda: f"listening on port {port}" in live.admin.get(f"/api/workers/{worker}/logs").json().get("logs", ""),
                   "the worker's log")

        # A server whose /ping fails is taken out of the pool, its actor ended, and a new one started on Ray.
        (files / f"sick-{worker}").touch()
        live.until(lambda: live.registry.get(worker) is None or live.registry.get(worker).state is WorkerState.UNHEALTHY,
                   "the sick worker UNHEALTHY", timeout_s=60)
        r = httpx.get(f"{live.url}/lb/gen/echo", headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text + live.all_logs()
        assert r.json()["worker"] != worker

        wait_until(lambda: actor_gone(worker), 60, "the sick worker's actor gone")
