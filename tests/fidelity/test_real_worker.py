"""A smoke run of the non-circular study: the real handler live, then `calibrate --from-run` on its records."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.config.scenario import load_scenario
from gpuserve.experiments import run_scenario
from gpuserve.fidelity.replay import replay

REAL_WORKER = Path(__file__).resolve().parents[2] / "gpuserve" / "fidelity" / "real_worker.py"

# The scenario's nominal service (5 s) is what the replay hands the worker; the real handler
# ignores it and sleeps its own draw (mean 0.05 s), so the records show whose time it was.
SMOKE = """
name: smoke
duration_s: 4
seed: 3
billing:
  prices_usd_per_gpu_s: {A100: 0.001}
endpoints:
  - id: ep
    gpu_type: A100
    scaling: {min_workers: 0, max_workers: 2, idle_timeout_s: 1, scaler: request_count, scaler_value: 1, flash_boot: false, extra_workers: 0}
    policy: {name: runpod_request_count}
    workload: {kind: poisson, rate_per_s: 2.0}
    service: {kind: constant, value_s: 5.0}
    cold_start: {platform_start_s: 0.3, flash_resume_s: 0}
"""


def test_real_handler_owns_its_service_and_start_and_a_run_calibrates_the_simulator(tmp_path: Path) -> None:
    scenario_path = tmp_path / "smoke.yaml"
    scenario_path.write_text(textwrap.dedent(SMOKE))
    model = tmp_path / "model.bin"
    model.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    env = {"GPUSERVE_REAL_MODEL_SOURCE": "host_cache", "GPUSERVE_REAL_MODEL_PATH": str(model), "GPUSERVE_REAL_SERVICE": "lognormal:0.05:0.3"}
    run = replay(load_scenario(scenario_path), backend="process", speedup=1.0, worker=REAL_WORKER, worker_env=env)
    live = tmp_path / "live"
    run.write(live, plots=False)
    jobs = run.result.jobs
    assert len(jobs) >= 3 and (jobs["status"] == "COMPLETED").all()
    assert (jobs["service_planned_s"] == 5.0).all()
    assert jobs["execution_s"].max() < 2.0  # the handler's own draw, not the 5 s it was handed
    starts = json.loads((live / "replay.json").read_text())["cold_starts"]
    assert starts and all(s["runtime_init_s"] > 0 for s in starts)  # interpreter, imports, model read
    profile = tmp_path / "fit.yaml"
    result = CliRunner().invoke(app, ["calibrate", "--from-run", str(live), "--out", str(profile)])
    assert result.exit_code == 0, result.output
    fitted = yaml.safe_load(profile.read_text())
    assert set(fitted["distributions"]) == {"container_start_s", "runtime_init_s", "platform_start_s"}
    assert fitted["distributions"]["runtime_init_s"]["kind"] == "lognormal"
    service = (tmp_path / "fit-service.csv").read_text().split()[1:]
    assert len(service) == len(jobs)
    # The fit drives a simulation of the same scenario: the start-up it draws is the measured one's size.
    predicted = run_scenario(
        load_scenario(
            scenario_path,
            [("endpoint.cold_start", {"profile": str(profile)}), ("endpoint.service", {"kind": "empirical", "path": str(tmp_path / "fit-service.csv")})],
        )
    )
    sim_start = (predicted.workers["ready_s"] - predicted.workers["created_s"]).median()
    live_start = np.median([s["total_s"] for s in starts])
    assert 0.2 * live_start < sim_start < 5.0 * live_start
    assert predicted.jobs["execution_s"].max() < 2.0
