"""The SDK's entry point, `serverless.start(config)`: pick the mode (platform worker, test input, dev server) and run the handler."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gpuserve.worker.env import WorkerEnv
from gpuserve.worker.runner import progress_update

__all__ = ["parse_flags", "progress_update", "start", "worker_id"]

log = logging.getLogger("gpuserve.worker")

_LEVELS = {"NOTSET": logging.NOTSET, "TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
           "WARN": logging.WARNING, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
_CONFIG_KEYS = {"handler", "concurrency_modifier", "return_aggregate_stream", "refresh_worker", "rp_args"}


def parse_flags(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Runpod's local flags (plus `--serve`); the recognised ones are removed from argv."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--test_input", default=None)
    p.add_argument("--rp_serve_api", "--serve", dest="serve", action="store_true")
    p.add_argument("--rp_api_port", type=int, default=8000)
    p.add_argument("--rp_api_host", default="localhost")
    p.add_argument("--rp_api_concurrency", type=int, default=1)
    p.add_argument("--rp_log_level", default=None)
    p.add_argument("--rp_debugger", action="store_true")
    return p.parse_known_args(list(argv))


def worker_id() -> str | None:
    """This worker's id (the platform's RUNPOD_POD_ID), for handlers that want to log it."""
    return os.environ.get("GPUSERVE_WORKER_ID") or os.environ.get("RUNPOD_POD_ID")


def _setup_logging(level_name: str | None) -> None:
    name = (level_name or os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL") or "INFO").upper()
    root = logging.getLogger("gpuserve.worker")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(_LEVELS.get(name, logging.INFO))


def _validate(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise TypeError(f"start(config): config must be a dict, was {type(config).__name__}")
    handler = config.get("handler")
    if not callable(handler):
        raise TypeError(f"start(config): config['handler'] must be callable, was {handler!r}")
    modifier = config.get("concurrency_modifier")
    if modifier is not None and not callable(modifier):
        raise TypeError(f"start(config): config['concurrency_modifier'] must be callable, was {modifier!r}")
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        log.warning("start(config): ignoring unknown keys %s", sorted(unknown))
    return config


def start(config: dict[str, Any]) -> None:
    """Run a handler as a serverless worker; blocks, then exits the process.

    - With `RUNPOD_WEBHOOK_GET_JOB` set (a platform started this process): take jobs from
      the server until SIGTERM or a refresh, then exit 0.
    - `--rp_serve_api` / `--serve` [--rp_api_host H] [--rp_api_port P]: a local dev server.
    - `--test_input '{"input": ...}'`, or test_input.json beside the handler: run one job,
      print the result, exit 0 (success) or 1 (error).
    """
    flags, rest = parse_flags(sys.argv[1:])
    sys.argv[1:] = rest
    _setup_logging(flags.rp_log_level)
    config = _validate(config)
    if flags.serve:
        from gpuserve.worker.devserver import DevServer

        DevServer(config, flags.rp_api_host, flags.rp_api_port).serve_forever()
        sys.exit(0)
    env = WorkerEnv.from_environ()
    if flags.test_input is not None or env.take_url is None:
        from gpuserve.worker.local import run_test_input

        sys.exit(run_test_input(config, flags.test_input))
    from gpuserve.worker.loop import exit_now_if_stuck, run_worker

    code = run_worker(config, env)
    exit_now_if_stuck(code)
    sys.exit(code)
