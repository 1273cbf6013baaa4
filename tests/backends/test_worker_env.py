"""Workers inherit only the documented part of the server's environment, plus what they are given."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from gpuserve.backends.base import INHERITED_ENV, inherited_env
from gpuserve.backends.process import ProcessBackend
from gpuserve.core.types import EndpointSpec, ScaleAction
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DATABASE_URL": "postgresql://u:pw@db/x",
    "RUNPOD_API_KEY": "rp-account-key",  # the operator's Runpod account key, not the worker's token
    "GPUSERVE_TEST_POSTGRES": "postgresql://u:pw@127.0.0.1/t",
    "HTTP_PROXY": "http://user:pw@proxy:3128",
}


def test_inherited_env_keeps_the_allow_list_and_locale_only() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "1", **SECRETS}
    assert inherited_env(environ) == {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "1"}


def test_a_worker_process_sees_no_server_secret_but_its_endpoint_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    dump = tmp_path / "env.json"
    handler = tmp_path / "envdump.py"
    handler.write_text(textwrap.dedent(f"""
        import json, os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        with open({str(dump)!r} + ".tmp", "w") as f:
            json.dump(dict(os.environ), f)
        os.rename({str(dump)!r} + ".tmp", {str(dump)!r})
        time.sleep(60)
    """))
    dep = Deployment(spec=EndpointSpec("envdump"), handler_path=str(handler), env={"HF_TOKEN": "given", "DATABASE_URL": "mine"})
    backend = ProcessBackend("http://127.0.0.1:9/", WorkerRegistry(), logs_dir=tmp_path / "logs")
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=1), now_s=0.0)
    try:
        deadline = time.monotonic() + 30
        while not dump.exists():
            assert time.monotonic() < deadline, "the worker never wrote its environment"
            time.sleep(0.02)
        env = json.loads(dump.read_text())
    finally:
        backend.shutdown()
    assert env["HF_TOKEN"] == "given" and env["DATABASE_URL"] == "mine"  # the endpoint's env wins
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and "PATH" in env and env["RUNPOD_ENDPOINT_ID"] == "envdump"
    for name in SECRETS.keys() - dep.env.keys():
        assert name not in env, name
    stray = {
        k for k in env
        if k not in INHERITED_ENV and k not in dep.env and not k.startswith(("LC_", "RUNPOD_", "GPUSERVE_")) and k != "PYTHONUNBUFFERED"
    }
    assert stray == set(), stray
