"""Extra workers on the Docker backend: only for an image the engine holds, never for one it would have to pull.

A real engine and the live server. Skips when no Docker engine answers, unless
GPUSERVE_REQUIRE_DOCKER=1 (CI), where it fails instead.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpuserve.live.deployment import Deployment
from gpuserve.live.settings import ServerSettings
from tests.support import live as support
from tests.support.docker import docker_fixture

pytestmark = pytest.mark.docker

NAMESPACE = f"test-extra-{os.getpid()}-{uuid.uuid4().hex[:6]}"
SETTINGS = ServerSettings(poll_timeout_s=2.0, heartbeat_interval_s=0.5, tick_interval_s=0.2, maintenance_interval_s=0.05)
# Nothing listens on port 9 of loopback: a pull of this is refused at once, and the engine never holds it.
ABSENT_IMAGE = "127.0.0.1:9/gpuserve-test/absent:never"

GATED = """
import os, time
from gpuserve import serverless


def handler(job):
    for _ in range(6000):  # at most 60 s
        if os.path.exists("/app/go"):  # the handler's host folder, mounted at /app
            break
        time.sleep(0.01)
    return {"worker": os.environ["GPUSERVE_WORKER_ID"]}


serverless.start({"handler": handler})
"""


client = docker_fixture(NAMESPACE)


def _deployment(tmp_path: Path, endpoint_id: str, image: str | None = None) -> Deployment:
    folder = tmp_path / endpoint_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(GATED))
    spec = support.endpoint_spec(endpoint_id, max_workers=1, extra_workers=2, idle_timeout_s=30.0)
    return Deployment(spec=spec, handler_path=str(folder / "handler.py"), image=image)


def test_extra_workers_start_only_when_the_engine_holds_the_image(tmp_path: Path, client: Any) -> None:
    from gpuserve.backends.docker import docker_backend_factory

    assert ABSENT_IMAGE not in {t for i in client.images.list() for t in i.tags}
    absent = _deployment(tmp_path, "absent", image=ABSENT_IMAGE)
    cached = _deployment(tmp_path, "cached")  # the worker image, built by the fixture
    factory = docker_backend_factory(
        client=client, namespace=NAMESPACE, state_dir=tmp_path / "state", retention_s=0.0, stop_timeout_s=3
    )
    settings = replace(SETTINGS, account_max_workers=None)
    # "absent" is configured first: its image lookup is queued before "cached"'s on the backend's one watch thread.
    with support.Live(tmp_path, [absent, cached], settings, backend=factory, keys=(), admin_keys=()) as live:
        rt = live.runtime
        live.until(lambda: live.backend.image_cached("cached"), "the worker image found in the engine")
        assert not live.backend.image_cached("absent")
        absent_jobs = [live.run("absent", {}) for _ in range(3)]
        cached_jobs = [live.run("cached", {}) for _ in range(3)]
        # 3 jobs, 1 max worker, 2 extra: the held image gets all 3 started; the absent one gets 1,
        # whose pull is refused (UNHEALTHY, with the cause).
        live.until(lambda: sum(1 for w in live.registry.all("cached") if w.in_flight) == 3, "three busy containers")
        live.until(
            lambda: any(w.failure and ABSENT_IMAGE in w.failure for w in live.registry.all("absent")), "the failed pull"
        )
        live.until(
            lambda: (s := rt.controller.last_step("absent")) is not None and s.snapshot.queue.in_queue == 3,
            "a Controller pass over absent's spike",
        )
        assert not rt.controller.last_step("absent").snapshot.image_cached  # type: ignore[union-attr]
        targets = {eid: [a.action.target for a in rt.telemetry.recent_actions if a.endpoint_id == eid] for eid in ("absent", "cached")}
        assert max(targets["cached"]) == 3 and max(targets["absent"]) == 1, targets
        assert all(a.action.start <= 1 for a in rt.telemetry.recent_actions if a.endpoint_id == "absent")
        (tmp_path / "cached" / "go").touch()
        done = [live.wait("cached", j) for j in cached_jobs]
        assert len({b["output"]["worker"] for b in done}) == 3
        assert all(live.status("absent", j)["status"] == "IN_QUEUE" for j in absent_jobs)
