"""The node side of a Ray-backend worker whose endpoint names an image: a Ray actor that runs the worker as a container on its node.

Ray places the actor as for a handler (`backends/ray_backend.py`: a placement group with the
worker's GPUs and GPU type); the actor then does on its node what the Docker backend does on its
host, through the same recipe (`container_spec.container_kwargs`: env, labels, mounts, NVIDIA
device requests for the GPUs Ray gave it) under the same watchdog (`docker_supervise.with_watchdog`,
which ends the container once the server is unreachable). The worker inside reaches the control
plane over HTTP like every other. What the actor adds:

- the container's output, followed by a thread into the node-local log file that `report` sends
  on (the handler actor's own log shipping, `WorkerHost._read_log`);
- a guard process (`backends/container_guard.py ACTOR_PID CONTAINER_ID`), detached from the actor, that removes the container the moment the actor's process ends (the
  backend kills the actor of a crashed, lost or stopped worker; Ray kills it with its server's Ray
  job or its node), so no container outlives its worker by more than that;
- `stop`: `docker stop` with the drain grace (SIGTERM, the SDK finishes its job), then removal.

Runs in a Ray worker process on a node with Docker and the docker SDK (the `docker` extra).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpuserve.backends import container_guard
from gpuserve.backends.ray_host import WorkerHost, node_free_port
from gpuserve.live.deployment import Deployment

__all__ = ["ContainerHost", "ContainerOptions"]

LOG_FOLLOW_JOIN_S = 2.0  # how long a report of an exited container waits for its last output
GONE_EXIT_CODE = 137  # a container removed from under the actor reads as killed
GUARD_SCRIPT = str(Path(container_guard.__file__).resolve())


ContainerOptions = Mapping[str, Any]  # namespace, server_url, ping_interval_s, watchdog_intervals, gpu_devices, log_max_bytes


class ContainerHost(WorkerHost):
    """One worker on one node as a container: its id, its followed log and its start-up report in a node-local folder."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        self.cold_dir = self.folder / "coldstart"  # mounted at container_spec.COLD_START_DIR
        self.cold_dir.mkdir()
        self.cold_start_path = self.cold_dir / f"{worker_id}.json"
        self.client: Any = None
        self.container: Any = None
        self._follower: threading.Thread | None = None

    def start_container(
        self, dep: Deployment, version: str, env: Mapping[str, str], options: ContainerOptions
    ) -> dict[str, Any]:
        """Pull (unless present), create and start the worker's container; where it runs and how long each step took."""
        import ray

        from gpuserve.backends.container_spec import MANAGED, NAMESPACE, container_kwargs
        from gpuserve.backends.docker import docker_client
        from gpuserve.backends.docker_supervise import with_watchdog
        from gpuserve.backends.images import ensure_image

        assert dep.image is not None
        namespace = str(options["namespace"])
        self.client = client = docker_client()
        t0 = time.monotonic()
        pulled = ensure_image(client, dep.image)
        t1 = time.monotonic()
        gpu_ids = tuple(int(g) for g in ray.get_gpu_ids() if str(g).isdigit())
        port = port_health = None
        if dep.spec.is_load_balancer:
            port = node_free_port()
            port_health = port if dep.port_health in (None, dep.port) else node_free_port()

        def ensure_volume(name: str) -> None:
            from docker.errors import NotFound

            try:
                client.volumes.get(name)
            except NotFound:
                client.volumes.create(name=name, labels={MANAGED: "true", NAMESPACE: namespace})

        kwargs = container_kwargs(
            dep, self.worker_id, version, env, image=dep.image, namespace=namespace, cold_start_dir=self.cold_dir,
            ensure_volume=ensure_volume, gpu_ids=gpu_ids, gpu_devices=bool(options["gpu_devices"]),
            port=port, port_health=port_health,
        )
        kwargs = with_watchdog(
            kwargs, client, str(options["server_url"]), float(options["ping_interval_s"]), int(options["watchdog_intervals"])
        )
        self.container = client.containers.create(**kwargs)
        self._guard(self.container.id)  # from here on, the container goes with this actor
        t2 = time.monotonic()
        self.container.start()
        t3 = time.monotonic()
        self._follower = threading.Thread(
            target=self._follow, args=(int(options["log_max_bytes"]),), name="gpuserve-container-log", daemon=True
        )
        self._follower.start()
        answer: dict[str, Any] = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": None,
            "container_id": self.container.id,
            "gpu_ids": list(gpu_ids),
            "pull_s": round(t1 - t0, 4) if pulled is not None else None,
            "container_create_s": round(t2 - t1, 4),
            "container_start_s": round(t3 - t2, 4),
        }
        if port is not None:
            address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            answer.update({"address": address, "port": port, "port_health": port_health})
        self.placed = answer  # a server adopting this worker asks `where`
        return answer

    def report(self) -> dict[str, Any]:
        code = self._exit_code()
        if code is not None and self._follower is not None:
            self._follower.join(LOG_FOLLOW_JOIN_S)  # its last lines, before the exit is told
        return {"log": self._read_log(), "cold_start": self._cold_start(), "exit_code": code}

    def stop(self, grace_s: float) -> dict[str, Any]:
        """`docker stop` (SIGTERM, SIGKILL after `grace_s`), the last report, then the container and the folder go."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop(timeout=max(1, math.ceil(grace_s)))
        last = self.report()
        self.cleanup()
        return last

    def exec(self, argv: Sequence[str], timeout_s: float, max_output_bytes: int) -> tuple[int | None, bytes, bool]:
        """`argv` inside the running container: (exit code or None on timeout, output, truncated)."""
        if self.container is None:
            return 127, b"no container runs\n", False
        done: dict[str, Any] = {}

        def run() -> None:
            done["result"] = self.container.exec_run(list(argv), stdout=True, stderr=True)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout_s)
        if "result" not in done:
            return None, b"", False
        code, out = done["result"].exit_code, done["result"].output or b""
        return code, out[:max_output_bytes], len(out) > max_output_bytes

    def cleanup(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.remove(force=True)
        super().cleanup()

    # -- internals ------------------------------------------------------------------------------

    def _exit_code(self) -> int | None:
        if self.container is None:
            return None
        from docker.errors import NotFound

        try:
            self.container.reload()
        except NotFound:
            return GONE_EXIT_CODE
        except Exception:
            return None  # the engine did not answer this time: ask again at the next report
        if self.container.status not in ("exited", "dead"):
            return None
        return int((self.container.attrs.get("State") or {}).get("ExitCode", GONE_EXIT_CODE))

    def _follow(self, log_max_bytes: int) -> None:
        """The container's output into worker.log until it ends; past `log_max_bytes` the file moves to worker.log.1."""
        out = open(self.log_path, "ab")
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                out.write(chunk)
                out.flush()
                if out.tell() > log_max_bytes:
                    out.close()
                    os.replace(self.log_path, str(self.log_path) + ".1")
                    out = open(self.log_path, "ab")
        except Exception:
            pass  # the container is gone; what it wrote is in the file
        finally:
            out.close()

    def _guard(self, container_id: str) -> None:
        subprocess.run(
            [sys.executable, GUARD_SCRIPT, str(os.getpid()), container_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30,
        )
