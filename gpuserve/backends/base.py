"""What live backends share: the environment a worker process or container is started with."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import quote

from gpuserve.live.deployment import Deployment

__all__ = ["INHERITED_ENV", "free_port", "inherited_env", "lb_ports", "worker_capacity", "worker_env"]

# The only variables of the server's own environment a worker process inherits: what a process
# needs to run, find its libraries and GPUs and the SDK, and the SDKs' log settings. Nothing else
# (cloud credentials, database URLs, the server's keys) reaches a handler; an endpoint that needs
# more lists it in its `env`, which is added on top.
INHERITED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",  # where the SDK is found when it is not installed (a source checkout)
        "LD_LIBRARY_PATH",  # CUDA and cuDNN libraries on many hosts
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "RUNPOD_DEBUG_LEVEL",
        "RUNPOD_LOG_LEVEL",
        "GPUSERVE_WORKER_HTTP",
    }
)
INHERITED_PREFIXES = ("LC_",)  # locale categories


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` (the server's) that workers inherit: INHERITED_ENV and LC_*."""
    return {k: v for k, v in environ.items() if k in INHERITED_ENV or k.startswith(INHERITED_PREFIXES)}


def worker_env(
    deployment: Deployment,
    worker_id: str,
    token: str,
    server_url: str,
    gpu_label: str = "cpu",
    ping_interval_ms: int = 10_000,
) -> dict[str, str]:
    """The environment Runpod's SDK (and gpuserve's) reads, pointed at this server (protocol §1.1).

    Every URL already holds a `?` because the SDK appends `&job_in_progress=...` and
    `&isStream=...` by string concatenation. The take URL carries the literal worker id,
    since the SDK substitutes only `$ID` there.
    """
    base = f"{server_url.rstrip('/')}/v2/{deployment.endpoint_id}"
    gpu = quote(gpu_label)
    env = dict(deployment.env)
    env.update(
        {
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": token,
            "RUNPOD_ENDPOINT_ID": deployment.endpoint_id,
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/{worker_id}?gpu={gpu}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/{worker_id}/$ID?gpu={gpu}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/{worker_id}/$ID?gpu={gpu}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/{worker_id}?gpu={gpu}",
            "RUNPOD_PING_INTERVAL": str(ping_interval_ms),
            # The SDK's start-up checks dial 8.8.8.8:53, which an offline host cannot reach.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "GPUSERVE_WORKER_ID": worker_id,
            "GPUSERVE_ENDPOINT_ID": deployment.endpoint_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def free_port() -> int:
    """A free local TCP port (the OS picks; the worker binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lb_ports(deployment: Deployment) -> tuple[int, int]:
    """(PORT, PORT_HEALTH) for a load-balancing worker on this host's network: free ports, one unless they differ."""
    port = free_port()
    return port, port if deployment.port_health in (None, deployment.port) else free_port()


def worker_capacity(deployment: Deployment) -> int:
    """Slots a worker shows the controller: a load-balancing worker's concurrency target, else its concurrency."""
    lb = deployment.spec.load_balancing
    return lb.concurrency_target if lb is not None else deployment.spec.concurrency_per_worker
