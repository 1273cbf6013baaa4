"""The tables the CLI prints: a run's or a sweep's summary, and simulated against measured."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from rich.table import Table

if TYPE_CHECKING:
    from gpuserve.fidelity.compare import Comparison

__all__ = ["comparison_table", "summary_table"]

_CI = "_ci95"  # a replicated summary's 95% CI half-width column beside each metric

# (summary column, header, format): the metrics a summary table shows, in order.
_COLUMNS = [
    ("jobs", "jobs", "{:.0f}"),
    ("latency_p50_s", "latency p50 s", "{:.2f}"),
    ("latency_p95_s", "latency p95 s", "{:.2f}"),
    ("latency_p99_s", "latency p99 s", "{:.2f}"),
    ("delay_p50_s", "queue delay p50 s", "{:.2f}"),
    ("delay_p99_s", "queue delay p99 s", "{:.2f}"),
    ("cold_start_fraction", "cold starts", "{:.2%}"),
    ("mean_running", "workers running", "{:.2f}"),
    ("mean_idle", "workers idle", "{:.2f}"),
    ("mean_initializing", "workers initializing", "{:.2f}"),
    ("mean_throttled", "workers throttled", "{:.2f}"),
    ("gpu_s_billed", "GPU-s billed", "{:,.0f}"),
    ("cost_usd", "cost USD", "{:,.4f}"),
]


def summary_table(summary: pd.DataFrame, title: str, first: str = "endpoint", max_rows: int = 25) -> Table:
    """Few rows: one column per endpoint (or setting), metrics down the side; many: a compact row each."""
    table = Table(title=title)
    if len(summary) <= 5:
        table.add_column("metric")
        for _, row in summary.iterrows():
            table.add_column(str(row[first]), justify="right")
        for key, header, fmt in _COLUMNS:
            table.add_row(header, *(_cell(row.get(key), fmt, row.get(key + _CI)) for _, row in summary.iterrows()))
        return table
    compact = [c for c in _COLUMNS if c[0] in {"jobs", "latency_p50_s", "latency_p99_s", "cold_start_fraction", "cost_usd"}]
    table.add_column(first, no_wrap=True)
    for _, header, _fmt in compact:
        table.add_column(header, justify="right")
    frame = summary if len(summary) <= max_rows else pd.concat([summary.head(max_rows - 1), summary.tail(1)])
    for _, row in frame.iterrows():
        table.add_row(str(row[first]), *(_cell(row.get(key), fmt, row.get(key + _CI)) for key, _h, fmt in compact))
    return table


def comparison_table(comp: Comparison, title: str) -> Table:
    """One row per metric: simulated, measured, relative error and its target, then the worker-count check."""
    from gpuserve.fidelity.compare import WITHIN_ONE_TARGET

    table = Table(title=title)
    for name, justify in (("metric", "left"), ("simulated", "right"), ("measured", "right"), ("rel. error", "right"), ("target", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for _, r in comp.table.iterrows():
        err = r["relative_error"]
        target = ""
        if r["target"] == r["target"]:
            target = f"±{r['target']:.0%} " + ("[green]met[/]" if r["ok"] else "[red]missed[/]")
        table.add_row(
            str(r["label"]),
            "-" if r["simulated"] != r["simulated"] else f"{r['simulated']:,.4g}",
            "-" if r["measured"] != r["measured"] else f"{r['measured']:,.4g}",
            "-" if err != err else f"{err:+.1%}",
            target,
        )
    ok = comp.within_one >= WITHIN_ONE_TARGET
    table.add_row(
        "live workers within 1 of simulated",
        "",
        f"{comp.within_one:.1%} of {comp.seconds} s",
        "",
        f"≥{WITHIN_ONE_TARGET:.0%} " + ("[green]met[/]" if ok else "[red]missed[/]"),
    )
    return table


def _cell(value: object, fmt: str, ci: object = None) -> str:
    # NaN is the one value unequal to itself: a metric with no data (no jobs finished) prints as "-".
    if value is None or value != value:
        return "-"
    if ci is None or ci != ci:
        return fmt.format(value)
    return f"{fmt.format(value)} ± {fmt.format(ci)}"
