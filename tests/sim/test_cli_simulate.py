"""`gpuserve simulate` end to end: results and plots on disk, sweeps, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuserve.cli import app

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
runner = CliRunner()


def test_simulate_quickstart_writes_records_summary_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    result = runner.invoke(app, ["simulate", str(QUICKSTART), "--out", str(out), "--set", "duration_s=1800"])
    assert result.exit_code == 0, result.output
    assert "latency p99 s" in result.output and "cost USD" in result.output
    for name in ("jobs.csv", "intervals.csv", "workers.csv", "summary.csv", "latency_cdf.png", "workers_by_state.png", "queue_length.png"):
        assert (out / name).stat().st_size > 0, name
    jobs = pd.read_csv(out / "jobs.csv")
    assert {"endpoint", "job_id", "arrival_s", "start_s", "end_s", "delay_s", "execution_s", "cold", "worker_id"} <= set(jobs.columns)
    assert jobs["arrival_s"].max() < 1800
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "jobs"] == len(jobs)


def test_seed_option_changes_the_run_and_set_changes_a_field(tmp_path: Path) -> None:
    args = ["simulate", str(QUICKSTART), "--set", "duration_s=600", "--no-plots"]
    runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--seed", "1"])
    runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--seed", "2"])
    runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--seed", "1", "--set", "endpoint.scaling.max_workers=1"])
    a, b, c = (pd.read_csv(tmp_path / d / "jobs.csv") for d in "abc")
    assert not a["arrival_s"].equals(b["arrival_s"])
    assert a["arrival_s"].equals(c["arrival_s"])
    assert c["worker_id"].nunique() <= a["worker_id"].nunique()
    assert pd.read_csv(tmp_path / "c" / "workers.csv").shape[0] >= 1


def test_sweep_gives_one_row_per_setting_and_the_cost_plot(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    result = runner.invoke(
        app,
        ["simulate", str(QUICKSTART), "--out", str(out), "--set", "duration_s=900", "--sweep", "endpoint.scaling.idle_timeout_s=1,30,300"],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sweep.csv")
    assert table["setting"].astype(str).tolist() == ["1", "30", "300"]
    assert (out / "sweep_cost_vs_p99.png").stat().st_size > 0
    # Longer keep-alive, fewer cold starts.
    assert table["cold_start_fraction"].iloc[0] >= table["cold_start_fraction"].iloc[2]


def test_replications_print_mean_and_ci_and_a_seed_sweep_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "reps"
    args = ["simulate", str(QUICKSTART), "--set", "duration_s=300", "--no-plots"]
    result = runner.invoke(app, [*args, "--out", str(out), "--replications", "3", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    # The table title wraps at the runner's 80 columns when the scenario's path is long: compare words.
    words = " ".join(result.output.split())
    assert "mean ± 95% CI over 3 replications" in words and " ± " in result.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "replications"] == 3 and summary.loc[0, "cost_usd_ci95"] > 0
    assert len(pd.read_csv(out / "runs.csv")) == 3
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--sweep", "seed=1,2,3"])
    assert refused.exit_code == 2
    assert "sweep.seed cannot be swept: use --replications N" in refused.output


def test_bad_scenario_is_one_line_naming_field_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("idle_timeout_s: 60", "idle_timeout_s: -3"))
    result = runner.invoke(app, ["simulate", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "endpoints[0].scaling.idle_timeout_s cannot be negative, was -3" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_bad_set_and_sweep_values_exit_2() -> None:
    for extra in (["--set", "nonsense"], ["--set", "endpoints.9.scaling.max_workers=1"], ["--sweep", "endpoint.scaling.max_workers="]):
        result = runner.invoke(app, ["simulate", str(QUICKSTART), "--no-plots", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def test_an_error_quotes_user_input_with_brackets_as_given() -> None:
    result = runner.invoke(app, ["simulate", "missing[bold].yaml"])
    assert result.exit_code == 2
    assert "error: scenario is not a file, was 'missing[bold].yaml'" in result.output


def test_console_script_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  - id: a\n    workload: {kind: poisson, rate_per_s: -2}\n")
    gpuserve = Path(sys.executable).with_name("gpuserve")
    proc = subprocess.run([str(gpuserve), "simulate", str(bad)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: endpoints[0].workload.rate_per_s cannot be negative, was -2"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_results_folder_records_its_provenance_and_reruns_to_identical_results(tmp_path: Path) -> None:
    import yaml

    from gpuserve import __version__
    from gpuserve.experiments import rerun_scenario, run_replicated

    out = tmp_path / "prov"
    args = ["simulate", str(QUICKSTART), "--out", str(out), "--set", "duration_s=300", "--set", "endpoint.scaling.max_workers=2"]
    result = runner.invoke(app, [*args, "--seed", "4", "--replications", "2", "--jobs", "1", "--no-plots"])
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((out / "provenance.yaml").read_text())
    assert record["gpuserve_version"] == __version__ and record["base_seed"] == 4 and len(record["seeds"]) == 2
    assert record["command"][:3] == ["gpuserve", "simulate", str(QUICKSTART)] and "--replications" in record["command"]
    assert record["billing"]["preset"] == "runpod"
    saved = yaml.safe_load((out / "scenario.yaml").read_text())
    assert saved["duration_s"] == 300 and saved["seed"] == 4 and saved["replications"] == 2
    assert saved["endpoints"][0]["scaling"]["max_workers"] == 2
    again = run_replicated(rerun_scenario(out), jobs=1)
    first = pd.read_csv(out / "rep01" / "jobs.csv")
    rerun = again.results[1].jobs.reset_index(drop=True)
    rerun = rerun.astype({c: str for c in rerun.select_dtypes("category").columns})  # CSV holds the names
    pd.testing.assert_frame_equal(rerun, first, check_dtype=False)
    pd.testing.assert_frame_equal(again.summary, pd.read_csv(out / "summary.csv"), check_dtype=False)


def test_records_option_and_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = runner.invoke(app, ["simulate", str(QUICKSTART), "--out", str(out), "--set", "duration_s=300", "--records", "summary"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".csv") == ["summary.csv"]
    assert (out / "workers_by_state.png").is_file()
    # Not a terminal: the progress bar becomes lines, through the writing of files and plots.
    assert "quickstart: 100% done" in result.output and "writing plots" in result.output
    assert "--records" in (out / "provenance.yaml").read_text()
    bad = runner.invoke(app, ["simulate", str(QUICKSTART), "--out", str(out), "--records", "some"])
    assert bad.exit_code == 2 and "--records must be all, summary or none, was 'some'" in bad.output


def test_many_job_records_in_csv_suggest_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpuserve.cli.simulate as simulate_cli

    monkeypatch.setattr(simulate_cli, "PARQUET_HINT_JOBS", 10)  # the real threshold is a million jobs
    args = ["simulate", str(QUICKSTART), "--set", "duration_s=120", "--no-plots"]
    csv = runner.invoke(app, [*args, "--out", str(tmp_path / "c")])
    assert csv.exit_code == 0 and "job records: --format parquet writes them" in " ".join(csv.output.split())
    parquet = runner.invoke(app, [*args, "--out", str(tmp_path / "p"), "--format", "parquet"])
    assert parquet.exit_code == 0 and "--format parquet writes" not in parquet.output
    assert (tmp_path / "p" / "jobs.parquet").is_file()


def test_one_run_split_over_processes_writes_one_process_summary(tmp_path: Path) -> None:
    """`--jobs 2` on one run whose endpoints share nothing: two processes, the same summary, and
    `--records summary` builds no per-job table; declared hosts keep a run in one process, saying why."""
    trace = ROOT / "scenarios" / "traces" / "azure_functions_2019_sample.csv"
    scenario = tmp_path / "split.yaml"
    scenario.write_text(
        f"""name: split
