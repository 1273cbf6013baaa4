"""replay on the real platform (server on 127.0.0.1, process workers, client process), plus its pure parts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.config.scenario import load_scenario
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.experiments import run_scenario
from gpuserve.fidelity.plan import ColdStartLedger, job_plan, scale_spec
from gpuserve.sim.coldstart import ColdStartProfile

TINY = """
name: tiny
duration_s: 100
seed: 5
billing:
  prices_usd_per_gpu_s: {A100: 0.001}
endpoints:
  - id: ep
    gpu_type: A100
    scaling: {min_workers: 0, max_workers: 2, idle_timeout_s: 20, scaler: request_count, scaler_value: 1, flash_boot: false, extra_workers: 0}
    policy: {name: runpod_request_count}
    workload: {kind: poisson, rate_per_s: 0.2}
    service: {kind: exponential, mean_s: 1.0}
    cold_start: {container_start_s: 1.0, runtime_init_s: 1.0}
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    return path


def test_plan_matches_the_simulators_own_draws(tiny: Path) -> None:
    scenario = load_scenario(tiny)
    plan = job_plan(scenario.config)
    sim = run_scenario(scenario)
    assert len(plan) == len(sim.jobs)
    np.testing.assert_array_equal(plan.arrival_s, sim.jobs["arrival_s"].to_numpy())
    # FIFO dispatch: the k-th job of an endpoint gets its k-th service sample.
    np.testing.assert_allclose(plan.service_s, sim.jobs["execution_s"].to_numpy(), rtol=0, atol=1e-9)


def test_scale_spec_divides_every_time() -> None:
    spec = EndpointSpec(
        "e",
        scaling=ScalingSpec(max_workers=4, idle_timeout_s=60.0, scaler=ScalerType.QUEUE_DELAY, scaler_value=8.0, scale_to_zero_grace_s=10.0),
        policy=PolicySpec("knative_kpa", {"stable_window_s": 30.0}),
        execution_timeout_s=600.0,
    )
    fast = scale_spec(spec, 10.0)
    assert fast.scaling.idle_timeout_s == 6.0
    assert fast.scaling.scaler_value == 0.8  # a queue-delay target is seconds
    assert fast.scaling.scale_to_zero_grace_s == 1.0
    assert fast.execution_timeout_s == 60.0
    assert fast.policy.params["stable_window_s"] == 3.0
    assert fast.policy.params["tick_interval_s"] == 0.2  # a default made explicit, then scaled
    counted = scale_spec(EndpointSpec("c", scaling=ScalingSpec(scaler=ScalerType.REQUEST_COUNT, scaler_value=3.0)), 10.0)
    assert counted.scaling.scaler_value == 3.0  # a request count is not a time


def test_cold_start_ledger_follows_the_simulator() -> None:
    profile = ColdStartProfile(image_size_gb=10.0, pull_bandwidth_gb_s=1.0, container_start_s=2.0, flash_resume_s=0.5, flash_retention_s=30.0)
    ledger = ColdStartLedger(profile, flash_boot=True)
    assert ledger.start(0.0).total_s == 12.0  # the first start pulls the image
    assert ledger.start(4.0).image_pull_s == 6.0  # waits for the pull under way
    assert ledger.start(20.0).total_s == 2.0  # cached
    ledger.retire(25.0, was_ready=True)
    assert ledger.start(40.0).flash_resume_s == 0.5  # within retention
    ledger.retire(41.0, was_ready=True)
    assert ledger.start(80.0).flash_resume_s == 0.0  # expired
    ledger.retire(81.0, was_ready=False)  # never ready: nothing to resume
    assert ledger.start(82.0).flash_resume_s == 0.0


def test_replay_process_backend_writes_simulates_records(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "live"
    result = CliRunner().invoke(app, ["replay", str(tiny), "--backend", "process", "--speedup", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sim_out = tmp_path / "sim"
    assert CliRunner().invoke(app, ["simulate", str(tiny), "--out", str(sim_out), "--no-plots"]).exit_code == 0
    sim_jobs = pd.read_csv(sim_out / "jobs.csv")
    jobs = pd.read_csv(out / "jobs.csv")
    assert len(jobs) == len(sim_jobs) == len(job_plan(load_scenario(tiny).config)) > 5
    assert set(sim_jobs.columns) <= set(jobs.columns)
    assert (jobs["status"] == "COMPLETED").all()
    assert jobs["worker_id"].notna().all()
    assert (jobs["delay_s"] >= 0).all()
    # The live job ran at least its sampled service time (scaled back to scenario seconds).
    np.testing.assert_allclose(jobs["service_planned_s"], sim_jobs["execution_s"], atol=1e-9)
    assert (jobs["execution_s"] >= jobs["service_planned_s"] - 1e-6).all()
    assert bool(jobs.loc[0, "cold"])  # the first job meets zero workers
    for name in ("intervals", "workers", "summary"):
        frame = pd.read_csv(out / f"{name}.csv")
        assert set(pd.read_csv(sim_out / f"{name}.csv").columns) <= set(frame.columns), name
    intervals = pd.read_csv(out / "intervals.csv")
    assert {"INITIALIZING", "RUNNING"} <= set(intervals["state"])
    assert (intervals["end_s"] >= intervals["start_s"]).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "jobs"] == len(jobs)
    assert summary.loc[0, "cost_usd"] > 0
    # The server's own ledger against the replay's records priced by the simulator's ledger: the
    # same registry intervals, except that the server bills a stopped worker until it has exited
    # (the records end it at the stop order, as the simulator does): at most ~1.5 wall s per
    # worker (x20 at this speedup) plus its one-second rounding.
    extra_gpu_s = summary.loc[0, "ledger_gpu_s_billed"] - summary.loc[0, "gpu_s_billed"]
    workers_started = len(pd.read_csv(out / "workers.csv"))
    assert -1e-6 <= extra_gpu_s <= workers_started * (1.5 * 20 + 1)
    assert summary.loc[0, "ledger_cost_usd"] == pytest.approx(summary.loc[0, "ledger_gpu_s_billed"] * 0.001)
    for png in ("latency_cdf.png", "workers_by_state.png", "queue_length.png"):
        assert (out / png).is_file()
    compared = CliRunner().invoke(app, ["compare", str(sim_out), str(out), "--no-plots"], env={"COLUMNS": "200"})
    assert compared.exit_code == 0
    assert "cost (USD), server ledger" in compared.output


def test_replay_rejects_bad_options(tiny: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["replay", str(tiny), "--speedup", "0"])
    assert result.exit_code == 2 and "--speedup" in result.output
    result = runner.invoke(app, ["replay", str(tiny), "--backend", "k8s"])
    assert result.exit_code == 2 and "k8s" in result.output
