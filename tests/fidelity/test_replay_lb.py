"""`gpuserve replay` of a load-balancing endpoint: the real proxy and process workers, against the simulator's records."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.config.scenario import load_scenario
from gpuserve.core.types import EndpointKind, EndpointSpec, LoadBalancingSpec
from gpuserve.experiments import run_scenario
from gpuserve.fidelity.plan import job_plan, scale_spec

# One worker of two slots, a 5-s hold: 0.8 req/s of 2.5-s requests must wait, some past the hold.
TINY_LB = """
name: tiny-lb
duration_s: 60
seed: 3
billing:
  prices_usd_per_gpu_s: {A100: 0.001}
endpoints:
  - id: lb
    type: load_balancer
    gpu_type: A100
    concurrency_target: 2
    max_concurrency: 2
    hold_timeout_s: 5
    request_timeout_s: 30
    scaling: {min_workers: 0, max_workers: 1, idle_timeout_s: 20, scaler: request_count, scaler_value: 2, flash_boot: false, extra_workers: 0}
    workload: {kind: poisson, rate_per_s: 0.8}
    service: {kind: exponential, mean_s: 2.5}
    cold_start: {container_start_s: 2.0}
"""


@pytest.fixture
def tiny_lb(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_lb.yaml"
    path.write_text(textwrap.dedent(TINY_LB))
    return path


def test_the_plan_gives_every_request_its_sample_in_arrival_order(tiny_lb: Path) -> None:
    scenario = load_scenario(tiny_lb)
    plan = job_plan(scenario.config)
    sim = run_scenario(scenario).jobs
    assert sim["rejected"].any()  # the check below is about requests after a rejection
    served = (sim["status"] == "COMPLETED").to_numpy()
    np.testing.assert_allclose(plan.service_s[served], sim["execution_s"].to_numpy()[served], rtol=0, atol=1e-9)


def test_scale_spec_divides_the_hold_and_request_timeouts() -> None:
    spec = EndpointSpec("e", kind=EndpointKind.LOAD_BALANCER, load_balancing=LoadBalancingSpec(hold_timeout_s=120.0, request_timeout_s=330.0))
    assert scale_spec(spec, 10.0).load_balancing == LoadBalancingSpec(hold_timeout_s=12.0, request_timeout_s=33.0)


def test_replay_of_a_load_balancing_endpoint_matches_the_simulators_records(tiny_lb: Path, tmp_path: Path) -> None:
    out = tmp_path / "live"
    result = CliRunner().invoke(app, ["replay", str(tiny_lb), "--backend", "process", "--speedup", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sim_out = tmp_path / "sim"
    assert CliRunner().invoke(app, ["simulate", str(tiny_lb), "--out", str(sim_out), "--no-plots"]).exit_code == 0
    sim, live = pd.read_csv(sim_out / "jobs.csv"), pd.read_csv(out / "jobs.csv")
    assert len(live) == len(sim) > 20
    assert set(sim.columns) <= set(live.columns)
    assert set(live["status"]) <= {"COMPLETED", "FAILED", "TIMED_OUT"}
    assert (live["rejected"] == (live["status"] == "FAILED")).all()
    assert live["load_balancer"].all()
    assert bool(live.loc[0, "held"])  # the first request meets zero workers
    served = live[live["status"] == "COMPLETED"]
    assert len(served) > 0 and served["worker_id"].notna().all()
    assert bool(served.iloc[0]["cold"])  # it waited for the first worker's start
    # A served request ran at least its planned service time (in scenario seconds).
    assert (served["execution_s"] >= served["service_planned_s"] - 1e-6).all()
    # A rejected one was refused no sooner than the hold timeout (5 s); on a busy machine, later.
    assert (live.loc[live["rejected"], "held_s"] >= 0.9 * 5.0).all()
    workers = pd.read_csv(out / "workers.csv")
    assert len(workers) >= 1 and workers["ready_s"].notna().all()
    assert (workers["ready_s"] > workers["created_s"]).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "lb_requests"] == len(live)
    assert summary.loc[0, "rejected"] == int(live["rejected"].sum())
    compared = CliRunner().invoke(app, ["compare", str(sim_out), str(out), "--out", str(tmp_path / "cmp"), "--no-plots"])
    assert compared.exit_code == 0, compared.output
    assert "rejected requests" in compared.output and "hold p99" in compared.output


def test_replay_refuses_docker_for_load_balancing_endpoints(tiny_lb: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["replay", str(tiny_lb), "--backend", "docker", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert "backend" in result.output and "load-balancing" in result.output
