"""The shipped plots: titles name scenario and endpoint, sweep labels never overlap, the Pareto front and the CI rule."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.text import Annotation

import gpuserve
from gpuserve.experiments.analysis import cheapest_meeting, pareto_front

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def _sweep_table() -> pd.DataFrame:
    # 12 settings, several on the same spot (max_workers 1 whatever the idle timeout), as a real sweep gives.
    rows = []
    for point, (idle, workers) in enumerate((i, w) for i in (5, 60, 600) for w in (1, 2, 3, 4)):
        p99 = {1: 1200.0, 2: 35.0, 3: 19.0 + idle / 600, 4: 17.0 + idle / 300}[workers]
        cost = {1: 2.3, 2: 2.7, 3: 3.5 + idle / 500, 4: 4.0 + idle / 400}[workers]
        rows.append({"endpoint.scaling.idle_timeout_s": idle, "endpoint.scaling.max_workers": workers, "point": point,
                     "setting": f"idle_timeout_s={idle}, max_workers={workers}", "replications": 3, "endpoint": "chat",
                     "latency_p99_s": p99, "latency_p99_s_ci95": p99 / 10, "cost_usd": cost, "cost_usd_ci95": 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_pareto_front_keeps_exactly_the_undominated_rows() -> None:
    table = pd.DataFrame({"latency_p99_s": [10.0, 20.0, 15.0, 10.0, 30.0], "cost_usd": [5.0, 2.0, 4.0, 6.0, 2.0]})
    # (10, 6) loses to (10, 5); (30, 2) to (20, 2); the rest trade cost for latency.
    assert pareto_front(table).tolist() == [True, True, True, False, False]


def test_cheapest_meeting_judges_by_the_upper_end_of_the_interval() -> None:
    table = pd.DataFrame(
        {"setting": ["a", "b", "c"], "latency_p99_s": [9.0, 9.5, 6.0], "latency_p99_s_ci95": [1.5, 0.2, 0.5], "cost_usd": [1.0, 2.0, 3.0]}
    )
    chosen = cheapest_meeting(table, target=10.0)
    # a's mean meets 10 s but 9.0 + 1.5 does not: b is the cheapest setting that meets it with 95% confidence.
    assert chosen["setting"].tolist() == ["b", "c"]
    assert bool(cheapest_meeting(table, 100.0).iloc[0]["meets_mean"]) and cheapest_meeting(table, 100.0).iloc[0]["setting"] == "a"


def test_sweep_plot_labels_overlap_nothing_and_the_title_names_scenario_and_endpoint() -> None:
    fig = gpuserve.plot_sweep_cost_vs_p99(_sweep_table(), scenario="quickstart")
    ax = fig.axes[0]
    assert "quickstart / chat" in ax.get_title() and "3 replications" in ax.get_title()
    assert ax.get_xscale() == "log"  # p99 from 17 s to 1200 s
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = [c for c in ax.get_children() if isinstance(c, Annotation)]
    # Settings on one spot share a label: the four max_workers=1 points read "5, 60, 600 / 1".
    assert "5, 60, 600 / 1" in [t.get_text() for t in labels]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    plt.close(fig)


def test_comparison_plot_has_cost_p99_and_cold_starts_side_by_side() -> None:
    table = _sweep_table().assign(cold_start_fraction=np.linspace(0.01, 0.2, 12))
    fig = gpuserve.plot_comparison(table, scenario="quickstart")
    assert [ax.get_title() for ax in fig.axes] == ["cost (USD)", "p99 latency (s)", "jobs that met a cold start"]
    assert "quickstart / chat" in fig.get_suptitle()
    plt.close(fig)


def test_run_plots_are_titled_and_binned(tmp_path: Path) -> None:
    result = gpuserve.simulate(QUICKSTART, {"duration_s": 900}, plots=False)
    assert isinstance(result, gpuserve.experiments.SimResult)
    paths = gpuserve.plot_run(result, tmp_path, scenario="quickstart")
    assert [p.name for p in paths] == ["latency_cdf.png", "workers_by_state.png", "queue_length.png"]
    fig = gpuserve.plot_workers_by_state(result, scenario="quickstart")
    assert fig.axes[0].get_title() == "Workers by state: quickstart / chat"
    assert "mean per 5 s bin" in fig.axes[0].get_ylabel()  # 900 s: 180 bins of 5 s
    plt.close(fig)
    fig = gpuserve.plot_queue_and_workers(result, scenario="quickstart")
    assert [ax.get_ylabel() for ax in fig.axes] == ["workers", "jobs in queue"]
    plt.close(fig)
