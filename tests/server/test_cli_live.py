"""`gpuserve serve` as a real process, driven by `gpuserve run`, `endpoints` and `logs` subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import serve_process, stop_process

HANDLER = Path(__file__).parent / "handlers" / "echo_gpuserve.py"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuserve.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def served(tmp_path):
    (tmp_path / "endpoints.yaml").write_text(
        "server: {heartbeat_interval_s: 2, admin_keys: [sk-ops]}\n"
        "endpoints:\n"
        f"  echo: {{handler: {HANDLER}, api_keys: [sk-cli], scaling: {{max_workers: 1, idle_timeout_s: 30, extra_workers: 0}}}}\n"
    )
    proc, url = serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")
    env = {**os.environ, "GPUSERVE_URL": url, "GPUSERVE_API_KEY": "sk-cli", "GPUSERVE_ADMIN_KEY": "sk-ops", "COLUMNS": "300"}
    yield url, env
    stop_process(proc, signal.SIGINT, timeout_s=30)


def test_run_endpoints_logs_against_a_served_file(served):
    _url, env = served
    r = cli("run", "echo", '{"input": {"hi": 1}}', env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"echo": {"hi": 1}}
    assert "COMPLETED" in r.stderr
    r = cli("run", "echo", '{"bare": true}', env=env)  # a bare object becomes the input
    assert r.returncode == 0 and json.loads(r.stdout) == {"echo": {"bare": True}}
    r = cli("endpoints", env=env)
    assert r.returncode == 0 and "echo" in r.stdout and "IDLE" in r.stdout
    worker = re.search(r"(echo-[0-9a-f]+)", r.stdout)
    assert worker
    r = cli("logs", worker.group(1), "--tail", "20", env=env)
    assert r.returncode == 0 and "job" in r.stdout


def test_cli_errors_are_one_line(served):
    _url, env = served
    for args, needle in [
        (("run", "nope", "{}"), "endpoint 'nope' does not exist"),
        (("run", "echo", "{bad"), "payload is not valid JSON"),
        (("endpoints", "--api-key", "sk-wrong"), "HTTP 401"),
        (("endpoints", "--url", "http://127.0.0.1:1"), "cannot reach the server"),
        (("logs", "nobody"), "HTTP 404"),
    ]:
        r = cli(*args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_bad_file_in_one_line(tmp_path):
    (tmp_path / "e.yaml").write_text("endpoints: [{id: x, handler: missing.py}]\n")
    r = cli("serve", str(tmp_path / "e.yaml"), "--port", "0", env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 2 and "endpoints[0].handler" in r.stderr and "Traceback" not in r.stderr


def test_serve_with_a_data_dir_it_cannot_write_says_so_in_one_line(tmp_path):
    (tmp_path / "e.yaml").write_text(f"endpoints: [{{id: x, handler: {HANDLER}}}]\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = cli("serve", str(tmp_path / "e.yaml"), "--port", "0", "--data-dir", str(blocker / "data"),
            env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 2
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "data_dir" in lines[0] and "cannot hold the job store" in lines[0], lines
