"""The `gpuserve` command line: simulate, serve, run, endpoints, logs, exec, replay, compare, calibrate, build, deploy, init, validate."""

# Each command module adds its commands to the one app when imported; `gpuserve --help` lists them
# in this order.
from gpuserve.cli import policies, simulate, build, live, endpoints, ops, fidelity, init  # noqa: F401, I001
from gpuserve.cli.root import app, main

__all__ = ["app", "main"]
