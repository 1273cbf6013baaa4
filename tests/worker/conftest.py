"""Fixtures for worker tests: a recording peer server and real worker subprocesses pointed at it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuserve.backends.base import worker_env
from gpuserve.core.types import EndpointSpec
from gpuserve.live.deployment import Deployment
from tests.support.peer import Peer

TOKEN = "wk_test_token"


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer() as p:
        yield p


SpawnWorker = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn_worker(tmp_path: Path, peer: Peer) -> Iterator[SpawnWorker]:
    procs: list[subprocess.Popen[str]] = []

    def spawn(code: str, worker_id: str = "wk1", ping_ms: int = 200, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        path = tmp_path / f"handler_{worker_id}.py"
        path.write_text(textwrap.dedent(code))
        dep = Deployment(spec=EndpointSpec("ep"), handler_path=str(path))
        env = {**os.environ, **worker_env(dep, worker_id, TOKEN, peer.url, ping_interval_ms=ping_ms)}
        env.update(extra_env or {})
        log = open(tmp_path / f"{worker_id}.log", "w")
        proc = subprocess.Popen([sys.executable, str(path)], env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        log.close()  # the child holds its own copy of the descriptor
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def worker_log(tmp_path: Path, worker_id: str = "wk1") -> str:
    return (tmp_path / f"{worker_id}.log").read_text()
