"""The public research API: gpuserve.simulate writes a folder, gpuserve.load_results reads it back typed, CSV or parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import gpuserve
from gpuserve.core.errors import ConfigError
from gpuserve.experiments.results import JOB_STATUS_DTYPE, WORKER_STATE_DTYPE

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_run_reads_back_typed_and_equal_to_what_ran(tmp_path: Path, fmt: str) -> None:
    result = gpuserve.simulate(QUICKSTART, {"duration_s": 600}, out=tmp_path, fmt=fmt, plots=False)
    assert isinstance(result, gpuserve.experiments.SimResult)
    loaded = gpuserve.load_results(tmp_path)
    assert loaded.kind == "run" and loaded.name == "quickstart"
    assert loaded.jobs is not None and loaded.intervals is not None and loaded.workers is not None and loaded.summary is not None
    assert loaded.jobs["status"].dtype == JOB_STATUS_DTYPE and loaded.intervals["state"].dtype == WORKER_STATE_DTYPE
    assert isinstance(loaded.jobs["endpoint"].dtype, pd.CategoricalDtype)
    for column in ("arrival_s", "start_s", "latency_s", "cost_usd"):
        assert loaded.jobs[column].dtype == "float64", column
    assert loaded.jobs["cold"].dtype == bool and loaded.jobs["job_id"].dtype == "int64"
    assert loaded.workers["flash_resumed"].dtype == bool
    assert loaded.jobs["latency_s"].tolist() == pytest.approx(result.jobs["latency_s"].tolist())
    assert loaded.summary["cost_usd"].iloc[-1] == pytest.approx(result.summary["cost_usd"].iloc[-1])
    assert loaded.provenance["seeds"] == [1] and loaded.scenario["duration_s"] == 600
    assert loaded.end_s >= 600


def test_records_summary_and_none_write_less(tmp_path: Path) -> None:
    gpuserve.simulate(QUICKSTART, {"duration_s": 300}, out=tmp_path / "s", records="summary", plots=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["provenance.yaml", "scenario.yaml", "summary.csv"]
    gpuserve.simulate(QUICKSTART, {"duration_s": 300}, out=tmp_path / "n", records="none", replications=2, plots=False)
    loaded = gpuserve.load_results(tmp_path / "n")
    # Replications keep their summary and runs tables (the answer), each run writes nothing.
    assert loaded.kind == "replications" and loaded.runs is not None and len(loaded.runs) == 2 and loaded.jobs is None
    assert not (tmp_path / "n" / "rep00").exists()
    with pytest.raises(ConfigError, match="records must be one of all, summary, none"):
        gpuserve.simulate(QUICKSTART, {"duration_s": 300}, out=tmp_path / "x", records="some", plots=False)  # type: ignore[arg-type]


def test_a_sweep_folder_reads_back_with_one_column_per_parameter_and_its_runs(tmp_path: Path) -> None:
    swept = gpuserve.simulate(
        QUICKSTART, {"duration_s": 300}, sweep={"endpoint.scaling.max_workers": [1, 2]}, replications=2, out=tmp_path, plots=False
    )
    assert isinstance(swept, gpuserve.experiments.SweepResult)
    loaded = gpuserve.load_results(tmp_path)
    assert loaded.kind == "sweep" and loaded.sweep is not None
    assert loaded.sweep["endpoint.scaling.max_workers"].tolist() == [1, 2]
    assert {"cost_usd", "cost_usd_ci95", "latency_p99_s_ci95"} <= set(loaded.sweep.columns)
    assert [p.relative_to(tmp_path).as_posix() for p in loaded.folders] == ["point00/rep00", "point00/rep01", "point01/rep00", "point01/rep01"]
    one = gpuserve.load_results(loaded.folders[3])
    assert one.kind == "records" and one.jobs is not None and len(one.jobs) > 0


def test_not_a_results_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="results folder is not a folder"):
        gpuserve.load_results(tmp_path / "missing")
    with pytest.raises(ConfigError, match="holds no results table"):
        gpuserve.load_results(tmp_path)


def test_the_public_names_resolve_and_unknown_ones_fail() -> None:
    for name in gpuserve.__all__:
        assert getattr(gpuserve, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gpuserve.nope  # noqa: B018
