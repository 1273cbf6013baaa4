"""Containers never outlive their server: kill -9 of a Docker-backend `gpuserve serve` with runpod-SDK workers.

Each container's watchdog (backends/container_watchdog.py) ends its worker once the server has been
unreachable for WATCHDOG_INTERVALS heartbeat intervals, and the restarted server removes the
stopped containers of its namespace at start (backends/docker_supervise.py). The runpod SDK itself
never exits when its server goes away. Skips without a Docker engine, unless GPUSERVE_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.backends.container_watchdog import SERVER_LOST_EXIT
from gpuserve.backends.docker_supervise import WATCHDOG_INTERVALS
from tests.support.live import HANDLERS, serve_process, stop_process, wait_until

pytestmark = pytest.mark.docker

RUNPOD_IMAGE = "gpuserve/worker-runpod:latest"  # built by scripts/docker-setup.sh
HEARTBEAT_S = 1.0
WORKERS = 2


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from gpuserve.backends.docker import DockerUnavailableError, docker_client

    try:
        docker = docker_client()
        docker.images.get(RUNPOD_IMAGE)
    except Exception as exc:
        if os.environ.get("GPUSERVE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"GPUSERVE_REQUIRE_DOCKER=1 but Docker or {RUNPOD_IMAGE} is not usable: {exc}")
        reason = exc if isinstance(exc, DockerUnavailableError) else f"{RUNPOD_IMAGE} missing (scripts/docker-setup.sh): {exc}"
        pytest.skip(f"no usable Docker engine: {reason}")
    yield docker


def _containers(client: Any, namespace: str) -> list[Any]:
    from gpuserve.backends.docker import managed_containers

    return managed_containers(client, namespace)


def _running(client: Any, namespace: str) -> list[Any]:
    return [c for c in _containers(client, namespace) if c.status == "running"]


def test_kill_9_of_a_docker_server_stops_its_runpod_containers_and_a_restart_removes_them(tmp_path: Path, client: Any) -> None:
    from gpuserve.backends.docker import namespace_for

    config = tmp_path / "endpoints.yaml"

    def write_config(min_workers: int) -> None:
        config.write_text(
            f"server: {{heartbeat_interval_s: {HEARTBEAT_S}, drain_timeout_s: 3}}\n"
            "endpoints:\n"
            f"  rp: {{image: {RUNPOD_IMAGE}, handler: {HANDLERS / 'echo_runpod.py'}, sdk: runpod,"
            f" scaling: {{min_workers: {min_workers}, max_workers: {WORKERS}, idle_timeout_s: 60}}}}\n"
        )

    write_config(WORKERS)
    data = tmp_path / "data"
    namespace = namespace_for(data)
    proc, url = serve_process(config, data, "--backend", "docker")
    try:
        # The runpod SDK in each container takes jobs from this server.
        answer = httpx.post(f"{url}/v2/rp/runsync", json={"input": {"n": 1}}, timeout=120).json()
        assert answer["status"] == "COMPLETED" and answer["output"] == {"echo": {"n": 1}}, answer
        before = wait_until(lambda: len(r := _running(client, namespace)) == WORKERS and r, timeout_s=120, what="both workers")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    killed_s = time.monotonic()
    # Gone within the watchdog's intervals (plus a few for the probe's own timing and docker's bookkeeping).
    within_s = (WATCHDOG_INTERVALS + 5) * HEARTBEAT_S
    wait_until(lambda: not _running(client, namespace), timeout_s=within_s, what=f"every container to stop within {within_s:g} s")
    stopped_after_s = time.monotonic() - killed_s
    left = {c.id: c for c in _containers(client, namespace)}
    assert set(left) == {c.id for c in before}  # all still there, stopped, none running
    for container in left.values():
        assert container.attrs["State"]["ExitCode"] == SERVER_LOST_EXIT, container.attrs["State"]
        assert f"unreachable for {WATCHDOG_INTERVALS} heartbeat intervals" in container.logs(tail=20).decode(errors="replace")
    assert stopped_after_s >= (WATCHDOG_INTERVALS - 1) * HEARTBEAT_S  # not before the server was missed that long
    # The next server on this data dir (scaled to zero, so it starts none of its own) removes what the first left.
    write_config(0)
    proc, _url = serve_process(config, data, "--backend", "docker")
    try:
        assert _containers(client, namespace) == []  # removed at start, before it answered
    finally:
        stop_process(proc, signal.SIGTERM)
    leftovers = _containers(client, namespace)
    for container in leftovers:  # cleanup: nothing of this test stays on the engine
        container.remove(force=True)
    assert leftovers == [], [c.name for c in leftovers]
