"""`gpuserve simulate --sweep ... --ray-address`: sweep points and replications as Ray tasks, the same results as a local run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gpuserve.experiments import load_scenario, run_sweep, write_sweep
from tests.ray.conftest import RayCluster

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"


def test_a_sweep_on_a_ray_cluster_writes_what_a_local_run_writes(tmp_path: Path, ray_cluster: RayCluster) -> None:
    scenario = load_scenario(QUICKSTART, [("duration_s", "120")])
    local = run_sweep(scenario, {"endpoint.scaling.idle_timeout_s": [1, 300]}, replications=2, jobs=1)
    write_sweep(local, tmp_path / "local", plots=False)
    done = subprocess.run(
        [sys.executable, "-m", "gpuserve.cli", "simulate", str(QUICKSTART), "--set", "duration_s=120",
         "--sweep", "endpoint.scaling.idle_timeout_s=1,300", "--replications", "2", "--no-plots",
         "--out", str(tmp_path / "ray"), "--ray-address", ray_cluster.address],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("sweep.csv", "runs.csv", "point00/rep00/jobs.csv", "point01/rep01/jobs.csv", "point01/rep01/intervals.csv"):
        here, on_ray = (tmp_path / "local" / name).read_bytes(), (tmp_path / "ray" / name).read_bytes()
        assert here == on_ray and here, name
