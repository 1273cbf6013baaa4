"""`gpuserve build` (and `--push` to a registry) and `deploy`: worker images built offline, and rolled onto a running server's endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuserve.cli.root import app, console, fail


@app.command()
def build(
    folder: Annotated[Path, typer.Argument(help="worker folder holding a Dockerfile (and optional requirements.txt)")],
    tag: Annotated[str | None, typer.Option("--tag", help="image tag (default gpuserve/<folder>:<content digest>)")] = None,
    push: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="REGISTRY/NAME:TAG",
            help="also tag the image so and push it there (credentials from the Docker config, as `docker login` left them)",
        ),
    ] = None,
) -> None:
    """Build a worker image offline: wheels made on this host go into the build context; --push sends it to a registry."""
    if push is not None and not push.strip():
        raise fail("--push must name an image, REGISTRY/NAME:TAG")
    built = _build(folder, tag or push)
    if push is None:
        console.print(built)
        return
    _push(built, push)


@app.command()
def deploy(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint to update")],
    what: Annotated[str, typer.Argument(help="an image tag, a worker folder to build first, or a handler .py file")],
    url: Annotated[str, typer.Option("--url", help="the running server")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar=["GPUSERVE_ADMIN_KEY", "GPUSERVE_API_KEY"], help="an admin key")] = None,
) -> None:
    """Run a new image or handler file on an endpoint of a running server: a stored version, workers roll over one by one."""
    import httpx

    path = Path(what)
    if path.is_dir():
        what = _build(path, None)
        console.print(f"built {what}")
        body_in = {"image": what}
    elif path.suffix == ".py" and path.is_file():
        body_in = {"handler": str(path.resolve())}  # the same file edited is a new version too (its digest)
    else:
        body_in = {"image": what}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/api/endpoints/{endpoint_id}/deploy", json=body_in, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the server at {url}: {exc}") from None
    if r.status_code != 200:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text.strip()[:300]
        raise fail(f"deploy refused ({r.status_code}): {message}")
    body = r.json()
    console.print(
        f"{endpoint_id}: version {body['version']} ({next(iter(body_in.values()))}); "
        f"workers {body['previousWorkerVersion']} -> {body['workerVersion']}"
        + (", rolling update" if body.get("rolling") else ""),
        highlight=False,
        markup=False,
    )


def _push(built: str, ref: str) -> None:
    from gpuserve.backends.docker import DockerUnavailableError, docker_client
    from gpuserve.backends.images import ImageError, push_image, split_ref

    try:
        client = docker_client()
        if built != ref:
            client.images.get(built).tag(*split_ref(ref))
        digest = push_image(client, ref)
    except (DockerUnavailableError, ImageError) as exc:
        raise fail(f"push failed: {exc}") from None
    console.print(f"{ref} pushed ({digest})", highlight=False, soft_wrap=True)


def _build(folder: Path, tag: str | None) -> str:
    # Imported when a build runs, so every other command starts without loading the backends and the server.
    from gpuserve.backends.docker import DockerUnavailableError, docker_client
    from gpuserve.backends.docker_images import BuildError, build_worker_dir

    try:
        return build_worker_dir(docker_client(), folder, tag)
    except (DockerUnavailableError, BuildError) as exc:
        raise fail(str(exc)) from None
