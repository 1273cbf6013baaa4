"""Images from a real registry (Debian's docker-registry on 127.0.0.1, password-protected): push, pull on first use, failures named.

Needs a Docker engine and the registry scripts/registry-setup.sh starts (its address and
credentials in GPUSERVE_TEST_REGISTRY, _USER, _PASSWORD). Skips without them, unless
GPUSERVE_REQUIRE_REGISTRY=1 (CI), where it fails instead. Credentials reach the engine only
through a Docker config file ($DOCKER_CONFIG/config.json), as the docker CLI would write it.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.core.types import WorkerState
from gpuserve.live.deployment import Deployment
from gpuserve.live.settings import ServerSettings
from tests.support import live as support
from tests.support.docker import (
    REQUIRE_REGISTRY,
    clean_namespace,
    registry_address,
    registry_login,
    worker_image_client,
    write_docker_config,
)

pytestmark = pytest.mark.docker

NAMESPACE = f"test-reg-{os.getpid()}-{uuid.uuid4().hex[:6]}"
SETTINGS = ServerSettings(poll_timeout_s=2.0, heartbeat_interval_s=0.5, tick_interval_s=0.2, maintenance_interval_s=0.05)

HANDLER = """
import os
from gpuserve import serverless

def handler(job):
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "blob_bytes": os.path.getsize("/app/blob.bin")}

serverless.start({"handler": handler})
"""
DOCKERFILE = """
FROM gpuserve/worker:latest
COPY handler.py /app/handler.py
COPY blob.bin /app/blob.bin
CMD ["python", "-u", "/app/handler.py"]
"""
BLOB_BYTES = 512 * 1024  # random, so its layer is in no other image: the pull must download it


@pytest.fixture(scope="module")
def registry() -> str:
    """host:port of the test registry."""
    return registry_address(password_required=True)


@pytest.fixture(scope="module")
def client(registry: str) -> Iterator[Any]:
    docker = worker_image_client(REQUIRE_REGISTRY)
    yield docker
    # Pushed images by tag, never by id: a tag of gpuserve/worker:latest must leave that image alone.
    clean_namespace(docker, NAMESPACE, images=True)


@pytest.fixture
def logged_in(tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Docker config holding the registry's credentials (what `docker login 127.0.0.1:PORT` writes), in force."""
    folder = write_docker_config(tmp_path / "docker-config", {registry: registry_login()})
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


class Live(support.Live):
    """The live harness on the Docker backend, in this module's namespace, operator routes open on loopback."""

    def __init__(self, tmp_path: Path, client: Any, deployments: list[Deployment]) -> None:
        from gpuserve.backends.docker import docker_backend_factory

        factory = docker_backend_factory(
            client=client, namespace=NAMESPACE, state_dir=tmp_path / "state", retention_s=0.0, stop_timeout_s=3, orphan_grace_s=5.0
        )
        super().__init__(tmp_path, deployments, SETTINGS, backend=factory, keys=(), admin_keys=())


def test_docker_trusts_a_plain_http_registry_on_loopback(client: Any) -> None:
    """No TLS and no daemon.json: the engine treats 127.0.0.0/8 as an insecure registry by default."""
    assert "127.0.0.0/8" in client.info()["RegistryConfig"]["InsecureRegistryCIDRs"]