seed: 5
account_max_workers: null
azure_trace:
  path: {trace}
  minutes: 120
  max_functions: 4
  endpoint:
    scaling: {{max_workers: 5, idle_timeout_s: 60, scaler: request_count, scaler_value: 1, extra_workers: 0}}
    policy: {{name: fixed_keepalive, params: {{keep_alive_s: 60}}}}
    service: {{kind: exponential, mean_s: 1.5}}
"""
    )
    for jobs in ("1", "2"):
        result = runner.invoke(
            app, ["simulate", str(scenario), "--out", str(tmp_path / f"j{jobs}"), "--jobs", jobs, "--records", "summary", "--no-plots"]
        )
        assert result.exit_code == 0, result.output
    assert "simulated in 2 processes" in result.output
    one, two = (pd.read_csv(tmp_path / d / "summary.csv") for d in ("j1", "j2"))
    assert len(one) == 5 and one["jobs"].iloc[-1] > 100
    pd.testing.assert_frame_equal(one, two)
    assert not (tmp_path / "j2" / "jobs.csv").exists()
    hosts = runner.invoke(
        app,
        ["simulate", str(ROOT / "scenarios" / "azure_trace.yaml"), "--out", str(tmp_path / "h"), "--jobs", "2",
         "--records", "summary", "--no-plots", "--set", "azure_trace.minutes=20"],
    )
    assert hosts.exit_code == 0, hosts.output
    assert "simulated in one process: 2 declared host(s) share" in hosts.output
