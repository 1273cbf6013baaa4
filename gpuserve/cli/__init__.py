"""The `gpuserve` command line: simulate, serve, run, endpoints, logs, replay, compare, calibrate, build, deploy."""

# Each command module adds its commands to the one app when imported; `gpuserve --help` lists them
# in this order.
from gpuserve.cli import policies, simulate, build, live, fidelity  # noqa: F401, I001
from gpuserve.cli.root import app, main

__all__ = ["app", "main"]