def test_build_push_then_an_endpoint_pulls_the_image_on_first_use(
    tmp_path: Path, client: Any, registry: str, logged_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gpuserve.cli import app

    folder = tmp_path / "worker"
    folder.mkdir()
    (folder / "Dockerfile").write_text(textwrap.dedent(DOCKERFILE))
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER))
    (folder / "blob.bin").write_bytes(os.urandom(BLOB_BYTES))
    ref = f"{registry}/{NAMESPACE}/worker:v1"
    runner = CliRunner()

    with monkeypatch.context() as anonymous:  # no credentials: the registry refuses the push
        anonymous.setenv("DOCKER_CONFIG", str(write_docker_config(tmp_path / "empty-config", {})))
        refused = runner.invoke(app, ["build", str(folder), "--push", ref])
    assert refused.exit_code == 2, refused.output
    assert f"push failed: unauthorized ({ref})" in " ".join(refused.output.split())

    pushed = runner.invoke(app, ["build", str(folder), "--push", ref])
    assert pushed.exit_code == 0, pushed.output
    assert f"{ref} pushed (sha256:" in pushed.output
    # The registry holds it now: its manifest answers (with the same credentials).
    auth = registry_login()
    manifest = httpx.head(
        f"http://{registry}/v2/{NAMESPACE}/worker/manifests/v1",
        auth=auth,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.status_code == 200

    # Gone from this host, so the endpoint's first worker must pull it (its unique layers too).
    client.images.remove(ref, force=True)
    assert not client.images.list(name=ref)
    dep = Deployment(spec=support.endpoint_spec("pulled", max_workers=1, idle_timeout_s=30.0), image=ref)
    with Live(tmp_path, client, [dep]) as live:
        body = live.wait("pulled", live.run("pulled", {}))
        assert body["status"] == "COMPLETED", body
        assert body["output"]["blob_bytes"] == BLOB_BYTES
        worker_id = body["output"]["worker"]
        live.until(lambda: getattr(live.backend.cold_start(worker_id), "total_s", None) is not None, "the start is recorded")
        record = live.backend.cold_start(worker_id)
        assert record is not None and record.pull_s is not None and record.pull_s > 0
        pull = record.pull
        assert pull is not None and pull.layers_total >= 2 and pull.layers_done == pull.layers_total
        downloaded = pull.layers_total - pull.layers_cached
        assert downloaded >= 1, pull  # at least the blob's layer came over the wire
        assert pull.layers_cached >= 1, pull  # the base layers were on the host already
        assert BLOB_BYTES // 2 < pull.bytes_done == pull.bytes_total, pull  # compressed random data stays about its size
        assert record.total_s is not None and record.total_s >= record.pull_s
        assert client.images.get(ref).id  # held now: the next start creates at once


def test_unpullable_images_make_workers_unhealthy_and_every_waiting_job_says_why(
    tmp_path: Path, client: Any, registry: str, logged_in: Path
) -> None:
    port = registry.rsplit(":", 1)[1]
    missing = f"{registry}/{NAMESPACE}/missing:v1"
    # The same registry under another name, with no credentials in the config: refused.
    anonymous = f"localhost:{port}/{NAMESPACE}/missing:v1"
    unreachable = f"127.0.0.1:1/{NAMESPACE}/missing:v1"  # nothing listens on port 1
    handler = tmp_path / "handler.py"
    handler.write_text(textwrap.dedent(HANDLER).replace('os.path.getsize("/app/blob.bin")', "0"))

    def dep(endpoint_id: str, image: str) -> Deployment:
        spec = support.endpoint_spec(endpoint_id, max_workers=1, idle_timeout_s=30.0)
        return Deployment(spec=spec, image=image, handler_path=str(handler))

    expected = {
        "missing": f"image not found ({missing})",
        "anonymous": f"unauthorized ({anonymous})",
        "unreachable": f"registry unreachable ({unreachable})",
    }
    images = {"missing": missing, "anonymous": anonymous, "unreachable": unreachable}
    with Live(tmp_path, client, [dep(eid, images[eid]) for eid in expected]) as live:
        jobs = {eid: [live.run(eid, {"n": i}) for i in range(2)] for eid in expected}

        def failing(eid: str) -> list[Any]:
            return [w for w in live.registry.all(eid) if w.state is WorkerState.UNHEALTHY]

        for eid, cause in expected.items():
            live.until(lambda eid=eid: failing(eid), f"{eid}: a worker turns UNHEALTHY")
            assert failing(eid)[0].failure == cause
            for position, job_id in enumerate(jobs[eid], start=1):
                live.until(
                    lambda eid=eid, job_id=job_id: live.status(eid, job_id).get("waiting", {}).get("code") == "workers_failing",
                    f"{eid}: job {job_id} says its workers fail",
                )
                body = live.status(eid, job_id)
                assert body["status"] == "IN_QUEUE" and body["waiting"]["position"] == position
                assert body["waiting"]["reason"].startswith(f"workers failing: {cause}, "), body
            health = live.http.get(f"/{eid}/health").json()
            assert health["waiting"]["code"] == "workers_failing" and cause in health["waiting"]["reason"], health
            assert health["workers"]["unhealthy"] >= 1 and health["jobs"]["inQueue"] == 2, health
            listed = httpx.get(f"{live.url}/api/endpoints", timeout=10).json()["endpoints"]
            assert any(w["failure"] == cause for e in listed if e["id"] == eid for w in e["workers"]), listed

        # Push the missing image: the next start (after its back-off) pulls nothing new and runs both jobs.
        client.images.get("gpuserve/worker:latest").tag(f"{registry}/{NAMESPACE}/missing", "v1")
        from gpuserve.backends.images import push_image

        assert push_image(client, missing).startswith("sha256:")
        for job_id in jobs["missing"]:
            assert live.wait("missing", job_id, timeout_s=90)["status"] == "COMPLETED"
        # The others still wait, none lost, and still say why.
        for eid in ("anonymous", "unreachable"):
            for job_id in jobs[eid]:
                body = live.status(eid, job_id)
                assert body["status"] == "IN_QUEUE" and expected[eid] in body["waiting"]["reason"], body
