"""`gpuserve serve --backend ray`: a real server process on a real Ray cluster, jobs end to end, logs back, no worker outliving it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from tests.ray.conftest import GPU_TYPE, RayCluster, actor_gone
from tests.support.live import serve_process, stop_process, wait_until

HANDLER = """
import os
from gpuserve import serverless

print("hello from", os.environ["GPUSERVE_WORKER_ID"], flush=True)

def handler(job):
    return {"doubled": 2 * job["input"]["n"], "worker": os.environ["GPUSERVE_WORKER_ID"]}

serverless.start({"handler": handler})
"""


def test_serve_with_the_ray_backend_runs_jobs_end_to_end(tmp_path: Path, ray_cluster: RayCluster) -> None:
    import ray

    (tmp_path / "handler.py").write_text(textwrap.dedent(HANDLER))
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        "server: {heartbeat_interval_s: 1, admin_keys: [sk-ops], drain_timeout_s: 3}\n"
        "endpoints:\n"
        f"  - {{id: double, handler: handler.py, gpu_type: {GPU_TYPE}, gpus_per_worker: 1,\n"
        "     scaling: {min_workers: 0, max_workers: 2, idle_timeout_s: 60}}\n"
    )
    proc, url = serve_process(config, tmp_path / "data", "--backend", "ray", "--ray-address", ray_cluster.address)
    try:
        body = httpx.post(f"{url}/v2/double/runsync?wait=90000", json={"input": {"n": 21}}, timeout=120).json()
        assert body["status"] == "COMPLETED" and body["output"]["doubled"] == 42, body
        worker = body["output"]["worker"]
        # `gpuserve logs` reads what the worker printed on its Ray node.
        def logged() -> bool:
            out = subprocess.run(
                [sys.executable, "-m", "gpuserve.cli", "logs", worker, "--url", url, "--api-key", "sk-ops"],
                capture_output=True, text=True, timeout=60,
            )
            return f"hello from {worker}" in out.stdout

        wait_until(logged, 30, "the worker's log through gpuserve logs")
        assert ray.get_actor(worker, namespace="gpuserve") is not None  # the worker is a Ray actor
    finally:
        stop_process(proc, signal.SIGTERM)

    # The server is gone, and its worker's actor with it.
    wait_until(lambda: actor_gone(worker), 30, "the worker's actor gone with its server")
