"""Replications: seeds derived from the base seed, mean and 95% CI per metric, parallel runs equal serial ones, seed sweeps refused."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.experiments import (
    Scenario,
    aggregate,
    load_scenario,
    replication_seeds,
    run_replicated,
    run_sweep,
    write_replicated,
    write_sweep,
)
from gpuserve.experiments.replicate import t_975

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"


def _short(*sets: tuple[str, str]) -> Scenario:
    return load_scenario(QUICKSTART, [("duration_s", "300"), *sets])


def test_seeds_follow_from_the_base_seed_and_extend_without_changing() -> None:
    seeds = replication_seeds(1, 4)
    assert seeds[0] == 1 and len(set(seeds)) == 4
    assert replication_seeds(1, 4) == seeds and replication_seeds(1, 6)[:4] == seeds
    assert replication_seeds(2, 4) != seeds
    with pytest.raises(ConfigError, match="replications must be an integer >= 1, was 0"):
        replication_seeds(1, 0)


def test_t_quantile_and_the_ci_of_three_runs() -> None:
    assert t_975(4) == 2.7764
    assert t_975(1000) == pytest.approx(1.9623, abs=1e-4)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (31, 45, 100):
        assert t_975(df) == pytest.approx(float(scipy_stats.t.ppf(0.975, df)), abs=1e-4)
    # p99 10, 12, 14 s: mean 12, sd 2, half-width 4.3027 x 2 / sqrt(3) = 4.968 s.
    runs = pd.DataFrame({"setting": ["a"] * 3 + ["b"], "replication": [0, 1, 2, 0], "latency_p99_s": [10.0, 12.0, 14.0, 7.0]})
    table = aggregate(runs, ["setting"])
    assert table["replications"].tolist() == [3, 1]
    assert table["latency_p99_s"].tolist() == [12.0, 7.0]
    assert table["latency_p99_s_ci95"].iloc[0] == pytest.approx(4.3027 * 2 / math.sqrt(3))
    assert math.isnan(table["latency_p99_s_ci95"].iloc[1])


def test_replications_differ_and_the_same_base_seed_gives_identical_cis(tmp_path: Path) -> None:
    scenario = _short()
    first = run_replicated(scenario, 3)
    runs = first.runs
    assert runs["seed"].tolist() == replication_seeds(1, 3)
    assert runs["latency_p99_s"].nunique() == 3 and runs["cost_usd"].nunique() == 3
    again = run_replicated(scenario, 3)
    pd.testing.assert_frame_equal(first.summary, again.summary)
    # Replication 0 is the plain run with the base seed.
    from gpuserve.experiments import run_scenario

    pd.testing.assert_frame_equal(run_scenario(scenario).summary, first.results[0].summary)
    row = first.summary.iloc[-1]
    assert row["replications"] == 3 and row["latency_p99_s_ci95"] > 0
    write_replicated(first, tmp_path / "r", plots=False)
    assert (tmp_path / "r" / "rep02" / "jobs.csv").is_file()
    assert len(pd.read_csv(tmp_path / "r" / "runs.csv")) == 3


def test_the_replications_key_and_a_sweep_with_replications(tmp_path: Path) -> None:
    scenario = _short(("replications", "2"))
    assert scenario.replications == 2
    swept = run_sweep(scenario, {"endpoint.scaling.idle_timeout_s": [1, 300], "endpoint.scaling.max_workers": [2, 4]})
    table = swept.table
    assert len(table) == 4 and len(swept.results) == 8 and len(swept.runs) == 8
    assert table["endpoint.scaling.idle_timeout_s"].tolist() == [1, 1, 300, 300]
    assert table["endpoint.scaling.max_workers"].tolist() == [2, 4, 2, 4]
    assert (table["replications"] == 2).all() and "cost_usd_ci95" in table
    write_sweep(swept, tmp_path / "sw", plots=False)
    assert (tmp_path / "sw" / "point03" / "rep01" / "summary.csv").is_file()


def test_parallel_runs_equal_serial_ones() -> None:
    scenario = _short()
    sweep = {"endpoint.scaling.idle_timeout_s": [1, 60, 300]}
    serial = run_sweep(scenario, sweep, replications=2, jobs=1)
    parallel = run_sweep(scenario, sweep, replications=2, jobs=2)
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    for a, b in zip(serial.results, parallel.results, strict=True):
        pd.testing.assert_frame_equal(a.jobs, b.jobs)
        pd.testing.assert_frame_equal(a.intervals, b.intervals)


def test_sweeping_the_seed_is_refused_with_a_pointer_to_replications() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.seed cannot be swept: use --replications N"):
        run_sweep(_short(), {"seed": [1, 2, 3]})


def test_records_written_where_each_run_ran_equal_a_serial_write(tmp_path: Path) -> None:
    scenario = _short()
    sweep = {"endpoint.scaling.idle_timeout_s": [1, 300]}
    serial = run_sweep(scenario, sweep, replications=2, jobs=1)
    write_sweep(serial, tmp_path / "serial", plots=False)
    parallel = run_sweep(scenario, sweep, replications=2, jobs=2, records_dir=tmp_path / "parallel")
    assert parallel.records_written
    write_sweep(parallel, tmp_path / "parallel", plots=False)
    for name in ("sweep.csv", "runs.csv", "point01/rep01/jobs.csv", "point00/rep00/intervals.csv"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes(), name
