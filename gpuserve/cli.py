"""The `gpuserve` command line: simulate, serve, run, endpoints, logs, replay, compare, calibrate, build, deploy."""

from __future__ import annotations

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


def main() -> None:
    try:
        app()
    except GpuserveError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
