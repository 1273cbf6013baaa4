"""Deployment: what an endpoint runs beyond its scaling spec (handler or image, env, SDK flavour), with its version."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from gpuserve.core.types import EndpointSpec

__all__ = ["Deployment", "Sdk"]

Sdk = Literal["gpuserve", "runpod"]


@dataclass(frozen=True)
class Deployment:
    """What an endpoint runs, beyond its scaling spec: the handler or image, env and SDK flavour.

    `version` identifies what runs; when a new deployment of the same endpoint has another
    version, the runtime's rolling update marks the old workers OUTDATED and replaces them one by one.
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
    # Load-balancing endpoints: what starts the user's own HTTP server (argv; None: the image's
    # CMD), the ports it listens on inside a container (the process backend picks free local
    # ones and says so in PORT / PORT_HEALTH), and the path its health answers on.
    command: tuple[str, ...] | None = None
    port: int = 80
    port_health: int | None = None  # None: the same as `port`
    health_path: str = "/ping"
    # Any label; a new one rolls the workers onto the same settings (`gpuserve deploy` of a handler
    # file sets it to the file's digest, so an edited file replaces the workers).
    revision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))

    @property
    def endpoint_id(self) -> str:
        return self.spec.endpoint_id

    @property
    def version(self) -> str:
        """A digest of everything that changes what a worker runs (not the scaling numbers)."""
        what: dict[str, object] = {
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
        if self.revision is not None:
            what["revision"] = self.revision
        if self.spec.is_load_balancer:
            what["lb"] = [list(self.command or ()), self.port, self.port_health, self.health_path]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
