"""Cold start to first job, phase by phase: process workers, containers (cold), flash-boot revivals (pause, stop).

Each repetition sends one /runsync job to an endpoint that has zero workers, so the job waits
for a start; the backend's start record gives the phases, the client the end-to-end latency.
The peer, measured in the same run: a bare `docker run --rm gpuserve/base:bookworm true`.
The medians are written as a simulator cold-start profile (scenarios/profiles/<name>.yaml).

    .venv/bin/python bench/cold_start.py --repeats 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gpuserve.backends.docker import DockerBackend, docker_client, managed_containers
from gpuserve.backends.docker_images import BASE_IMAGE, ensure_worker_image
from gpuserve.backends.process import ProcessBackend
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
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


def _deployment(folder: Path, endpoint_id: str) -> Deployment:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER))
    spec = EndpointSpec(
        endpoint_id,
        scaling=ScalingSpec(max_workers=1, idle_timeout_s=0.2, scaler=ScalerType.REQUEST_COUNT, scaler_value=1.0),
        policy=PolicySpec("runpod_request_count"),
    )
    return Deployment(spec=spec, handler_path=str(folder / "handler.py"))


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s} s")
        time.sleep(0.01)


def _serve(make_backend: Callable[[str, WorkerRegistry], Any], dep: Deployment, data: Path) -> tuple[Platform, Any]:
    platform = Platform(
        [Endpoint(dep)],
        data_dir=data / dep.endpoint_id,
        backend=lambda registry, url, _settings, _clock, _data: make_backend(url, registry),
        settings=SETTINGS,
    ).start()
    return platform, platform.backend


def _runsync(http: httpx.Client, endpoint_id: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = http.post(f"/v2/{endpoint_id}/runsync", json={"input": {}})
    e2e_s = time.perf_counter() - t0
    body = r.json()
    if body.get("status") != "COMPLETED":
        raise RuntimeError(f"job did not complete: {body}")
    return str(body["workerId"]), e2e_s


def bench_process(repeats: int, tmp: Path) -> list[dict[str, Any]]:
    dep = _deployment(tmp / "proc", "proc")
    server, backend = _serve(
        lambda url, reg: ProcessBackend(url, reg, logs_dir=tmp / "proc-logs", ping_interval_ms=1000), dep, tmp
    )
    rows = []
    try:
        http = httpx.Client(base_url=server.url, timeout=60)
        for _ in range(repeats + 1):  # the first one warms the page cache and is dropped
            wid, e2e_s = _runsync(http, "proc")
            _until(lambda: not backend.workers("proc"), "process worker stopped")
            _until(lambda w=wid: (r := backend.cold_start(w)) is not None and r.total_s is not None, "record")
            rows.append({**backend.cold_start(wid).as_dict(), "e2e_s": e2e_s})
    finally:
        server.stop()
    return rows[1:]


def bench_docker(client: Any, repeats: int, tmp: Path, mode: str) -> list[dict[str, Any]]:
    """mode: cold (no retention), pause or stop (flash boot: the first start is cold, the rest revive)."""
    dep = _deployment(tmp / f"docker-{mode}", f"dk-{mode}")
    retention_s = 0.0 if mode == "cold" else 600.0
    flash_mode = "stop" if mode == "stop" else "pause"
    server, backend = _serve(
        lambda url, reg: DockerBackend(
            url, reg, client=client, namespace=f"bench-{mode}", retention_s=retention_s, flash_mode=flash_mode,
            state_dir=tmp / f"state-{mode}", ping_interval_ms=1000, stop_timeout_s=5,
        ),
        dep,
        tmp,
    )
    rows = []
    try:
        http = httpx.Client(base_url=server.url, timeout=60)
        for _ in range(repeats + 1):
            _, e2e_s = _runsync(http, dep.endpoint_id)
            n = len(backend.cold_starts)
            _until(lambda: not backend.workers(dep.endpoint_id) and backend.idle(), "worker retired")
            if mode != "cold":
                _until(lambda: len(backend.retained()) == 1, "worker retained")
            else:
                _until(lambda: not managed_containers(client, "bench-cold"), "container removed")
            _until(lambda n=n: len(backend.cold_starts) >= n, "start record")
            rows.append({**backend.cold_starts[-1].as_dict(), "e2e_s": e2e_s})
    finally:
        server.stop()
    return rows[1:]  # cold: the first warms caches; flash: the first is the cold start that others revive


def bench_peer(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", BASE_IMAGE, "true"], check=True, capture_output=True)
        rows.append({"total_s": time.perf_counter() - t0})
    return rows[1:]


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def write_profile(path: Path, name: str, cold: dict[str, float | None], flash: dict[str, float | None], command: str) -> None:
    """A simulator cold-start profile (same fields as scenarios/profiles/default.yaml) from the medians."""
    container_start_s = (cold["create_s"] or 0.0) + (cold["start_s"] or 0.0)
    runtime_init_s = (cold["runtime_init_s"] or 0.0) + (cold["first_take_s"] or 0.0)
    text = f"""\
