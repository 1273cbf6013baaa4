"""What `gpuserve simulate` does: load, run (or sweep), print the summary table, write results and plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpuserve.config.scenario import load_scenario, parse_assignment
from gpuserve.core.errors import ConfigError

__all__ = ["simulate", "summary_table"]

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
            table.add_row(header, *(_cell(row.get(key), fmt) for _, row in summary.iterrows()))
        return table
    compact = [c for c in _COLUMNS if c[0] in {"jobs", "latency_p50_s", "latency_p99_s", "cold_start_fraction", "cost_usd"}]
    table.add_column(first, no_wrap=True)
    for _, header, _fmt in compact:
        table.add_column(header, justify="right")
    frame = summary if len(summary) <= max_rows else pd.concat([summary.head(max_rows - 1), summary.tail(1)])
    for _, row in frame.iterrows():
        table.add_row(str(row[first]), *(_cell(row.get(key), fmt) for key, _h, fmt in compact))
    return table


def _cell(value: object, fmt: str) -> str:
    if value is None or value != value:
        return "-"
    return fmt.format(value)


def _parse_sweep(items: Sequence[str]) -> dict[str, list[object]]:
    import yaml

    sweep: dict[str, list[object]] = {}
    for item in items:
        key, values = parse_assignment(item, "--sweep")
        parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError("--sweep", item, "needs at least one value after '='")
        sweep[key] = parsed
    return sweep


def simulate(
    scenario_path: Path,
    out: Path | None,
    seed: int | None,
    sets: Sequence[str],
    sweeps: Sequence[str],
    fmt: Literal["csv", "parquet"],
    plots: bool,
    console: Console,
) -> Path:
    """Run the scenario (or its sweep) and write everything under the output folder, which it returns."""
    from gpuserve.experiments import run_scenario, run_sweep

    overrides = [parse_assignment(s) for s in sets]
    scenario = load_scenario(scenario_path, overrides, seed=seed)
    sweep = _parse_sweep(sweeps) or scenario.sweep
    out_dir = out if out is not None else Path("out") / scenario_path.stem
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("sim t {task.completed:,.0f}/{task.total:,.0f} s"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    if not sweep:
        with progress:
            task = progress.add_task(scenario.name, total=1.0)

            def step(now_s: float, horizon_s: float) -> None:
                progress.update(task, completed=now_s, total=horizon_s)

            result = run_scenario(scenario, step)
        console.print(summary_table(result.summary, f"{scenario.name}: {scenario_path}"))
        result.write(out_dir, fmt)
        if plots:
            from gpuserve.sim.plots import plot_run

            plot_run(result, out_dir)
    else:
        with progress:
            task = progress.add_task(scenario.name, total=1.0)

            def sweep_step(i: int, n: int, now_s: float, horizon_s: float) -> None:
                progress.update(task, description=f"{scenario.name} [{i + 1}/{n}]", completed=i * horizon_s + now_s, total=n * horizon_s)

            table, results = run_sweep(scenario, sweep, sweep_step, seed=seed)
        console.print(summary_table(table, f"{scenario.name}: sweep of {', '.join(sweep)}", first="setting"))
        out_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            table.to_parquet(out_dir / "sweep.parquet", index=False)
        else:
            table.to_csv(out_dir / "sweep.csv", index=False)
        for k, result in enumerate(results):
            result.write(out_dir / f"point{k:02d}", fmt)
        if plots:
            from gpuserve.sim.plots import plot_sweep

            plot_sweep(table, out_dir)
    console.print(f"results written to {out_dir}/")
    return out_dir
