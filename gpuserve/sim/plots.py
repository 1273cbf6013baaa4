"""PNG plots of one run: latency CDF, workers by state, queue length and workers over time (time-weighted, per bin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gpuserve.sim.timeseries import binned_series

__all__ = [
    "DPI",
    "RunLike",
    "new_figure",
    "plot_latency_cdf",
    "plot_queue_and_workers",
    "plot_run",
    "plot_workers_by_state",
    "run_title",
    "save",
    "time_axis",
]

DPI = 120  # 8 x 4.5 in figures come out 960 x 540 px: readable on screen and in a paper column
STATE_COLORS = {"RUNNING": "#2a9d8f", "IDLE": "#e9c46a", "INITIALIZING": "#f4a261", "THROTTLED": "#9d4edd"}
_FINISHED = ("COMPLETED", "TIMED_OUT")


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas, outside pyplot: no GUI backend is chosen or changed (a
    notebook keeps its inline display, a server needs no display), and nothing global holds it."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


class RunLike(Protocol):
    """What the run plots read: a SimResult, or the `Results` of `gpuserve.load_results`."""

    @property
    def jobs(self) -> pd.DataFrame | None: ...

    @property
    def intervals(self) -> pd.DataFrame | None: ...

    @property
    def end_s(self) -> float: ...


def run_title(what: str, scenario: str | None, jobs: pd.DataFrame) -> str:
    """`what: scenario / endpoint` (or `N endpoints`), so a figure says what it shows on its own."""
    endpoints = sorted({str(e) for e in jobs["endpoint"].unique()}) if len(jobs) else []
    where = endpoints[0] if len(endpoints) == 1 else f"{len(endpoints)} endpoints"
    return f"{what}: {scenario} / {where}" if scenario else f"{what}: {where}"


def time_axis(span_s: float) -> tuple[float, str]:
    """The unit a reader wants for a span: (seconds per unit, label)."""
    if span_s <= 1200:
        return 1.0, "time (s)"
    if span_s <= 12 * 3600:
        return 60.0, "time (min)"
    if span_s <= 4 * 86400:
        return 3600.0, "time (h)"
    return 86400.0, "time (days)"


def _bin_label(bin_s: float) -> str:
    for unit, name in ((86400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if bin_s >= unit and bin_s % unit == 0:
            return f"{bin_s / unit:g} {name}"
    return f"{bin_s:g} s"


def _tables(result: RunLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    if result.jobs is None or result.intervals is None:
        raise ValueError("the run plots need the jobs and intervals tables (written with --records all)")
    return result.jobs, result.intervals


def plot_latency_cdf(result: RunLike, scenario: str | None = None, endpoint: str | None = None) -> Figure:
    """Share of finished jobs within each latency, per endpoint (the 8 busiest), p50 and p99 marked."""
    jobs, _ = _tables(result)
    if endpoint is not None:
        jobs = jobs[jobs["endpoint"] == endpoint]
    done = jobs[jobs["status"].astype(str).isin(_FINISHED)]
    fig, ax = new_figure((8, 4.5))
    busiest = done["endpoint"].astype(str).value_counts().index[:8]
    for eid in busiest:
        lat = np.sort(done.loc[done["endpoint"].astype(str) == eid, "latency_s"].to_numpy(dtype=float))
        ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post", label=eid, linewidth=1.6)
    if len(done):
        # The quantiles of all finished jobs, named in the legend (a label on the plot would collide with the curves).
        lat = done["latency_s"].to_numpy(dtype=float)
        for q, style in ((50, ":"), (99, "--")):
            value = float(np.percentile(lat, q))
            ax.axvline(value, color="0.3", linestyle=style, linewidth=1, label=f"p{q} {value:.3g} s" + (" (all)" if len(busiest) > 1 else ""))
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("latency: arrival to result (s, log scale above 1 s)")
    ax.set_ylabel("share of finished jobs")
    ax.set_title(run_title("Latency CDF", scenario, jobs))
    ax.grid(True, alpha=0.3)
    if len(done):
        title = None if len(busiest) < 2 else "endpoint" if len(busiest) < 8 else "8 busiest endpoints"
        ax.legend(fontsize=8, loc="lower right", title=title, title_fontsize=8)
    return fig


def plot_workers_by_state(result: RunLike, scenario: str | None = None, endpoint: str | None = None, bin_s: float | None = None) -> Figure:
    """Stacked area of the time-averaged number of workers in each state per bin, with the bin's
    peak of all workers as a line: readable from minutes (30-s bins) to weeks (hours)."""
    jobs, intervals = _tables(result)
    series = binned_series(jobs, intervals, result.end_s, bin_s, endpoint)
    unit, label = time_axis(result.end_s)
    edges = np.append(series["t_s"].to_numpy(), series["t_s"].iloc[-1] + series["bin_s"].iloc[-1]) / unit
    fig, ax = new_figure((8, 4.5))
    base = np.zeros(len(series))
    for state in ("RUNNING", "IDLE", "INITIALIZING", "THROTTLED"):
        values = series[state.lower()].to_numpy()
        if state == "THROTTLED" and not values.any():
            continue
        ax.stairs(base + values, edges, baseline=base, fill=True, color=STATE_COLORS[state], label=state.lower())
        base = base + values
    ax.stairs(series["workers_max"].to_numpy(), edges, color="0.15", linewidth=0.9, label="peak in bin")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, max(1.0, float(series["workers_max"].max())) * 1.25)
    ax.set_xlabel(label)
    ax.set_ylabel(f"workers (mean per {_bin_label(float(series['bin_s'].iloc[0]))} bin)")
    ax.set_title(run_title("Workers by state", scenario, jobs if endpoint is None else jobs[jobs["endpoint"] == endpoint]))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=5, frameon=True)
    return fig


def plot_queue_and_workers(result: RunLike, scenario: str | None = None, endpoint: str | None = None, bin_s: float | None = None) -> Figure:
    """Workers (top) and queue length (bottom) over time: the time-weighted mean per bin, and the
    bin's maximum, so a burst shorter than a bin still shows at its height."""
    jobs, intervals = _tables(result)
    series = binned_series(jobs, intervals, result.end_s, bin_s, endpoint)
    unit, label = time_axis(result.end_s)
    edges = np.append(series["t_s"].to_numpy(), series["t_s"].iloc[-1] + series["bin_s"].iloc[-1]) / unit
    width = _bin_label(float(series["bin_s"].iloc[0]))
    fig, (top, bottom) = new_figure((8, 5.5), 2, 1, sharex=True)
    for ax, name, color, ylabel in ((top, "workers", "#2a9d8f", "workers"), (bottom, "queue_length", "#e76f51", "jobs in queue")):
        ax.stairs(series[name].to_numpy(), edges, fill=True, color=color, alpha=0.55, label=f"mean per {width} bin")
        ax.stairs(series[f"{name}_max"].to_numpy(), edges, color=color, linewidth=1.0, label="max in bin")
        peak = float(series[f"{name}_max"].max())
        ax.set_ylim(0, max(1.0, peak) * 1.5)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", ncol=2, title=f"run max {peak:g}", title_fontsize=8)
    bottom.set_xlim(edges[0], edges[-1])
    bottom.set_xlabel(label)
    top.set_title(run_title("Workers and queue length", scenario, jobs if endpoint is None else jobs[jobs["endpoint"] == endpoint]))
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_run(result: RunLike, out_dir: Path, scenario: str | None = None) -> list[Path]:
    """Write latency_cdf.png, workers_by_state.png and queue_length.png (queue and workers) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        save(plot_latency_cdf(result, scenario), out_dir / "latency_cdf.png"),
        save(plot_workers_by_state(result, scenario), out_dir / "workers_by_state.png"),
        save(plot_queue_and_workers(result, scenario), out_dir / "queue_length.png"),
    ]
