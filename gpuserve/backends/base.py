"""What live backends share: the Deployment they run, the LiveBackend protocol, and the worker environment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol
from urllib.parse import quote

from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerView

__all__ = ["Deployment", "LiveBackend", "worker_env"]

Sdk = Literal["gpuserve", "runpod"]


@dataclass(frozen=True)
class Deployment:
    """What an endpoint runs, beyond its scaling spec: the handler or image, env and SDK flavour.

    `version` identifies what runs; when a new deployment of the same endpoint has another
    version, the backend marks the old workers OUTDATED and replaces them one by one.
    """

    spec: EndpointSpec
    handler_path: str | None = None  # a Python file that calls serverless.start (process backend)
    image: str | None = None  # a Docker image tag (docker backend)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sdk: Sdk = "gpuserve"
    workdir: str | None = None
    python: str | None = None  # interpreter for handler_path (process backend); None: the server's own
    cpu_limit: float | None = None  # cores (docker)
    memory_limit_mib: int | None = None  # (docker)
    model_source: Literal["none", "host_cache", "baked", "volume"] = "none"
    model_path: str | None = None  # host folder (host_cache) or volume name (volume)

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @property
    def endpoint_id(self) -> str:
        return self.spec.endpoint_id

    @property
    def version(self) -> str:
        """A digest of everything that changes what a worker runs (not the scaling numbers)."""
        what = {
            "handler": self.handler_path,
            "image": self.image,
            "env": dict(sorted(self.env.items())),
            "sdk": self.sdk,
            "workdir": self.workdir,
            "gpu_type": self.spec.gpu_type,
            "gpus_per_worker": self.spec.gpus_per_worker,
            "concurrency": self.spec.concurrency_per_worker,
            "model": [self.model_source, self.model_path],
        }
        if self.python is not None:  # only when set, so existing versions keep their digests
            what["python"] = self.python
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


class LiveBackend(Protocol):
    """A Backend (workers + apply) that also manages real workers over their lifetime."""

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]: ...

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None: ...

    def configure(self, deployment: Deployment) -> None:
        """Set (or update, marking old workers OUTDATED) what an endpoint's workers run."""
        ...

    def poll(self, now_s: float) -> None:
        """Reap exited workers, restart crashed ones with back-off, replace OUTDATED ones."""
        ...

    def logs(self, worker_id: str, tail_lines: int = 200) -> str: ...

    def shutdown(self) -> None:
        """Stop every worker this backend started (SIGTERM, wait, SIGKILL)."""
        ...


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
