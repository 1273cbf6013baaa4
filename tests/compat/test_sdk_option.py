"""The `sdk: runpod` and `python:` endpoint options: the example config loads, and a worker interpreter that
cannot import the endpoint's SDK is refused at configure time, naming the field and value."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpuserve.backends.process import ProcessBackend
from gpuserve.config.endpoints import load_endpoints, parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSpec
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "runpod_worker"


def test_example_endpoints_file_declares_a_runpod_worker() -> None:
    config = load_endpoints(EXAMPLE / "endpoints.yaml")
    dep = config.endpoints[0].deployment
    assert dep.sdk == "runpod" and dep.endpoint_id == "runpod-echo"
    assert dep.handler_path == str((EXAMPLE / "handler.py").resolve())
    assert dep.python is None


def test_python_option_keeps_a_venv_symlink_and_changes_the_version(tmp_path: Path) -> None:
    (tmp_path / "h.py").write_text("import runpod\n")
    raw = {"endpoints": [{"id": "ep", "handler": "h.py", "sdk": "runpod", "python": "venv/bin/python"}]}
    dep = parse_endpoints(raw, tmp_path).endpoints[0].deployment
    assert dep.python == str(tmp_path / "venv" / "bin" / "python")  # joined, not resolved through the link
    on_path = parse_endpoints({"endpoints": [{**raw["endpoints"][0], "python": "python3"}]}, tmp_path)
    assert on_path.endpoints[0].deployment.python == "python3"
    assert replace(dep, python=None).version != dep.version


def test_configure_refuses_an_interpreter_without_the_sdk(tmp_path: Path) -> None:
    handler = tmp_path / "h.py"
    handler.write_text("import runpod\n")
    backend = ProcessBackend("http://127.0.0.1:9", WorkerRegistry(), logs_dir=tmp_path / "logs")
    dep = Deployment(spec=EndpointSpec("ep"), handler_path=str(handler), sdk="runpod")
    backend.configure(dep)  # this interpreter has runpod (the dev extra pins it)
    # An interpreter that finds no packages at all: -I ignores the environment, -S skips site-packages.
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    bare.chmod(0o755)
    with pytest.raises(ConfigError, match="cannot import 'runpod'") as err:
        backend.configure(replace(dep, python=str(bare)))
    assert err.value.field == "python" and err.value.value == str(bare)
    with pytest.raises(ConfigError, match="cannot be run"):
        backend.configure(replace(dep, python=str(tmp_path / "no-such-python")))
