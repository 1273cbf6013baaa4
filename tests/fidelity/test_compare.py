"""compare on two small hand-made result folders whose numbers are known, so every relative error is exact."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.core.errors import ConfigError
from gpuserve.fidelity.compare import compare_dirs, relative_error


def _write(folder: Path, latencies: list[float], delays: list[float], cold: list[bool], intervals: list[tuple[str, float, float]], summary: dict[str, float]) -> Path:
    folder.mkdir(parents=True)
    n = len(latencies)
    pd.DataFrame(
        {
            "endpoint": ["ep"] * n,
            "job_id": range(n),
            "arrival_s": [float(i) for i in range(n)],
            "start_s": [i + d for i, d in enumerate(delays)],
            "end_s": [i + lat for i, lat in enumerate(latencies)],
            "delay_s": delays,
            "execution_s": [lat - d for lat, d in zip(latencies, delays, strict=True)],
            "latency_s": latencies,
            "status": ["COMPLETED"] * n,
            "cold": cold,
            "worker_id": ["w0"] * n,
        }
    ).to_csv(folder / "jobs.csv", index=False)
    pd.DataFrame(
        [{"worker_id": w, "state": "RUNNING", "start_s": a, "end_s": b} for w, a, b in intervals]
    ).to_csv(folder / "intervals.csv", index=False)
    pd.DataFrame([{"endpoint": "ep", **summary}]).to_csv(folder / "summary.csv", index=False)
    return folder


def test_relative_errors_are_exact(tmp_path: Path) -> None:
    sim = _write(
        tmp_path / "sim",
        [1.0, 2.0, 3.0, 4.0],
        [0.0, 0.0, 1.0, 1.0],
        [True, False, False, False],
        [("w0", 0.0, 10.0), ("w1", 0.0, 5.0)],
        {"jobs": 4, "latency_p50_s": 2.0, "latency_p99_s": 4.0, "delay_p50_s": 0.0, "mean_idle": 0.5, "gpu_s_billed": 100.0, "cost_usd": 0.08},
    )
    live = _write(
        tmp_path / "live",
        [1.0, 2.0, 3.0, 5.0],
        [0.0, 0.0, 1.0, 2.0],
        [True, True, False, False],
        # 10 s span: seconds 0-4 live has 4 workers vs 2 simulated (off by 2); seconds 5-9 it has 1 vs 1.
        [("a", 0.0, 10.0), ("b", 0.0, 5.0), ("c", 0.0, 5.0), ("d", 0.0, 5.0)],
        {"jobs": 4, "latency_p50_s": 2.2, "latency_p99_s": 5.0, "delay_p50_s": 0.0, "mean_idle": 0.25, "gpu_s_billed": 110.0, "cost_usd": 0.1,
         "ledger_cost_usd": 0.086},
    )
    comp, paths = compare_dirs(sim, live, tmp_path / "cmp", plots=True)
    t = comp.table.set_index("metric")
    assert t.loc["latency_p50_s", "relative_error"] == pytest.approx(0.10)
    assert t.loc["latency_p50_s", "ok"]  # exactly on the 10% target counts as met
    assert t.loc["latency_p99_s", "relative_error"] == pytest.approx(0.25)
    assert not t.loc["latency_p99_s", "ok"]
    assert t.loc["cold_starts", "simulated"] == 1 and t.loc["cold_starts", "measured"] == 2
    assert t.loc["cold_starts", "relative_error"] == pytest.approx(1.0)
    assert t.loc["mean_idle", "relative_error"] == pytest.approx(-0.5)
    assert t.loc["gpu_s_billed", "relative_error"] == pytest.approx(0.10)
    assert t.loc["cost_usd", "relative_error"] == pytest.approx(0.25)
    assert not t.loc["cost_usd", "ok"]  # cost has a target beside latency and cold starts
    # The live server's own ledger against the one simulated ledger.
    assert t.loc["ledger_cost_usd", "simulated"] == pytest.approx(0.08)
    assert t.loc["ledger_cost_usd", "relative_error"] == pytest.approx(0.075)
    assert t.loc["ledger_cost_usd", "ok"]
    assert "ledger_gpu_s_billed" not in t.index  # the live folder has no such column: no row
    assert t.loc["delay_p50_s", "relative_error"] == 0.0  # 0 against 0
    assert comp.seconds == 10
    assert comp.within_one == pytest.approx(0.5)
    names = {p.name for p in paths}
    assert {"comparison.csv", "comparison.md", "compare_latency_cdf.png", "compare_workers.png"} <= names
    written = pd.read_csv(tmp_path / "cmp" / "comparison.csv").set_index("metric")
    assert written.loc["within_one_fraction", "measured"] == pytest.approx(0.5)
    assert "+25.0%" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_relative_error_edge_cases() -> None:
    assert relative_error(0.0, 0.0) == 0.0
    assert math.isnan(relative_error(0.0, 1.0))
    assert relative_error(-2.0, -1.0) == pytest.approx(0.5)
    assert math.isnan(relative_error(float("nan"), 1.0))


def test_compare_cli_and_bad_folder(tmp_path: Path) -> None:
    sim = _write(tmp_path / "s", [1.0], [0.0], [False], [("w", 0.0, 3.0)], {"jobs": 1, "latency_p50_s": 1.0})
    live = _write(tmp_path / "l", [1.5], [0.0], [False], [("w", 0.0, 3.0)], {"jobs": 1, "latency_p50_s": 1.5})
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(sim), str(live), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "+50.0%" in result.output
    assert (live / "compare" / "comparison.md").is_file()
    result = runner.invoke(app, ["compare", str(tmp_path / "nope"), str(live)])
    assert result.exit_code == 2
    with pytest.raises(ConfigError, match="is not a folder"):
        compare_dirs(tmp_path / "nope", live)
