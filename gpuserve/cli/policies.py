"""`gpuserve policies`: the autoscaling policies scenario and endpoint files can name."""

from __future__ import annotations

from gpuserve.cli.root import app, console


@app.command()
def policies() -> None:
    """List the autoscaling policies scenario and endpoint files can name."""
    from gpuserve.policies import base

    for name in base.available():
        console.print(name)
