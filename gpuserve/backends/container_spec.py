"""A worker container's create arguments (image, command, env, labels, mounts, GPUs): one recipe for the Docker backend and the Ray backend's nodes.

The Docker backend builds them on the server's host; the Ray backend's actor builds them on the
node Ray placed the worker on (`backends/ray_container.py`), with that node's GPU ids. Both then
wrap them in the watchdog (`docker_supervise.with_watchdog`) and hand them to `containers.create`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gpuserve.core.errors import ConfigError
from gpuserve.live.deployment import Deployment

__all__ = [
    "COLD_START_DIR",
    "HANDLER_MOUNT",
    "HOST_CACHE_MOUNT",
    "MANAGED",
    "NAMESPACE",
    "VOLUME_MOUNT",
    "container_kwargs",
    "container_name",
    "namespace_for",
]

MANAGED = "gpuserve.managed"
NAMESPACE = "gpuserve.namespace"
COLD_START_DIR = "/run/gpuserve"  # inside the container: where the SDK writes its start-up instants
HOST_CACHE_MOUNT = "/models"
VOLUME_MOUNT = "/runpod-volume"  # Runpod's network-volume path, so handlers written for it work unchanged
HANDLER_MOUNT = "/app"


def namespace_for(data_dir: Path) -> str:
    """The container namespace of the server whose data directory this is: "dd-" + 12 hex digits of its path."""
    return "dd-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def container_name(namespace: str, worker_id: str) -> str:
    return f"gpuserve-{namespace}-{worker_id}"


def container_kwargs(
    dep: Deployment,
    worker_id: str,
    version: str,
    env: Mapping[str, str],
    *,
    image: str,
    namespace: str,
    cold_start_dir: Path,
    ensure_volume: Callable[[str], None],
    gpu_ids: tuple[int, ...] = (),
    gpu_devices: bool = True,
    port: int | None = None,
    port_health: int | None = None,
) -> dict[str, Any]:
    """`containers.create` keyword arguments for one worker of `dep` (its SDK environment `env` already built).

    `cold_start_dir` is the host folder mounted where the SDK writes `<worker_id>.json`;
    `ensure_volume` creates a named Docker volume (model_source 'volume') unless it exists. The
    GPUs go in as NVIDIA device requests unless `gpu_devices` is False (a node whose GPUs are
    declared to its scheduler but not real); a load-balancing worker is told `port` / `port_health`.
    """
    env = {**env, "GPUSERVE_COLD_START_FILE": f"{COLD_START_DIR}/{worker_id}.json"}
    volumes: dict[str, dict[str, str]] = {str(cold_start_dir): {"bind": COLD_START_DIR, "mode": "rw"}}
    command: list[str] | None = None
    workdir = dep.workdir
    if dep.spec.is_load_balancer:
        # The user's server: `command` if given, else the image's CMD, in the image's WORKDIR
        # (`workdir` names a host folder for the process backend).
        env.update({"PORT": str(port), "PORT_HEALTH": str(port_health if port_health is not None else port)})
        command, workdir = (list(dep.command) if dep.command else None), None
    elif dep.handler_path:
        handler = Path(dep.handler_path)
        if handler.is_file():  # a host file: mount its folder; otherwise a path inside the image
            volumes[str(handler.resolve().parent)] = {"bind": HANDLER_MOUNT, "mode": "ro"}
            command = ["python", "-u", f"{HANDLER_MOUNT}/{handler.name}"]
            workdir = HANDLER_MOUNT
        else:
            command = ["python", "-u", dep.handler_path]
    if dep.model_source == "host_cache":
        if not dep.model_path:
            raise ConfigError("model_path", dep.model_path, "must name a host folder for model_source 'host_cache'")
        volumes[str(Path(dep.model_path).resolve())] = {"bind": HOST_CACHE_MOUNT, "mode": "ro"}
        env.setdefault("MODEL_PATH", HOST_CACHE_MOUNT)
    elif dep.model_source == "volume":
        if not dep.model_path:
            raise ConfigError("model_path", dep.model_path, "must name a Docker volume for model_source 'volume'")
        ensure_volume(dep.model_path)
        volumes[dep.model_path] = {"bind": VOLUME_MOUNT, "mode": "rw"}
        env.setdefault("MODEL_PATH", VOLUME_MOUNT)
    kwargs: dict[str, Any] = {
        "image": image,
        "command": command,
        "name": container_name(namespace, worker_id),
        "environment": env,
        "labels": {
            MANAGED: "true",
            NAMESPACE: namespace,
            "gpuserve.endpoint": dep.endpoint_id,
            "gpuserve.worker": worker_id,
            "gpuserve.version": version,
            "gpuserve.gpus": ",".join(str(i) for i in gpu_ids),
        },
        "network_mode": "host",
        "volumes": volumes,
        "working_dir": workdir,
        "detach": True,
        "init": True,  # docker-init as PID 1: SIGTERM reaches the SDK, zombies are reaped
    }
    if dep.cpu_limit is not None:
        kwargs["nano_cpus"] = int(dep.cpu_limit * 1e9)
    if dep.memory_limit_mib is not None:
        kwargs["mem_limit"] = f"{dep.memory_limit_mib}m"
    if gpu_ids and gpu_devices:
        from docker.types import DeviceRequest  # the docker extra, present wherever containers are made

        kwargs["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])
        ]
    return kwargs
