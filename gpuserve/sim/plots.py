"""PNG plots of a run (latency CDF, workers by state, queue length) and of a sweep (cost vs p99)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gpuserve.sim.records import SimResult, time_series

__all__ = ["plot_run", "plot_sweep"]


def plot_run(result: SimResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    done = result.jobs[result.jobs["status"].isin(("COMPLETED", "TIMED_OUT"))]

    fig, ax = plt.subplots(figsize=(6, 4))
    for eid, group in list(done.groupby("endpoint"))[:12]:
        lat = np.sort(group["latency_s"].to_numpy())
        ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=str(eid))
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("Latency CDF")
    ax.grid(True, alpha=0.3)
    if done["endpoint"].nunique() > 1:
        ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir / "latency_cdf.png"))

    ts = time_series(result)
    fig, ax = plt.subplots(figsize=(7, 4))
    states = ["running", "idle", "initializing", "throttled"]
    ax.stackplot(ts["t_s"], *(ts[s] for s in states), labels=states, step="post")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("workers")
    ax.set_title("Workers by state")
    ax.legend(loc="upper left", fontsize=8)
    paths.append(_save(fig, out_dir / "workers_by_state.png"))

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.step(ts["t_s"], ts["queue_length"], where="post")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("jobs in queue")
    ax.set_title("Queue length")
    paths.append(_save(fig, out_dir / "queue_length.png"))
    return paths


def plot_sweep(points: pd.DataFrame, out_dir: Path) -> Path:
    """One point per setting: cost against p99 latency, with 95% CI bars when the sweep was replicated."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    if "cost_usd_ci95" in points and "latency_p99_s_ci95" in points:
        ax.errorbar(
            points["latency_p99_s"],
            points["cost_usd"],
            xerr=points["latency_p99_s_ci95"].fillna(0.0),
            yerr=points["cost_usd_ci95"].fillna(0.0),
            fmt="o",
            capsize=3,
        )
    else:
        ax.scatter(points["latency_p99_s"], points["cost_usd"])
    for _, row in points.iterrows():
        ax.annotate(str(row["setting"]), (row["latency_p99_s"], row["cost_usd"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("p99 latency (s)")
    ax.set_ylabel("cost (USD)")
    ax.set_title("Cost against p99 latency")
    ax.grid(True, alpha=0.3)
    return _save(fig, out_dir / "sweep_cost_vs_p99.png")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
