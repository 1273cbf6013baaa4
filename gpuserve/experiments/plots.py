"""PNG plots of a sweep or a comparison: cost against p99 with CI bars and the Pareto front; cost, p99 and cold starts side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from gpuserve.experiments.analysis import pareto_front
from gpuserve.experiments.replicate import CI_SUFFIX
from gpuserve.sim.plots import new_figure, save

__all__ = ["plot_comparison", "plot_sweep", "plot_sweep_cost_vs_p99", "setting_labels"]

def _params(table: pd.DataFrame) -> list[str]:
    """The swept parameters: the columns before `point` in a sweep table."""
    columns = list(table.columns)
    return columns[: columns.index("point")] if "point" in columns else []


def _short(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 read back from a CSV labels as 5
    text = str(value)
    if ".py:" in text:
        text = text.rsplit("/", 1)[-1]  # a file policy: its file name is enough
    return text


def _value_rows(table: pd.DataFrame) -> tuple[list[tuple[str, ...]], str]:
    params = _params(table)
    if not params:
        return [(_short(v),) for v in table.get("setting", pd.Series(range(len(table))))], ""
    rows = [tuple(_short(v) for v in row) for row in table[params].itertuples(index=False)]
    return rows, " / ".join(p.rsplit(".", 1)[-1] for p in params)


def setting_labels(table: pd.DataFrame) -> tuple[list[str], str]:
    """Short labels for the rows (the swept values joined by ' / ') and the key naming them."""
    rows, key = _value_rows(table)
    return [" / ".join(r) for r in rows], key


def _merged(rows: Sequence[tuple[str, ...]]) -> str:
    """One label for settings that land on the same spot: per parameter, the shared value or the list."""
    parts = []
    for values in zip(*rows, strict=True):
        distinct = list(dict.fromkeys(values))
        # ", " between numbers (5, 60, 600); "; " where the values are labels that may hold commas.
        sep = ", " if all(v.replace(".", "", 1).lstrip("-").isdigit() for v in distinct) else "; "
        parts.append(distinct[0] if len(distinct) == 1 else sep.join(distinct))
    return " / ".join(parts)


def _ci(table: pd.DataFrame, metric: str) -> np.ndarray | None:
    column = metric + CI_SUFFIX
    return table[column].fillna(0.0).to_numpy(dtype=float) if column in table else None


def _subtitle(table: pd.DataFrame, scenario: str | None) -> str:
    reps = int(table["replications"].max()) if "replications" in table and len(table) else 1
    parts = [scenario or "sweep"]
    if "endpoint" in table and table["endpoint"].nunique() == 1:
        parts[0] += f" / {table['endpoint'].iloc[0]}"
    parts.append(f"{len(table)} settings")
    parts.append(f"mean ± 95% CI of {reps} replications" if reps > 1 else "1 run each")
    return ", ".join(parts)


def _place_labels(fig: Figure, ax: Axes, xs: np.ndarray, ys: np.ndarray, rows: Sequence[tuple[str, ...]], bold: np.ndarray) -> None:
    """Label each point beside it where the label overlaps no other label and no point: settings
    that land within 4 px of each other share one label; eight offsets are tried in turn and the
    first free one kept (else the least crowded). Points on the front are placed first."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    finite = np.isfinite(xs) & np.isfinite(ys)
    points = ax.transData.transform(np.column_stack([np.where(finite, xs, 0), np.where(finite, ys, 0)]))
    groups: list[list[int]] = []
    for k in np.flatnonzero(finite).tolist():
        for group in groups:
            if np.abs(points[group[0]] - points[k]).max() <= 4:
                group.append(k)
                break
        else:
            groups.append([k])
    taken = [Bbox.from_extents(px - 4, py - 4, px + 4, py + 4) for (px, py), ok in zip(points, finite, strict=True) if ok]
    frame = ax.get_window_extent(renderer)
    offsets = [(6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"), (-6, -4, "right", "top"),
               (0, 8, "center", "bottom"), (0, -8, "center", "top"), (12, 0, "left", "center"), (-12, 0, "right", "center"),
               (10, 14, "left", "bottom"), (-10, -14, "right", "top"), (10, -14, "left", "top"), (-10, 14, "right", "bottom")]  # fmt: skip
    groups.sort(key=lambda g: not any(bold[j] for j in g))
    for group in groups:
        i = group[0]
        strong = any(bold[j] for j in group)
        label = _merged([rows[j] for j in group])
        best: tuple[Any, Bbox] | None = None
        best_overlap = 0
        for dx, dy, ha, va in offsets:
            text = ax.annotate(label, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=8, fontweight="bold" if strong else "normal", color="black" if strong else "0.35")  # fmt: skip
            box = text.get_window_extent(renderer).expanded(1.04, 1.1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            overlap = sum(box.overlaps(b) for b in taken) + (0 if inside else 3)
            if best is None or overlap < best_overlap:
                if best is not None:
                    best[0].remove()
                best, best_overlap = (text, box), overlap
            else:
                text.remove()
            if overlap == 0:
                break
        assert best is not None
        taken.append(best[1])


def plot_sweep_cost_vs_p99(table: pd.DataFrame, scenario: str | None = None) -> Figure:
    """One point per setting, cost against p99 latency, 95% CI bars from the replications; the
    Pareto front (no other setting both cheaper and faster) drawn as a line and labelled in bold.
    The latency axis turns logarithmic when the p99s span more than a factor of 20."""
    xs = table["latency_p99_s"].to_numpy(dtype=float)
    ys = table["cost_usd"].to_numpy(dtype=float)
    front = pareto_front(table).to_numpy()
    rows, key = _value_rows(table)
    fig, ax = new_figure((8, 5.5))
    xerr, yerr = _ci(table, "latency_p99_s"), _ci(table, "cost_usd")
    if xerr is not None or yerr is not None:
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.6", elinewidth=1, capsize=2.5, zorder=1)
    ax.scatter(xs[~front], ys[~front], s=28, facecolors="white", edgecolors="0.45", zorder=2, label="dominated")
    order = np.argsort(xs[front])
    ax.plot(xs[front][order], ys[front][order], "-o", color="#d62828", markersize=6, zorder=3,
            label="Pareto front: no setting is both cheaper and faster")  # fmt: skip
    positive = xs[np.isfinite(xs) & (xs > 0)]
    if positive.size and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
        ax.set_xlabel("p99 latency (s, log scale)")
    else:
        ax.set_xlabel("p99 latency (s)")
    ax.set_ylabel("cost (USD)")
    ax.margins(x=0.15, y=0.12)
    # Wide CI bars would stretch the axes below zero, where no latency or cost can be.
    if ax.get_xlim()[0] < 0 <= np.nanmin(xs):
        ax.set_xlim(left=0)
    if ax.get_ylim()[0] < 0 <= np.nanmin(ys):
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right", title=f"labels: {key}" if key else None, title_fontsize=8)
    ax.set_title(f"Cost against p99 latency\n{_subtitle(table, scenario)}", fontsize=11)
    fig.tight_layout()
    _place_labels(fig, ax, xs, ys, rows, front)
    return fig


def plot_sweep(table: pd.DataFrame, out_dir: Path, scenario: str | None = None) -> Path:
    """Write sweep_cost_vs_p99.png for a sweep table (one row per setting)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return save(plot_sweep_cost_vs_p99(table, scenario), out_dir / "sweep_cost_vs_p99.png")


def plot_comparison(
    table: pd.DataFrame,
    scenario: str | None = None,
    labels: Sequence[str] | None = None,
    metrics: Sequence[tuple[str, str]] = (("cost_usd", "cost (USD)"), ("latency_p99_s", "p99 latency (s)"), ("cold_start_fraction", "jobs that met a cold start")),
) -> Figure:
    """Cost, p99 latency and cold-start fraction side by side, one bar per row (a policy, a
    setting) with its 95% CI; the lowest of each metric is drawn dark."""
    names = list(labels) if labels is not None else setting_labels(table)[0]
    fig, axes = new_figure((11, 0.9 + 0.42 * max(3, len(table))), 1, len(metrics), sharey=True)
    y = np.arange(len(table))
    for ax, (metric, title) in zip(np.atleast_1d(axes), metrics, strict=True):
        values = table[metric].to_numpy(dtype=float)
        best = values == np.nanmin(values) if np.isfinite(values).any() else np.zeros(len(values), bool)
        colors = np.where(best, "#264653", "#8ab6c9")
        ci = _ci(table, metric)
        ax.barh(y, values, xerr=ci, color=colors, ecolor="0.25", capsize=3)
        ends = values + (ci if ci is not None else 0.0)
        for yi, v, end in zip(y, values, ends, strict=True):
            ax.annotate(f"{v:.3g}", (end, yi), xytext=(4, 0), textcoords="offset points", va="center", ha="left", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(x=0.25)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlim(left=0)
    first = np.atleast_1d(axes)[0]
    first.set_yticks(y, names, fontsize=9)
    first.invert_yaxis()
    fig.suptitle(f"Compared: {_subtitle(table, scenario)} (dark: lowest)", fontsize=11)
    fig.tight_layout()
    return fig
