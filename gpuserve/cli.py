"""The `gpuserve` command line: simulate, serve, run, endpoints, logs, replay, compare, calibrate, build, deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpuserve.core.errors import GpuserveError

app = typer.Typer(
    help="gpuserve: serverless GPU workers, simulated or live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """gpuserve: serverless GPU workers, simulated or live."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error (never a traceback) and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def policies() -> None:
    """List the autoscaling policies scenario and endpoint files can name."""
    from gpuserve.policies import base

    for name in base.available():
        console.print(name)


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (see scenarios/)")],
    out: Annotated[Path | None, typer.Option("--out", help="results folder (default out/<scenario name>)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field: endpoints.0.scaling.max_workers=5 (endpoint.X: every endpoint)"),
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="one run per value: endpoint.scaling.idle_timeout_s=5,60,600"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Simulate a scenario: print the summary, write per-job records, worker intervals and plots."""
    from gpuserve.sim.report import simulate as run

    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be csv or parquet, was {fmt!r}")
    try:
        run(scenario, out, seed, set_ or [], sweep or [], "parquet" if fmt == "parquet" else "csv", plots, console)
    except GpuserveError as exc:
        raise fail(str(exc)) from None


@app.command()
def build(
    folder: Annotated[Path, typer.Argument(help="worker folder holding a Dockerfile (and optional requirements.txt)")],
    tag: Annotated[str | None, typer.Option("--tag", help="image tag (default gpuserve/<folder>:<content digest>)")] = None,
) -> None:
    """Build a worker image offline: wheels made on this host go into the build context."""
    from gpuserve.backends.docker import DockerUnavailableError, docker_client
    from gpuserve.backends.docker_images import BuildError, build_worker_dir

    try:
        built = build_worker_dir(docker_client(), folder, tag)
    except (DockerUnavailableError, BuildError) as exc:
        raise fail(str(exc)) from None
    console.print(built)


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
        from gpuserve.backends.docker import DockerUnavailableError, docker_client
        from gpuserve.backends.docker_images import BuildError, build_worker_dir

        try:
            image = build_worker_dir(docker_client(), Path(image))
        except (DockerUnavailableError, BuildError) as exc:
            raise fail(str(exc)) from None
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


def _register_live_commands() -> None:
    # serve, endpoints, run, logs: the live control plane's commands live beside the server.
    from gpuserve.server.cli_commands import register

    register(app)


_register_live_commands()


def _register_fidelity_commands() -> None:
    # replay, compare, calibrate: the simulator-against-live loop.
    from gpuserve.fidelity.cli_commands import register

    register(app)


_register_fidelity_commands()


def main() -> None:
    try:
        app()
    except GpuserveError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
