"""Runs at trace scale: endpoints that share nothing run in separate processes and merge to one
process's records; a summary computed without the per-row tables equals the tables' summary."""

from __future__ import annotations

import pandas as pd
import pytest

from gpuserve.core.billing import billing_preset
from gpuserve.core.types import LoadBalancingSpec
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, SimEndpoint, Simulation
from gpuserve.sim.failures import FailureModel, Update
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.records import SimResult, build_result, summary_of
from gpuserve.sim.service import Exponential, Lognormal
from gpuserve.sim.shards import (
    merge_records,
    plan_shards,
    run_parts,
    run_sharded,
    shard_blockers,
    shard_groups,
)
from gpuserve.sim.workload import Bursty, Poisson, Replay
from tests.sim.sim_builders import endpoint


def _config(endpoints: tuple[SimEndpoint, ...], **kw: object) -> SimConfig:
    return SimConfig(
        endpoints=endpoints,
        billing=billing_preset("runpod", prices_usd_per_gpu_s={"A100": 0.001}),
        duration_s=float(kw.pop("duration_s", 900.0)),  # type: ignore[arg-type]
        seed=11,
        **kw,  # type: ignore[arg-type]
    )


def _mixed() -> SimConfig:
    """Six endpoints with most of the engine's features, each with its own image (so nothing is shared)."""
    eps = (
        endpoint("a", workload=Poisson(1.5), service=Exponential(0.8), max_workers=8, idle_timeout_s=20.0,
                 cold=ColdStartProfile(image="img-a", image_size_gb=2.0, container_start_s=0.5, runtime_init_s=1.0)),
        endpoint("b", workload=Bursty(rate_on_per_s=4.0, rate_off_per_s=0.1, mean_on_s=40.0, mean_off_s=150.0),
                 service=Lognormal(1.2, 0.6), max_workers=5, idle_timeout_s=10.0, flash_boot=True, min_workers=1,
                 cold=ColdStartProfile(image="img-b", image_size_gb=1.0, runtime_init_s=2.0, flash_resume_s=0.3)),
        endpoint("c", workload=Poisson(0.4), service=Exponential(3.0), max_workers=3, dispatch="bind_to_launch",
                 policy="fixed_keepalive", params={"keep_alive_s": 30.0},
                 cold=ColdStartProfile(image="img-c", container_start_s=2.0),
                 failures=FailureModel(crash_per_start=0.1, crash_per_running_hour=20.0),
                 jobs=JobOptions(ttl_s=20.0, ttl_fraction=0.5, low_priority_fraction=0.2)),
        endpoint("d", workload=Poisson(5.0), service=Exponential(1.5), max_workers=2, concurrency=3,
                 load_balancing=LoadBalancingSpec(max_concurrency=3, concurrency_target=3, hold_timeout_s=4.0),
                 cold=ColdStartProfile(image="img-d", runtime_init_s=3.0)),
        endpoint("e", workload=Poisson(1.0), service=Exponential(2.0), max_workers=4, idle_timeout_s=5.0,
                 cold=ColdStartProfile(image="img-e", image_size_gb=3.0),
                 jobs=JobOptions(cancel_fraction=0.3, patience=Exponential(4.0), runsync_fraction=0.5, runsync_wait_s=3.0)),
        endpoint("f", workload=Poisson(0.05), service=Exponential(1.0), max_workers=1, idle_timeout_s=60.0),
    )
    return _config(eps, updates=(Update(at_s=300.0, endpoint="a"), Update(at_s=450.0, endpoint="e")))


def _assert_same(a: SimResult, b: SimResult) -> None:
    for name in ("jobs", "intervals", "parked", "workers", "summary"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)
    assert a.end_s == b.end_s
    assert a.controller_calls == b.controller_calls


def test_sharded_records_equal_one_process() -> None:
    config = _mixed()
    assert shard_blockers(config) == []
    whole = build_result(Simulation(config).run())
    assert len(whole.jobs) > 2000 and whole.summary["worker_crashes"].iloc[-1] > 0  # the features did something
    assert set(whole.jobs["status"].astype(str)) >= {"COMPLETED", "CANCELLED", "FAILED"}
    shards = plan_shards(config, 3)
    assert len(shards) == 3 and sorted(i for s in shards for i in s) == list(range(6))
    parts = run_parts(config, shards)
    merged = build_result(merge_records(config, parts))
    _assert_same(whole, merged)
    # Another split (two processes, different endpoints together) gives the same records too.
    run = run_sharded(config, 2)
    assert len(run.shards) == 2, run.note
    _assert_same(whole, build_result(run.records))


def test_shard_runs_on_to_the_whole_runs_end() -> None:
    """A shard whose own run ended (at the horizon, 120 s) runs on to the last job's end (123 s): its
    idle worker retires at its keep-alive (121 s) in between, as in one process."""
    eps = (
        endpoint("early", times=(1.0,), idle_timeout_s=115.0),  # its job ends at 6 s: due at 121 s
        endpoint("late", times=(118.0,), idle_timeout_s=30.0),  # its job ends at 123 s
    )
    config = _config(eps, duration_s=120.0)
    whole = build_result(Simulation(config).run())
    run = run_sharded(config, 2)
    assert len(run.shards) == 2, run.note
    merged = build_result(run.records)
    _assert_same(whole, merged)
    early = merged.workers[merged.workers["endpoint"] == "early"]
    assert early["retired_s"].iloc[0] == pytest.approx(121.0)
    assert merged.end_s == pytest.approx(123.0)


def test_same_instant_across_shards_falls_back_to_one_process() -> None:
    """Two endpoints acting at the very same instant: only one process knows their order."""
    eps = (endpoint("x", times=(1.0, 50.0)), endpoint("y", times=(1.0, 50.0)))
    config = _config(eps, duration_s=100.0)
    run = run_sharded(config, 2)
    assert run.shards == []
    assert "same instant" in run.note
    _assert_same(build_result(Simulation(config).run()), build_result(run.records))


def test_shared_things_block_or_group_shards() -> None:
    eps = (endpoint("a", workload=Replay((1.0,))), endpoint("b", workload=Replay((2.0,))))
    assert shard_blockers(_config(eps, account_max_workers=5)) == ["account_max_workers=5 is one limit across endpoints"]
    hosts = _config(eps, hosts=(HostSpec("h1", gpus={"A100": 2}),))
    assert "declared host" in shard_blockers(hosts)[0]
    run = run_sharded(hosts, 2)
    assert run.shards == [] and run.note.startswith("one process: 1 declared host(s)")
    # Endpoints of one image whose pull takes time share its cache: they stay together.
    pulled = ColdStartProfile(image="shared", image_size_gb=2.0)
    eps3 = (
        endpoint("p", workload=Replay((1.0,)), cold=pulled),
        endpoint("q", workload=Replay((2.0,)), cold=ColdStartProfile(image="shared")),
        endpoint("r", workload=Replay((3.0,))),
    )
    assert shard_groups(_config(eps3)) == [[0, 1], [2]]
    # With no pull time and no extra workers the shared default image changes nothing.
    assert shard_groups(_config(eps)) == [[0], [1]]


def test_summary_without_tables_equals_the_tables_summary() -> None:
    raw = Simulation(_mixed()).run()
    pd.testing.assert_frame_equal(summary_of(raw), build_result(raw).summary, check_exact=True)
    one = Simulation(_config((endpoint("solo", workload=Poisson(2.0), service=Exponential(1.0), flash_boot=True),))).run()
    pd.testing.assert_frame_equal(summary_of(one), build_result(one).summary, check_exact=True)
