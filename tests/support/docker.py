"""A real Docker engine (and image registry) for tests: the client with the worker image, namespace clean-up, credentials.

Without a usable engine the tests that need one skip, unless GPUSERVE_REQUIRE_DOCKER=1 (CI)
says it must be there, where they fail instead; the registry tests the same with
GPUSERVE_REQUIRE_REGISTRY=1 and the registry scripts/registry-setup.sh starts (its address and
credentials in GPUSERVE_TEST_REGISTRY, _USER, _PASSWORD).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

REQUIRE_DOCKER = ("GPUSERVE_REQUIRE_DOCKER",)
REQUIRE_REGISTRY = ("GPUSERVE_REQUIRE_REGISTRY",)


def unavailable(what: str, required_by: tuple[str, ...]) -> NoReturn:
    """Skip, or fail when one of the `required_by` variables is 1 (CI needs the thing)."""
    named = [flag for flag in required_by if os.environ.get(flag) == "1"]
    if named:
        pytest.fail(f"{'/'.join(named)}=1 but {what}")
    pytest.skip(what)


def worker_image_client(required_by: tuple[str, ...] = REQUIRE_DOCKER) -> Any:
    """A Docker client with the worker image built from these sources (gpuserve/worker:latest)."""
    from gpuserve.backends.docker import DockerUnavailableError, docker_client
    from gpuserve.backends.docker_images import BuildError, ensure_worker_image

    try:
        client = docker_client()
        ensure_worker_image(client)
    except (DockerUnavailableError, BuildError) as exc:
        unavailable(f"Docker is not usable: {exc}", required_by)
    return client


def remove_tagged(client: Any, namespace: str, *, force: bool = False) -> None:
    """Remove the images tagged into the registry folder `namespace`; by tag, never by id, so the base images stay."""
    for image in client.images.list():
        for tag in image.tags:
            if f"/{namespace}/" in tag:
                client.images.remove(tag, force=force)


def clean_namespace(client: Any, namespace: str, *, volumes: bool = False, images: bool = False) -> None:
    """Remove every container (and volume, and pushed image) `namespace` left behind, then fail naming any container or volume."""
    from gpuserve.backends.docker import managed_containers, managed_volumes

    left = [c.name for c in managed_containers(client, namespace)]
    left_volumes = [v.name for v in managed_volumes(client, namespace)] if volumes else []
    for c in managed_containers(client, namespace):
        c.remove(force=True)
    for v in managed_volumes(client, namespace) if volumes else []:
        v.remove(force=True)
    if images:
        remove_tagged(client, namespace)
    assert left == [] and left_volumes == [], f"leaked containers {left} and volumes {left_volumes}"


def docker_fixture(
    namespace: str, *, name: str = "client", volumes: bool = False, required_by: tuple[str, ...] = REQUIRE_DOCKER
) -> Callable[..., Iterator[Any]]:
    """A module-scoped fixture `name`: the worker-image client, with `namespace` checked clean (and cleaned) after the module."""

    def fixture() -> Iterator[Any]:
        client = worker_image_client(required_by)
        yield client
        clean_namespace(client, namespace, volumes=volumes)

    fixture.__doc__ = f"A Docker client with the worker image built from these sources; namespace {namespace} clean after."
    return pytest.fixture(scope="module", name=name)(fixture)


def registry_address(required_by: tuple[str, ...] = REQUIRE_REGISTRY, *, password_required: bool = False) -> str:
    """host:port of the test registry, once its /v2/ answers (skip or fail without one); `password_required`: it must answer 401."""
    address = os.environ.get("GPUSERVE_TEST_REGISTRY")
    if not address:
        unavailable("no test registry: run `eval \"$(bash scripts/registry-setup.sh)\"`", required_by)
    try:
        answer = httpx.get(f"http://{address}/v2/", timeout=5)
    except httpx.HTTPError as exc:
        unavailable(f"the test registry at {address} does not answer: {exc}", required_by)
    if password_required:
        assert answer.status_code == 401, "the test registry must ask for a password"
    return address


def registry_login() -> tuple[str, str]:
    """The test registry's user and password."""
    return os.environ["GPUSERVE_TEST_REGISTRY_USER"], os.environ["GPUSERVE_TEST_REGISTRY_PASSWORD"]


def write_docker_config(folder: Path, auths: dict[str, tuple[str, str]]) -> Path:
    """A Docker config folder holding these (host -> (user, password)) credentials, as `docker login HOST` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()} for host, (user, password) in auths.items()}
    (folder / "config.json").write_text(json.dumps({"auths": entries}))
    return folder


def lb_server(bind: str = "127.0.0.1") -> str:
    """A load-balancing worker's own server (standard library only), for `python -c`: /ping 204 for a second, then 200.

    Any other path answers JSON naming the worker, its PORT, the path and whether it runs in a
    container; it prints "server on port PORT" when it starts.
    """
    return LB_SERVER.replace("BIND", bind)


LB_SERVER = """
import http.server, json, os, time
START = time.monotonic()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ping":  # 204 while "loading", then 200
            self.send_response(200 if time.monotonic() - START > 1.0 else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({
            "worker": os.environ["RUNPOD_POD_ID"], "port": os.environ["PORT"], "path": self.path,
            "container": os.path.exists("/.dockerenv"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("server on port", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("BIND", int(os.environ["PORT"])), Handler).serve_forever()
"""
