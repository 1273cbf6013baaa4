"""calibrate on the process backend writes a profile that the scenario loader accepts and the simulator uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.config.scenario import load_scenario
from gpuserve.experiments import run_scenario
from gpuserve.fidelity.calibrate import load_overheads, overhead_overrides


def test_calibrate_writes_a_loadable_profile(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    path = profiles / "process-host.yaml"
    result = CliRunner().invoke(app, ["calibrate", "--backend", "process", "--repeats", "2", "--out", str(path)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(path.read_text())
    assert data["platform_start_s"] > 0  # a real process start is never free
    assert data["dispatch_s"] >= 0 and data["result_post_s"] >= 0
    overheads = load_overheads(path)
    scenario_path = tmp_path / "s.yaml"
    scenario_path.write_text(
        "duration_s: 50\nendpoints:\n  - id: e\n    workload: {kind: poisson, rate_per_s: 0.2}\n"
        "    service: {kind: constant, value_s: 1.0}\n    cold_start: {profile: process-host, runtime_init_s: 2.0}\n"
    )
    scenario = load_scenario(scenario_path)
    profile = scenario.config.endpoints[0].cold_start
    assert profile.platform_start_s == overheads["platform_start_s"]
    assert profile.runtime_init_s == 2.0
    # The start-up is also written as a lognormal fitted to the measured starts.
    fitted = data["distributions"]["platform_start_s"]
    assert fitted["kind"] == "lognormal" and fitted["median_s"] > 0 and fitted["sigma"] >= 0
    assert profile.distributions["platform_start_s"].median_s == fitted["median_s"]
    sim = run_scenario(scenario)
    first = sim.jobs.iloc[0]
    worker = sim.workers.set_index("worker_id").loc[first["worker_id"]]
    # The first job waited for a cold start of platform (drawn) + init, then the dispatch overhead.
    assert worker["platform_start_s"] > 0
    assert first["delay_s"] == pytest.approx(2.0 + worker["platform_start_s"] + overheads["dispatch_s"])
    assert first["execution_s"] == pytest.approx(1.0 + overheads["result_post_s"])
    sets = dict(overhead_overrides(overheads, 10.0))
    assert sets["endpoint.cold_start.platform_start_s"] == 10.0 * overheads["platform_start_s"]
