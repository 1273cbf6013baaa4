"""`gpuserve compare SIM_DIR LIVE_DIR`: simulated against measured, metric by metric, with overlaid plots.

Both folders are what `gpuserve simulate` and `gpuserve replay` write (jobs, intervals,
summary). Cost is compared twice: the live records priced by the simulator's ledger
(`cost_usd`), and the live server's own ledger (`ledger_cost_usd`, which a replay adds), each
against the simulated cost. Relative error is (measured - simulated) / simulated; where the simulated value
is 0 it is 0 if the measured one is 0 too, else undefined (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError

__all__ = ["METRICS", "TARGETS", "Comparison", "compare_dirs", "load_run", "relative_error", "within_one_fraction"]

# (key, label): summary columns plus counts computed from the records.
METRICS: tuple[tuple[str, str], ...] = (
    ("jobs", "jobs"),
    ("latency_p50_s", "latency p50 (s)"),
    ("latency_p95_s", "latency p95 (s)"),
    ("latency_p99_s", "latency p99 (s)"),
    ("delay_p50_s", "queue delay p50 (s)"),
    ("delay_p95_s", "queue delay p95 (s)"),
    ("delay_p99_s", "queue delay p99 (s)"),
    ("cold_starts", "cold starts (jobs)"),
    ("held", "held requests (load balancer)"),
    ("rejected", "rejected requests"),
    ("hold_p99_s", "hold p99 (s)"),
    ("workers_started", "workers started"),
    ("mean_initializing", "mean workers initializing"),
    ("mean_idle", "mean workers idle"),
    ("mean_running", "mean workers running"),
    ("mean_throttled", "mean workers throttled"),
    ("gpu_s_billed", "GPU-seconds billed"),
    ("cost_usd", "cost (USD)"),
    ("ledger_gpu_s_billed", "GPU-seconds billed, server ledger"),
    ("ledger_cost_usd", "cost (USD), server ledger"),
)
_LB_METRICS = {"held", "rejected", "hold_p99_s"}
# A simulation has one ledger: the server-ledger rows compare the live server's against it.
_SIMULATED_AS = {"ledger_gpu_s_billed": "gpu_s_billed", "ledger_cost_usd": "cost_usd"}
# The targets: |relative error| at most this much.
TARGETS = {"latency_p50_s": 0.10, "latency_p99_s": 0.20, "cold_starts": 0.10, "cost_usd": 0.10, "ledger_cost_usd": 0.10}
WITHIN_ONE_TARGET = 0.95


@dataclass
class Run:
    jobs: pd.DataFrame
    intervals: pd.DataFrame
    summary: pd.DataFrame

    @property
    def end_s(self) -> float:
        ends = [self.jobs["end_s"].max() if len(self.jobs) else 0.0, self.intervals["end_s"].max() if len(self.intervals) else 0.0]
        return float(np.nanmax(ends))


def _read(folder: Path, name: str) -> pd.DataFrame:
    for ext, reader in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        path = folder / f"{name}.{ext}"
        if path.is_file():
            frame: pd.DataFrame = reader(path)
            return frame
    raise ConfigError("results folder", str(folder), f"has no {name}.csv or {name}.parquet (is it a simulate/replay output?)")


def load_run(folder: Path) -> Run:
    if not folder.is_dir():
        raise ConfigError("results folder", str(folder), "is not a folder")
    return Run(_read(folder, "jobs"), _read(folder, "intervals"), _read(folder, "summary"))


def _values(run: Run, simulated: bool = False) -> dict[str, float]:
    row = run.summary.iloc[-1]  # the ALL row (or the only endpoint)
    # Hold and rejection rows only where a load-balancing endpoint ran.
    skip = set() if float(row.get("lb_requests", 0) or 0) > 0 else _LB_METRICS
    out = {key: float(row[key]) for key, _ in METRICS if key in row.index and key not in skip}
    if simulated:
        for key, same in _SIMULATED_AS.items():
            if same in out:
                out.setdefault(key, out[same])
    done = run.jobs[run.jobs["status"].isin(("COMPLETED", "TIMED_OUT"))]
    out["cold_starts"] = float(done["cold"].astype(bool).sum())
    return out


def relative_error(simulated: float, measured: float) -> float:
    if math.isnan(simulated) or math.isnan(measured):
        return float("nan")
    if simulated == 0:
        return 0.0 if measured == 0 else float("nan")
    return (measured - simulated) / abs(simulated)


def worker_counts(intervals: pd.DataFrame, grid_s: np.ndarray) -> np.ndarray:
    """Workers alive (any state) at each instant of the grid."""
    starts = np.sort(intervals["start_s"].to_numpy(dtype=float))
    ends = np.sort(intervals["end_s"].to_numpy(dtype=float))
    counts: np.ndarray = np.searchsorted(starts, grid_s, side="right") - np.searchsorted(ends, grid_s, side="right")
    return counts


def within_one_fraction(sim: Run, live: Run) -> tuple[float, int]:
    """Share of whole seconds (sampled mid-second, over the shorter run) where the live count is within one of the simulated."""
    span = min(sim.end_s, live.end_s)
    seconds = math.floor(span)
    if seconds <= 0:
        return float("nan"), 0
    grid = np.arange(seconds) + 0.5
    diff = np.abs(worker_counts(live.intervals, grid) - worker_counts(sim.intervals, grid))
    return float(np.mean(diff <= 1)), seconds


@dataclass
class Comparison:
    table: pd.DataFrame  # metric, label, simulated, measured, relative_error, target, ok
    within_one: float
    seconds: int

    def markdown(self) -> str:
        lines = ["| metric | simulated | measured | relative error | target |", "| --- | ---: | ---: | ---: | --- |"]
        for _, r in self.table.iterrows():
            target = "" if r["target"] != r["target"] else f"±{r['target']:.0%} {'met' if r['ok'] else 'missed'}"
            lines.append(
                f"| {r['label']} | {_fmt(r['simulated'])} | {_fmt(r['measured'])} | {_pct(r['relative_error'])} | {target} |"
            )
        verdict = "met" if self.within_one >= WITHIN_ONE_TARGET else "missed"
        lines.append(
            f"| live worker count within one of simulated | | {self.within_one:.1%} of {self.seconds} s | | "
            f"≥{WITHIN_ONE_TARGET:.0%} {verdict} |"
        )
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:+.1%}"


def compare_runs(sim: Run, live: Run) -> Comparison:
    s, m = _values(sim, simulated=True), _values(live)
    rows = []
    for key, label in METRICS:
        if key not in s or key not in m:
            continue
        err = relative_error(s[key], m[key])
        target = TARGETS.get(key, float("nan"))
        ok = bool(abs(err) <= target + 1e-9) if target == target and err == err else None
        rows.append({"metric": key, "label": label, "simulated": s[key], "measured": m[key], "relative_error": err, "target": target, "ok": ok})
    frac, seconds = within_one_fraction(sim, live)
    return Comparison(pd.DataFrame(rows), frac, seconds)


def compare_dirs(sim_dir: Path, live_dir: Path, out_dir: Path | None = None, plots: bool = True) -> tuple[Comparison, list[Path]]:
    """Compare two result folders; write comparison.csv / .md (and PNGs) into out_dir if given."""
    sim, live = load_run(sim_dir), load_run(live_dir)
    comp = compare_runs(sim, live)
    paths: list[Path] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        table = comp.table.copy()
        extra = {"metric": "within_one_fraction", "label": "live worker count within one of simulated",
                 "simulated": float("nan"), "measured": comp.within_one, "relative_error": float("nan"),
                 "target": WITHIN_ONE_TARGET, "ok": comp.within_one >= WITHIN_ONE_TARGET}
        table = pd.concat([table, pd.DataFrame([extra])], ignore_index=True)
        table.to_csv(out_dir / "comparison.csv", index=False)
        (out_dir / "comparison.md").write_text(comp.markdown())
        paths += [out_dir / "comparison.csv", out_dir / "comparison.md"]
        if plots:
            paths += plot_comparison(sim, live, out_dir)
    return comp, paths


def plot_comparison(sim: Run, live: Run, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, label in ((sim, "simulated"), (live, "live")):
        done = run.jobs[run.jobs["status"].isin(("COMPLETED", "TIMED_OUT"))]
        lat = np.sort(done["latency_s"].to_numpy(dtype=float))
        if lat.size:
            ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post", label=label)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("Latency CDF: simulated vs live")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "compare_latency_cdf.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "compare_latency_cdf.png")

    end = max(sim.end_s, live.end_s, 1e-9)
    grid = np.linspace(0.0, end, 2000)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for run, label, style in ((sim, "simulated", "-"), (live, "live", "--")):
        axes[0].step(grid, worker_counts(run.intervals, grid), where="post", linestyle=style, label=label)
        busy = run.intervals[run.intervals["state"] == "RUNNING"]
        axes[1].step(grid, worker_counts(busy, grid), where="post", linestyle=style, label=label)
    axes[0].set_ylabel("workers (all states)")
    axes[1].set_ylabel("workers running")
    axes[1].set_xlabel("time (s)")
    axes[0].set_title("Workers over time: simulated vs live")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "compare_workers.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "compare_workers.png")
    return paths

