"""Cold start to first job on the Ray backend against the process backend, same run, same machine.

Starts a local Ray cluster like the tests' (three raylets on 127.0.0.1, 2 declared A100s each),
then alternates the two backends: each repetition sends one /runsync job to an endpoint with zero
workers through a real server (uvicorn on 127.0.0.1, SQLite), so the job waits for a start; the
backend's start record gives the phases, the client the end-to-end latency. The first repetition
of each is dropped (page cache, Ray's first worker process). The peer is the process backend.

`--containers` adds the same handler in the worker image (`gpuserve/worker:latest`, mounted at
/app as the Docker backend does): on the Docker backend (its peer; CPU only, since this host has
no GPU) and on the Ray backend (a container per Ray-placed actor; the cluster's GPUs are
declared, so none is passed into the container).

    .venv/bin/python bench/ray_cold_start.py --repeats 5 [--containers]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray loads: loopback addresses only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import httpx

from gpuserve.backends.process import ProcessBackend
from gpuserve.backends.ray_backend import RayBackend
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.live.deployment import Deployment
from gpuserve.live.runtime import Endpoint
from gpuserve.live.settings import ServerSettings
from gpuserve.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
HANDLER = """
from gpuserve import serverless

def handler(job):
    return {"ok": True}

serverless.start({"handler": handler})
"""
SETTINGS = ServerSettings(poll_timeout_s=5.0, heartbeat_interval_s=1.0, tick_interval_s=0.1, maintenance_interval_s=0.02)
PHASES = ("create_s", "start_s", "runtime_init_s", "first_take_s", "total_s", "e2e_s")
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1, "num_gpus": 2, "resources": {"gpu_type:A100": 1},
    "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1",
}


def _deployment(folder: Path, endpoint_id: str, image: str | None = None, gpu_type: str | None = "A100") -> Deployment:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER))
    spec = EndpointSpec(
        endpoint_id,
        scaling=ScalingSpec(max_workers=1, idle_timeout_s=0.2, scaler=ScalerType.REQUEST_COUNT, scaler_value=1.0),
        policy=PolicySpec("runpod_request_count"),
        gpu_type=gpu_type,
        gpus_per_worker=1,
    )
    return Deployment(spec=spec, handler_path=str(folder / "handler.py"), image=image)


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s} s")
        time.sleep(0.01)


def _one(platform: Platform, http: httpx.Client, endpoint_id: str) -> dict[str, Any]:
    backend: Any = platform.backend
    t0 = time.perf_counter()
    body = http.post(f"/v2/{endpoint_id}/runsync", json={"input": {}}).json()
    e2e_s = time.perf_counter() - t0
    if body.get("status") != "COMPLETED":
        raise RuntimeError(f"job did not complete: {body}")
    wid = str(body["workerId"])
    _until(lambda: not backend.workers(endpoint_id), "worker stopped after its idle timeout")
    _until(lambda: any(r.worker_id == wid for r in backend.cold_starts), "start record")
    record = next(r for r in backend.cold_starts if r.worker_id == wid)
    return {**record.as_dict(), "e2e_s": e2e_s}


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--containers", action="store_true", help="also the worker image: Docker backend and Ray backend")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "ray_cold_start.json")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, was {args.repeats}")
    import ray
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="gpuserve-bench-ray-"))
    cluster = Cluster(initialize_head=True, head_node_args={**NODE_ARGS, "include_dashboard": False})
    platforms: list[Platform] = []
    try:
        for _ in range(2):
            cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="gpuserve", log_to_driver=False, _node_ip_address="127.0.0.1")
        kinds: dict[str, Callable[..., Any]] = {
            "process": lambda reg, url, _s, clock, data: ProcessBackend(
                url, reg, logs_dir=data / "logs", ping_interval_ms=1000, stop_grace_s=5.0, clock=clock
            ),
            "ray": lambda reg, url, _s, clock, data: RayBackend(
                url, reg, address=cluster.address, logs_dir=data / "logs", ping_interval_ms=1000, stop_grace_s=5.0, clock=clock
            ),
        }
        images: dict[str, tuple[str | None, str | None]] = {"process": (None, "A100"), "ray": (None, "A100")}
        if args.containers:
            from gpuserve.backends.docker import DockerBackend

            kinds["docker"] = lambda reg, url, _s, clock, data: DockerBackend(
                url, reg, namespace=f"bench-{os.getpid()}", state_dir=data / "docker", ping_interval_ms=1000,
                now=clock.now_s, stop_timeout_s=5, retention_s=0.0,
            )
            kinds["ray-docker"] = lambda reg, url, _s, clock, data: RayBackend(
                url, reg, address=cluster.address, logs_dir=data / "logs", ping_interval_ms=1000, stop_grace_s=5.0,
                clock=clock, namespace=f"bench-ray-{os.getpid()}", container_gpus=False,
            )
            images.update({"docker": ("gpuserve/worker:latest", None), "ray-docker": ("gpuserve/worker:latest", "A100")})
        servers = {}
        for name, factory in kinds.items():
            image, gpu_type = images[name]
            dep = _deployment(tmp / name, name.replace("-", ""), image, gpu_type)
            platform = Platform([Endpoint(dep)], data_dir=tmp / f"data-{name}", backend=factory, settings=SETTINGS).start()
            platforms.append(platform)
            servers[name] = (platform, httpx.Client(base_url=platform.url, timeout=120))
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in kinds}
        for i in range(args.repeats + 1):  # alternated, so both see the same load; the first of each dropped
            for name, (platform, http) in servers.items():
                row = _one(platform, http, name.replace("-", ""))
                if i > 0:
                    rows[name].append(row)
                print(f"{name} #{i}: total {row['total_s']:.3f} s, e2e {row['e2e_s']:.3f} s", file=sys.stderr)
    finally:
        for platform in platforms:
            platform.stop()
        ray.shutdown()
        cluster.shutdown()
    medians = {name: {k: _median(r, k) for k in PHASES} for name, r in rows.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "medians": medians}, indent=2))
    peer = medians["process"]["total_s"] or float("nan")
    print("| backend | placement (create) | start | runtime init | first job-take | total | /runsync end to end | total / process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in medians.items():
        cells = ["-" if m[k] is None else f"{m[k] * 1000:.0f}" for k in PHASES]
        ratio = (m["total_s"] or float("nan")) / peer
        print(f"| {name} | {' | '.join(cells)} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
