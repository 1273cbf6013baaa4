"""What live backends share: the environment a worker process or container is started with."""

from __future__ import annotations

from urllib.parse import quote

from gpuserve.live.deployment import Deployment

__all__ = ["worker_env"]


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
