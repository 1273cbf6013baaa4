"""`gpuserve run` against a served endpoint prints the job's progress payload and why it is waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import serve_process, stop_process, wait_until

GATED = Path(__file__).parent / "handlers" / "gated_gpuserve.py"


@pytest.fixture
def served(tmp_path):
    (tmp_path / "endpoints.yaml").write_text(
        "endpoints:\n"
        f"  gated: {{handler: {GATED}, api_keys: [sk-run], scaling: {{max_workers: 1, idle_timeout_s: 30, extra_workers: 0}}}}\n"
    )
    proc, url = serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")
    env = {**os.environ, "GPUSERVE_URL": url, "GPUSERVE_API_KEY": "sk-run", "COLUMNS": "300"}
    yield env
    stop_process(proc, signal.SIGINT, timeout_s=30)


def start_run(env: dict[str, str], gate: Path, stderr: Path) -> subprocess.Popen[str]:
    """`gpuserve run gated` in the background, its stderr (progress, waiting) into a file the test reads."""
    with stderr.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gpuserve.cli", "run", "gated", f'{{"gate": "{gate}"}}', "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )


def test_run_prints_progress_and_why_a_job_waits(served, tmp_path):
    gate = tmp_path / "gate"
    first_err, second_err = tmp_path / "first.err", tmp_path / "second.err"
    first = start_run(served, gate, first_err)
    second = None
    try:
        # The handler holds the job until the gate opens, so the progress line must appear while it runs.
        wait_until(lambda: 'progress: {"step": "at the gate"}' in first_err.read_text(), 90, "run prints the progress")
        # One worker at most, and it is busy: the second job waits, and says why.
        second = start_run(served, gate, second_err)
        wait_until(
            lambda: "waiting: max_workers reached (1 busy) (position 1)" in second_err.read_text(),
            90,
            "run prints the waiting reason",
        )
        gate.touch()
        outs = [run.communicate(timeout=90)[0] for run in (first, second)]
    finally:
        for run in (first, second):
            if run is not None and run.poll() is None:
                run.kill()
                run.wait()
    assert first.returncode == 0 and second.returncode == 0, first_err.read_text() + second_err.read_text()
    assert all('"through": true' in out for out in outs)
    assert first_err.read_text().count("progress:") == 1  # printed once per new payload, not per poll
    assert second_err.read_text().count("waiting: max_workers reached") == 1  # once per cause, not per poll
