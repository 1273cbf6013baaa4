"""The experiment API without the CLI: its exported names, a run and a sweep as data, and their results folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import gpuserve.experiments as experiments
from gpuserve.experiments import load_scenario, run_scenario, run_sweep, write_run, write_sweep

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def test_exported_members() -> None:
    public = {name for name in dir(experiments) if not name.startswith("_")}
    assert set(experiments.__all__) <= public
    assert {"load_scenario", "run_scenario", "run_sweep", "write_run", "write_sweep", "SimResult"} <= set(experiments.__all__)


def test_a_run_is_data_and_write_run_lays_out_the_folder(tmp_path: Path) -> None:
    scenario = load_scenario(QUICKSTART, [("duration_s", "600")])
    seen: list[tuple[float, float]] = []
    result = run_scenario(scenario, lambda now_s, horizon_s: seen.append((now_s, horizon_s)))
    assert result.summary.iloc[-1]["jobs"] == len(result.jobs) > 0
    assert seen and all(0 <= now_s <= horizon_s for now_s, horizon_s in seen)
    paths = write_run(result, tmp_path / "run", plots=False)
    assert sorted(p.name for p in paths) == ["intervals.csv", "jobs.csv", "parked.csv", "summary.csv", "workers.csv"]


def test_a_sweep_gives_one_row_per_setting_and_write_sweep_one_folder_per_point(tmp_path: Path) -> None:
    scenario = load_scenario(QUICKSTART, [("duration_s", "600")])
    swept = run_sweep(scenario, {"endpoint.scaling.idle_timeout_s": [1, 300]})
    table = swept.table
    assert table["setting"].astype(str).tolist() == ["1", "300"] and len(swept.results) == 2
    # One column per swept parameter; a longer idle timeout keeps workers (and bills) longer.
    assert table["endpoint.scaling.idle_timeout_s"].tolist() == [1, 300]
    assert table["cost_usd"].iloc[1] > table["cost_usd"].iloc[0]
    write_sweep(swept, tmp_path / "sw", plots=False)
    assert pd.read_csv(tmp_path / "sw" / "sweep.csv")["jobs"].tolist() == table["jobs"].tolist()
    assert (tmp_path / "sw" / "point01" / "jobs.csv").is_file()
