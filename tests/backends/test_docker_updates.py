"""An image update of a running endpoint on the Docker backend: the container is replaced by one on the new image, no job lost.

Uses test_docker.py's engine fixture and namespace (skips without Docker unless GPUSERVE_REQUIRE_DOCKER=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuserve.core.types import WorkerState
from tests.backends.test_docker import NAMESPACE, Live, _deployment, client  # noqa: F401  (client: the engine fixture)

pytestmark = pytest.mark.docker


def test_an_image_update_replaces_the_container_through_outdated(tmp_path: Path, client: Any) -> None:  # noqa: F811
    from gpuserve.backends.docker import DEFAULT_IMAGE

    repo, tag = "gpuserve/worker", f"update-{NAMESPACE}"
    client.images.get(DEFAULT_IMAGE).tag(repo, tag)  # the same worker image under a new name: a new version
    try:
        dep = _deployment(tmp_path, "img", min_workers=1, max_workers=1)
        with Live(tmp_path, client, [dep]) as live:
            live.until(lambda: any(w.state is WorkerState.IDLE for w in live.registry.all("img")), "worker ready")
            [old] = live.registry.all("img")
            [old_container] = live.containers(client)
            states: list[tuple[str, WorkerState]] = []
            live.registry.subscribe(lambda w, change, _t, _ids: states.append((w.worker_id, w.state)))
            job = live.run("img", {"sleep_s": 1.0})
            live.wait("img", job, {"IN_PROGRESS"})
            r = live.admin.patch("/api/endpoints/img", json={"set": {"image": f"{repo}:{tag}"}})
            assert r.status_code == 200 and r.json()["rolling"] is True, r.text
            assert live.wait("img", job)["status"] == "COMPLETED"
            live.until(lambda: not live.runtime.rolling("img"), "the rolling update is over")
            live.until(lambda: live.registry.get(old.worker_id) is None, "the old worker is gone")
            live.until(lambda: [c.id for c in live.containers(client)] != [old_container.id], "its container replaced")
            assert (old.worker_id, WorkerState.OUTDATED) in states
            [new_container] = live.containers(client)
            assert new_container.attrs["Config"]["Image"] == f"{repo}:{tag}"
            body = live.wait("img", live.run("img", {}))
            assert body["status"] == "COMPLETED" and body["workerId"] != old.worker_id
    finally:
        client.images.remove(f"{repo}:{tag}")
