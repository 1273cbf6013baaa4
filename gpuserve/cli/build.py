"""`gpuserve build` and `deploy`: worker images built offline, and rolled onto a running server's endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuserve.cli.root import app, console, fail


@app.command()
def build(
    folder: Annotated[Path, typer.Argument(help="worker folder holding a Dockerfile (and optional requirements.txt)")],
    tag: Annotated[str | None, typer.Option("--tag", help="image tag (default gpuserve/<folder>:<content digest>)")] = None,
) -> None:
    """Build a worker image offline: wheels made on this host go into the build context."""
    console.print(_build(folder, tag))


@app.command()
def deploy(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint to update")],
    image: Annotated[str, typer.Argument(help="image tag, or a worker folder to build first")],
    url: Annotated[str, typer.Option("--url", help="the running server")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="GPUSERVE_API_KEY", help="client key")] = None,
) -> None:
    """Point an endpoint of a running server at a new image: workers roll over one by one, jobs keep flowing."""
    import httpx

    if Path(image).is_dir():
        image = _build(Path(image), None)
        console.print(f"built {image}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/api/endpoints/{endpoint_id}/deploy", json={"image": image}, headers=headers)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the server at {url}: {exc}") from None
    if r.status_code != 200:
        raise fail(f"deploy refused ({r.status_code}): {r.json().get('error', r.text) if r.content else ''}")
    body = r.json()
    console.print(f"{endpoint_id}: {body['image']} (version {body['previousVersion']} -> {body['version']})")


def _build(folder: Path, tag: str | None) -> str:
    # Imported when a build runs, so every other command starts without loading the backends and the server.
    from gpuserve.backends.docker import DockerUnavailableError, docker_client
    from gpuserve.backends.docker_images import BuildError, build_worker_dir

    try:
        return build_worker_dir(docker_client(), folder, tag)
    except (DockerUnavailableError, BuildError) as exc:
        raise fail(str(exc)) from None
