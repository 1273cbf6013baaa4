"""`gpuserve simulate`: parse the options, run the scenario (or its sweep), print the summary, write the results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gpuserve.cli.root import app, console, fail
from gpuserve.core.errors import ConfigError, GpuserveError


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (see scenarios/)")],
    out: Annotated[Path | None, typer.Option("--out", help="results folder (default out/<scenario name>)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field: endpoints.0.scaling.max_workers=5 (endpoint.X: every endpoint)"),
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="one run per value: endpoint.scaling.idle_timeout_s=5,60,600"),
    ] = None,
    replications: Annotated[
        int | None,
        typer.Option("--replications", help="runs per setting, seeds derived from the base seed (default: the scenario's, 1)"),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", help="processes for sweep points and replications (default: every core)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Simulate a scenario: print the summary, write per-job records, worker intervals and plots."""
    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be csv or parquet, was {fmt!r}")
    if replications is not None and replications < 1:
        raise fail(f"--replications must be at least 1, was {replications}")
    if jobs is not None and jobs < 1:
        raise fail(f"--jobs must be at least 1, was {jobs}")
    try:
        _simulate(
            scenario, out, seed, set_ or [], sweep or [], "parquet" if fmt == "parquet" else "csv", plots, replications, jobs
        )
    except GpuserveError as exc:
        raise fail(str(exc)) from None


def _simulate(
    scenario_path: Path,
    out: Path | None,
    seed: int | None,
    sets: Sequence[str],
    sweeps: Sequence[str],
    fmt: Literal["csv", "parquet"],
    plots: bool,
    replications: int | None = None,
    jobs: int | None = None,
) -> None:
    # The experiment modules load pandas and the engine: imported here so `gpuserve --help` stays quick.
    from gpuserve.cli.tables import summary_table
    from gpuserve.config.scenario import parse_assignment
    from gpuserve.experiments import (
        default_jobs,
        load_scenario,
        run_replicated,
        run_scenario,
        run_sweep,
        write_provenance,
        write_replicated,
        write_run,
        write_sweep,
    )

    scenario = load_scenario(scenario_path, [parse_assignment(s) for s in sets], seed=seed)
    sweep = _parse_sweep(sweeps) or scenario.sweep
    reps = scenario.replications if replications is None else replications
    processes = default_jobs() if jobs is None else jobs
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
    if not sweep and reps > 1:
        with progress:
            task = progress.add_task(f"{scenario.name} x {reps}", total=1.0)

            def rep_step(i: int, n: int, now_s: float, horizon_s: float) -> None:
                progress.update(task, description=f"{scenario.name} [{i + 1}/{n}]", completed=i * horizon_s + now_s, total=n * horizon_s)

            replicated = run_replicated(scenario, reps, processes, rep_step, records_dir=out_dir, fmt=fmt, plots=plots)
        title = f"{scenario.name}: {scenario_path}, mean ± 95% CI over {reps} replications"
        console.print(summary_table(replicated.summary, title))
        write_replicated(replicated, out_dir, fmt, plots)
        seeds = replicated.seeds
    elif not sweep:
        with progress:
            task = progress.add_task(scenario.name, total=1.0)

            def step(now_s: float, horizon_s: float) -> None:
                progress.update(task, completed=now_s, total=horizon_s)

            result = run_scenario(scenario, step)
        console.print(summary_table(result.summary, f"{scenario.name}: {scenario_path}"))
        write_run(result, out_dir, fmt, plots)
        seeds = [scenario.config.seed]
    else:
        with progress:
            task = progress.add_task(scenario.name, total=1.0)

            def sweep_step(i: int, n: int, now_s: float, horizon_s: float) -> None:
                progress.update(task, description=f"{scenario.name} [{i + 1}/{n}]", completed=i * horizon_s + now_s, total=n * horizon_s)

            swept = run_sweep(scenario, sweep, sweep_step, replications=reps, jobs=processes, records_dir=out_dir, fmt=fmt)
        title = f"{scenario.name}: sweep of {', '.join(sweep)}"
        if reps > 1:
            title += f", mean ± 95% CI over {reps} replications"
        console.print(summary_table(swept.table, title, first="setting"))
        write_sweep(swept, out_dir, fmt, plots)
        seeds = swept.seeds
    command = _command_line(scenario_path, out_dir, seed, sets, sweeps, fmt, plots, replications, processes)
    write_provenance(out_dir, scenario, seeds, sweep, command)
    console.print(f"results written to {out_dir}/")


def _command_line(
    scenario_path: Path,
    out_dir: Path,
    seed: int | None,
    sets: Sequence[str],
    sweeps: Sequence[str],
    fmt: str,
    plots: bool,
    replications: int | None,
    jobs: int,
) -> list[str]:
    """The command as given, options in a fixed order (recorded in provenance.yaml)."""
    line = ["gpuserve", "simulate", str(scenario_path), "--out", str(out_dir)]
    if seed is not None:
        line += ["--seed", str(seed)]
    for item in sets:
        line += ["--set", item]
    for item in sweeps:
        line += ["--sweep", item]
    if replications is not None:
        line += ["--replications", str(replications)]
    line += ["--jobs", str(jobs), "--format", fmt, "--plots" if plots else "--no-plots"]
    return line


def _parse_sweep(items: Sequence[str]) -> dict[str, list[object]]:
    """`--sweep key=v1,v2,...` options as {key: [values]}; each value is read as YAML (5 -> int, true -> bool)."""
    import yaml

    from gpuserve.config.scenario import parse_assignment

    sweep: dict[str, list[object]] = {}
    for item in items:
        key, values = parse_assignment(item, "--sweep")
        parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError("--sweep", item, "needs at least one value after '='")
        sweep[key] = parsed
    return sweep
