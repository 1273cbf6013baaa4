"""`gpuserve init` and `validate`, and the one-line start-up errors of `serve`, each as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.cli.init import STARTER_FILES, file_kind
from gpuserve.config.endpoints import load_endpoints

REPO = Path(__file__).resolve().parents[2]
HANDLER = Path(__file__).parent / "handlers" / "echo_gpuserve.py"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`gpuserve ARGS` as a process: what `serve` prints before it could serve is the point."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "gpuserve.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def cli_here(*args: str) -> Result:
    """`gpuserve ARGS` in this process (seconds cheaper than a process on a busy machine)."""
    return CliRunner().invoke(app, list(args))


def test_init_writes_a_worker_that_runs_locally_and_an_endpoints_yaml_that_loads(tmp_path):
    folder = tmp_path / "my-worker"
    r = cli_here("init", str(folder))
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(STARTER_FILES)
    # The handler through the SDK's local test mode, on the test_input.json beside it.
    run = subprocess.run(
        [sys.executable, "handler.py"], capture_output=True, text=True, cwd=folder, timeout=60, env=dict(os.environ)
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"output": {"greeting": "hello, world"}}
    assert '"pct": 50' in run.stderr  # its progress update, shown by the test mode
    cfg = load_endpoints(folder / "endpoints.yaml")
    (ep,) = cfg.endpoints
    assert ep.spec.endpoint_id == "my-worker"
    assert ep.deployment.handler_path == str(folder / "handler.py")
    assert ep.key_hashes  # served with a key from the first start
    assert cfg.admin_key_hashes and not (cfg.admin_key_hashes & ep.key_hashes)  # and an operator's key of its own
    dockerfile = (folder / "Dockerfile").read_text()
    assert "FROM gpuserve/worker:latest" in dockerfile and "COPY handler.py /app/handler.py" in dockerfile
    assert 'CMD ["python", "-u", "/app/handler.py"]' in dockerfile
    # Files that exist are kept unless --force.
    (folder / "handler.py").write_text("# mine\n")
    r = cli_here("init", str(folder))
    assert r.exit_code == 2 and "already has handler.py" in r.stderr
    assert (folder / "handler.py").read_text() == "# mine\n"
    assert cli_here("init", str(folder), "--force").exit_code == 0
    assert "hello" in (folder / "handler.py").read_text()
    r = cli_here("init", str(tmp_path / "other"), "--id", "bad id!")
    assert r.exit_code == 2 and "--id" in r.stderr and "'bad id!'" in r.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({"endpoints": [{"id": "a", "handler": "h.py"}]}, "endpoints"),
        ({"endpoints": {"a": {"image": "x:1"}}}, "endpoints"),
        ({"server": {"port": 1}, "endpoints": []}, "endpoints"),
        ({"duration_s": 60, "endpoints": [{"id": "a"}]}, "scenario"),
        ({"endpoints": [{"id": "a", "gpu_type": "A100"}]}, "scenario"),
        ([1, 2], "endpoints"),
    ],
)
def test_file_kind_tells_endpoints_from_scenarios(raw, kind):
    assert file_kind(raw) == kind


def test_validate_prints_ok_or_the_field(tmp_path):
    good = tmp_path / "endpoints.yaml"
    good.write_text(f"endpoints:\n  - id: echo\n    handler: {HANDLER}\n")
    r = cli_here("validate", str(good))
    assert r.exit_code == 0 and r.stdout.startswith(f"OK {good} (endpoints, 1 endpoint(s): echo)"), r.stderr
    r = cli_here("validate", str(REPO / "scenarios" / "bursty.yaml"))
    assert r.exit_code == 0 and "(scenario, 'bursty'" in r.stdout, r.stderr
    bad_ep = tmp_path / "bad_ep.yaml"
    bad_ep.write_text(f"endpoints:\n  - id: echo\n    handler: {HANDLER}\n    scaling: {{max_workers: -1}}\n")
    bad_sc = tmp_path / "bad_sc.yaml"
    bad_sc.write_text("duration_s: 60\nendpoints:\n  - id: a\n    scaling: {idle_timeout_s: oops}\n")
    for path, field in [(bad_ep, "endpoints[0].scaling.max_workers"), (bad_sc, "idle_timeout_s")]:
        r = cli_here("validate", str(path))
        assert r.exit_code == 2, r.stdout
        assert len(r.stderr.strip().splitlines()) == 1 and field in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""
    r = cli_here("validate", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 2 and "cannot be read" in r.stderr


@pytest.fixture(scope="module")
def no_runpod_python(tmp_path_factory):
    """An interpreter that cannot import runpod: a bare venv that sees none of this one's packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("image: my-worker:latest", "image needs --backend docker"),
        (f"handler: {HANDLER}\n    image: my-worker:latest", "image is for the docker backend"),
        (f"handler: {HANDLER}\n    sdk: runpod\n    python: PYTHON", "cannot import 'runpod' (sdk: runpod)"),
    ],
    ids=["image-on-process", "handler-and-image", "runpod-missing"],
)
def test_serve_start_up_errors_are_one_line_before_the_banner(tmp_path, no_runpod_python, body, needle):
    config = tmp_path / "endpoints.yaml"
    config.write_text(f"endpoints:\n  - id: ep\n    {body.replace('PYTHON', str(no_runpod_python))}\n")
    r = cli("serve", str(config), "--port", "0", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "serving" not in r.stdout and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: endpoint 'ep': ") and needle in lines[0], r.stderr