# Measured on this host by bench/cold_start.py: a gpuserve worker container (image present, no model)
# from `docker create` to its first job-take. Regenerate with: {command}
description: measured docker worker cold start on host {socket.gethostname()}, image cached, no model weights
source: >-
  bench/cold_start.py medians: create {cold['create_s']:.4f} s + start {cold['start_s']:.4f} s = container_start_s;
  runtime init {cold['runtime_init_s']:.4f} s + first job-take {cold['first_take_s']:.4f} s = runtime_init_s;
  flash boot by docker unpause to the first job-take {flash['total_s']:.4f} s = flash_resume_s
name: {name}
image: gpuserve-worker
image_size_gb: 0.0                 # built on the host, never pulled
pull_bandwidth_gb_s: 1.0
container_start_s: {container_start_s:.4f}
runtime_init_s: {runtime_init_s:.4f}
model_size_gb: 0.0
model_source: host_cache
flash_resume_s: {flash['total_s']:.4f}
flash_retention_s: 60.0            # DockerBackend's default retention_s
"""
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "cold_start.json")
    parser.add_argument("--profile-name", default=f"{socket.gethostname()}-measured")
    parser.add_argument("--no-profile", action="store_true", help="do not write scenarios/profiles/<name>.yaml")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, was {args.repeats}")
    client = docker_client()
    ensure_worker_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="gpuserve-bench-"))
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        results["docker run (peer)"] = bench_peer(args.repeats)
        results["process"] = bench_process(args.repeats, tmp)
        results["container cold"] = bench_docker(client, args.repeats, tmp, "cold")
        results["flash boot (unpause)"] = bench_docker(client, args.repeats, tmp, "pause")
        results["flash boot (start)"] = bench_docker(client, args.repeats, tmp, "stop")
        results["docker run (peer, again)"] = bench_peer(args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {name: {k: _median(rows, k) for k in PHASES} for name, rows in results.items()}
    peer = statistics.median(
        [r["total_s"] for r in results["docker run (peer)"] + results["docker run (peer, again)"]]
    )
    print(f"cold start to first job, medians of {args.repeats} runs (ms); peer `docker run --rm {BASE_IMAGE} true`")
    print("| start | create | start/unpause | runtime init | first take | total | /runsync e2e | total / peer |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in medians.items():
        ratio = "-" if m["total_s"] is None else f"{m['total_s'] / peer:.2f}"
        print(
            f"| {name} | {_fmt(m['create_s'])} | {_fmt(m['start_s'])} | {_fmt(m['runtime_init_s'])} | "
            f"{_fmt(m['first_take_s'])} | {_fmt(m['total_s'])} | {_fmt(m['e2e_s'])} | {ratio} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"peer_s": peer, "medians": medians, "runs": results}, indent=1, default=str))
    print(f"raw runs: {args.out}")
    if not args.no_profile:
        command = "python bench/cold_start.py " + " ".join(sys.argv[1:])
        path = ROOT / "scenarios" / "profiles" / f"{args.profile_name}.yaml"
        write_profile(path, args.profile_name, medians["container cold"], medians["flash boot (unpause)"], command.strip())
        print(f"simulator profile: {path}")


if __name__ == "__main__":
    main()
