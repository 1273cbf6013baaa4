"""The root `gpuserve` command: the typer app, its consoles, and fail(), the one way a command reports an error."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gpuserve.core.errors import GpuserveError

__all__ = ["app", "console", "err_console", "fail", "main"]

app = typer.Typer(
    help="gpuserve: serverless GPU workers, simulated or live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Results go to stdout, errors and job progress to stderr, so `gpuserve run ... > out.json` keeps only output.
console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from gpuserve import __version__

        typer.echo(f"gpuserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="print gpuserve's version and exit", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """gpuserve: serverless GPU workers, simulated or live."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error (never a traceback) and return the Exit to raise: `raise fail(...)`.

    Exit codes: 2 for a bad argument, file or refused request; 3 when `run` gives up waiting;
    130 when interrupted."""
    # escape(): a message quotes user input, and rich would take "[a]" in a payload or "[x].yaml" in a file
    # name for markup and drop it from the line.
    # soft_wrap: one line at any width (a log or a pipe keeps it whole for grep), as the README promises.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def main() -> None:
    """The console script: run the app; an error no command caught is still one line and exit code 2."""
    try:
        app()
    except GpuserveError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
