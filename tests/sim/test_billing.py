"""Hand-computed bills for small simulated timelines under each billing preset, and the ledger against the reference rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gpuserve.core.billing import BILLING_PRESETS, bill_worker, billing_preset, round_up_s
from gpuserve.core.types import WorkerState
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.records import SimResult
from gpuserve.sim.service import Constant, Exponential
from gpuserve.sim.workload import Poisson
from tests.sim.sim_builders import endpoint, run

# Full start 1 + 8 GB / 4 GB/s = 3 s; a flash resume 0.5 s; snapshots kept 100 s.
FLASH = ColdStartProfile(container_start_s=1.0, model_size_gb=8.0, host_cache_bandwidth_gb_s=4.0, flash_resume_s=0.5, flash_retention_s=100.0)


def _flash_run(billing: str, **overrides: object) -> SimResult:
    # Three jobs of 1 s, idle timeout 5 s, at 0, 20 and 200 (the run ends at 250):
    #   w0: INITIALIZING 0 -> 3, RUNNING 3 -> 4, IDLE 4 -> 9, parked 9 -> 20 (resumed by w1)
    #   w1: INITIALIZING 20 -> 20.5 (flash), RUNNING 20.5 -> 21.5, IDLE 21.5 -> 26.5, parked 26.5 -> 126.5 (expired)
    #   w2: INITIALIZING 200 -> 203 (full start), RUNNING 203 -> 204, IDLE 204 -> 209, parked 209 -> 250 (run ends)
    ep = endpoint(times=(0.0, 20.0, 200.0), cold=FLASH, service=Constant(1.0), idle_timeout_s=5.0, flash_boot=True)
    return run(ep, duration_s=250.0, prices={"A100": 0.001}, billing=billing, billing_overrides=dict(overrides))


def _billed_by_worker(result: SimResult) -> list[float]:
    both = [result.intervals[["worker_id", "billed_s"]], result.parked[["worker_id", "billed_s"]]]
    per = pd.concat(both).groupby("worker_id")["billed_s"].sum()
    return [float(per[w]) for w in sorted(per.index, key=lambda w: int(w.rsplit("w", 1)[1]))]


def test_the_timeline_behind_the_flash_boot_bills() -> None:
    result = _flash_run("runpod")
    parked = result.parked.sort_values("start_s")
    assert list(zip(parked["start_s"], parked["end_s"], strict=True)) == [(9.0, 20.0), (26.5, 126.5), (209.0, 250.0)]


def test_runpod_bills_start_up_running_and_the_idle_window_but_not_parked() -> None:
    # 3 + 1 + 5 = 9 s; 0.5 + 1 + 5 = 6.5 s, rounded up to 7 s; 9 s. Parked spans are free.
    result = _flash_run("runpod")
    assert _billed_by_worker(result) == [9.0, 7.0, 9.0]
    assert not result.parked["billed"].any()
    assert result.summary.iloc[0].gpu_s_billed == 25.0
    assert result.summary.iloc[0].cost_usd == pytest.approx(25.0 * 0.001)


def test_runpod_state_table_never_bills_idle() -> None:
    # INITIALIZING + RUNNING only: 3 + 1 = 4 s; 0.5 + 1 = 1.5 -> 2 s; 4 s.
    result = _flash_run("runpod_state_table")
    assert _billed_by_worker(result) == [4.0, 2.0, 4.0]
    assert not result.intervals.loc[result.intervals["state"] == "IDLE", "billed"].any()
    assert result.summary.iloc[0].gpu_s_billed == 10.0


def test_always_on_bills_every_second_parked_included() -> None:
    # 9 + 11 parked = 20 s; 6.5 + 100 = 106.5 -> 107 s; 9 + 41 = 50 s.
    result = _flash_run("always_on")
    assert _billed_by_worker(result) == [20.0, 107.0, 50.0]
    assert result.summary.iloc[0].gpu_s_billed == 177.0


def test_rounding_zero_bills_exact_seconds() -> None:
    result = _flash_run("runpod", rounding_s=0.0)
    assert _billed_by_worker(result) == [9.0, 6.5, 9.0]


def test_a_state_override_merges_onto_the_preset() -> None:
    # The state table with IDLE billed is the runpod preset again.
    result = _flash_run("runpod_state_table", states={"IDLE": True})
    assert result.summary.iloc[0].gpu_s_billed == 25.0


def test_aws_lambda_bills_gb_seconds_of_execution_and_a_fee_per_request() -> None:
    # Three jobs of 1 s at 16 GB: 48 GB-s at USD 0.0000166667, plus 3 x USD 0.0000002. Worker time is free.
    ep = endpoint(times=(0.0, 20.0, 200.0), cold=FLASH, service=Constant(1.0), idle_timeout_s=5.0, flash_boot=True, memory_gb=16.0)
    result = run(ep, duration_s=250.0, billing="aws_lambda")
    summary = result.summary.iloc[0]
    assert summary.gb_s_billed == pytest.approx(48.0)
    assert summary.gpu_s_billed == 0.0
    assert summary.cost_usd == pytest.approx(48.0 * 0.0000166667 + 3 * 0.0000002)
    assert result.jobs["cost_usd"].tolist() == pytest.approx([16.0 * 0.0000166667 + 0.0000002] * 3)


def test_aws_lambda_rounds_each_execution_up_to_the_millisecond() -> None:
    # 0.2004 s bills 0.201 s.
    ep = endpoint(times=(0.0,), service=Constant(0.2004), memory_gb=1.0)
    result = run(ep, duration_s=10.0, billing="aws_lambda")
    assert result.jobs.iloc[0].gb_s_billed == pytest.approx(0.201)


def test_per_second_rounding_happens_once_per_worker() -> None:
    # One worker runs 2.4 s and 2.3 s back to back with a 0.5-s idle gap under the state
    # table: 4.7 billed seconds, rounded once to 5 (not 3 + 3 = 6 per interval).
    result = run(endpoint(times=(0.0, 2.9), service=Constant(2.4), idle_timeout_s=10.0), duration_s=30.0, billing="runpod_state_table")
    iv = result.intervals.sort_values("start_s")
    assert list(iv["state"]) == ["RUNNING", "IDLE", "RUNNING", "IDLE"]
    assert result.summary.iloc[0].gpu_s_billed == pytest.approx(5.0)
    # The rounding's 0.2 s sits on the last billed interval.
    assert iv["billed_s"].tolist() == pytest.approx([2.4, 0.0, 2.6, 0.0])


def test_active_workers_are_billed_in_every_state_at_the_discount() -> None:
    # min 1: the active worker is up 0 -> 100 s, idle but for one 5-s job, 30% off under every Runpod preset.
    for preset in ("runpod", "runpod_state_table"):
        result = run(endpoint(times=(10.0,), min_workers=1, max_workers=1, service=Constant(5.0)), duration_s=100.0, prices={"A100": 0.01}, billing=preset)
        assert result.summary.iloc[0].gpu_s_billed == pytest.approx(100.0)
        assert result.summary.iloc[0].cost_usd == pytest.approx(100.0 * 0.01 * 0.7)


def test_policies_and_idle_timeouts_differ_in_cost_under_the_default() -> None:
    costs = set()
    for idle_timeout_s in (1.0, 30.0, 300.0):
        ep = endpoint(workload=Poisson(0.2), service=Constant(2.0), idle_timeout_s=idle_timeout_s, max_workers=4)
        costs.add(round(float(run(ep, duration_s=600.0, seed=3).summary.iloc[0].cost_usd), 9))
    assert len(costs) == 3


def test_the_vectorised_ledger_matches_the_reference_rule_worker_by_worker() -> None:
    cold = ColdStartProfile(container_start_s=1.3, flash_resume_s=0.4, flash_retention_s=30.0)
    ep = endpoint(workload=Poisson(0.5), service=Exponential(1.7), cold=cold, idle_timeout_s=2.5, min_workers=1, max_workers=5, flash_boot=True)
    for preset in BILLING_PRESETS:
        if preset == "aws_lambda":
            continue
        model = billing_preset(preset, prices_usd_per_gpu_s={"A100": 0.001})
        result = run(ep, duration_s=400.0, seed=7, billing=preset)
        assert len(result.parked) > 0
        iv, parked = result.intervals, result.parked
        for wid in result.workers["worker_id"]:
            rows = iv[iv["worker_id"] == wid]
            spans = [(WorkerState(r.state), r.start_s, r.end_s, bool(r.active), r.state == "RUNNING") for r in rows.itertuples()]
            mine = parked[parked["worker_id"] == wid]
            billed_s, cost_usd = bill_worker(model, spans, "A100", 1, list(zip(mine["start_s"], mine["end_s"], strict=True)))
            assert rows["billed_s"].sum() + mine["billed_s"].sum() == pytest.approx(billed_s, abs=1e-9)
            assert rows["cost_usd"].sum() + mine["cost_usd"].sum() == pytest.approx(cost_usd, abs=1e-12)
            assert math.isclose(billed_s, round(billed_s)) or billed_s == 0.0


def test_round_up_ignores_float_noise() -> None:
    assert round_up_s(5.000000000001, 1.0) == 5.0
    assert round_up_s(5.2, 1.0) == 6.0
    assert round_up_s(0.0004, 0.001) == pytest.approx(0.001)
    assert round_up_s(5.2, 0.0) == 5.2
    assert np.isclose(round_up_s(1e6 + 0.5, 1.0), 1e6 + 1)
