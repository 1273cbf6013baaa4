"""The `gpuserve` command line: simulate, serve, run, endpoints, logs, replay, compare, calibrate, build, deploy."""

from __future__ import annotations

from pathlib import Path

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
    scenario: Path = typer.Argument(..., help="scenario YAML file (see scenarios/)"),
    out: Path | None = typer.Option(None, "--out", help="results folder (default out/<scenario name>)"),
    seed: int | None = typer.Option(None, "--seed", help="override the scenario's seed"),
    set_: list[str] = typer.Option([], "--set", help="override a field: endpoints.0.scaling.max_workers=5 (endpoint.X = every endpoint)"),
    sweep: list[str] = typer.Option([], "--sweep", help="run one point per value: endpoint.scaling.idle_timeout_s=5,60,600"),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG plots"),
) -> None:
    """Simulate a scenario: print the summary, write per-job records, worker intervals and plots."""
    from gpuserve.sim.report import simulate as run

    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be csv or parquet, was {fmt!r}")
    try:
        run(scenario, out, seed, set_, sweep, "parquet" if fmt == "parquet" else "csv", plots, console)
    except GpuserveError as exc:
        raise fail(str(exc)) from None


def _register_live_commands() -> None:
    # serve, endpoints, run, logs: the live control plane's commands live beside the server.
    from gpuserve.server.cli_commands import register

    register(app)


_register_live_commands()


def main() -> None:
    try:
        app()
    except GpuserveError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
