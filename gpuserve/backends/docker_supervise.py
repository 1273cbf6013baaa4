"""Containers never outlive their server: a watchdog wrapped around each worker's command, and a reaper at server start.

A container is not the server's child, so neither the process backend's launcher (supervise.py)
nor a parent-pid check can end it when the server dies. Two halves instead:

- In the container, `container_watchdog.py` (mounted read-only) runs the worker's command and
  SIGKILLs it once the server has been unreachable for `intervals` heartbeat intervals, so the
  container stops: a kill -9 of the server leaves no worker running (the runpod SDK never exits by
  itself). `with_watchdog` rewrites a container's create arguments to run under it.
- At start, `reap_stopped` removes every container of this server's namespace label that is not
  running (stopped by its watchdog, crashed, created and never started, or paused for flash boot
  by a server that is gone); the running ones are adopted or removed by the backend as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gpuserve.backends import container_watchdog

if TYPE_CHECKING:
    import docker as docker_sdk

__all__ = ["WATCHDOG_INTERVALS", "WATCHDOG_PATH", "reap_stopped", "with_watchdog"]

log = logging.getLogger("gpuserve.docker")

# A worker whose server is unreachable this many heartbeat intervals in a row ends (100 s at the
# default 10 s interval: longer than a server restart, far shorter than a GPU held for ever).
WATCHDOG_INTERVALS = 10
WATCHDOG_PATH = "/run/gpuserve-watchdog.py"  # where the script is mounted in the container
_SCRIPT = str(Path(container_watchdog.__file__).resolve())


def _server_address(server_url: str) -> tuple[str, int]:
    parts = urlsplit(server_url)
    if not parts.hostname:
        raise ValueError(f"server_url has no host, was {server_url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _argv(client: docker_sdk.DockerClient, image: str, command: list[str] | None) -> list[str] | None:
    """What the container would run: the image's ENTRYPOINT, then `command` or the image's CMD; None when unknown."""
    try:
        config = client.images.get(image).attrs.get("Config") or {}
    except Exception as exc:
        log.warning("cannot read the command of image %s (%s): its workers run without the watchdog", image, exc)
        return None
    argv = list(config.get("Entrypoint") or []) + list(command or config.get("Cmd") or [])
    return argv or None


def with_watchdog(
    kwargs: dict[str, Any], client: docker_sdk.DockerClient, server_url: str, interval_s: float, intervals: int
) -> dict[str, Any]:
    """Container create arguments whose command runs under the watchdog (unchanged when `intervals` is 0 or the command is unknown)."""
    if intervals <= 0:
        return kwargs
    command = kwargs.get("command")
    argv = _argv(client, str(kwargs["image"]), list(command) if command else None)
    if not argv:
        return kwargs
    host, port = _server_address(server_url)
    volumes = dict(kwargs.get("volumes") or {})
    volumes[_SCRIPT] = {"bind": WATCHDOG_PATH, "mode": "ro"}
    return {
        **kwargs,
        "volumes": volumes,
        # The image's interpreter, isolated (-I -S): the script needs only the standard library.
        "entrypoint": ["python", "-I", "-S", WATCHDOG_PATH, host, str(port), repr(interval_s), str(intervals), "--"],
        "command": argv,
    }


def reap_stopped(client: docker_sdk.DockerClient, namespace: str) -> list[str]:
    """Remove this namespace's containers that are not running (left by a server that is gone); their names."""
    from gpuserve.backends.docker import managed_containers  # the one label query, beside the backend

    removed = []
    for container in managed_containers(client, namespace):
        if container.status == "running":
            continue
        try:
            container.remove(force=True)
        except Exception as exc:
            log.warning("could not remove leftover container %s: %s", container.name, exc)
            continue
        removed.append(str(container.name))
    if removed:
        log.info("removed %d stopped container(s) a previous server of namespace %r left", len(removed), namespace)
    return removed
