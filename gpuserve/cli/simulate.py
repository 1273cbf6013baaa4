"""`gpuserve simulate`: parse the options, run the scenario (or its sweep), print the summary, write the results."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from gpuserve.cli.root import app, console, err_console, fail
from gpuserve.core.errors import ConfigError, GpuserveError

# Past this many job records, CSV writing dominates a run: suggest parquet (BENCHMARKS.md, Output formats).
PARQUET_HINT_JOBS = 1_000_000


class _Reporter:
    """One progress display for a whole command: the simulation (by simulated time, or by finished
    runs), then each file written. On a terminal a rich bar; elsewhere (CI, a pipe, a log file) a
    line on stderr at each tenth of the work and at each phase, at most one every 2 s."""

    def __init__(self, label: str, write_steps: int) -> None:
        self.label = label
        self.write_steps = max(1, write_steps)
        self.tty = console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.tty,
        )
        self.task = self.bar.add_task(label, total=2.0, detail="")
        self.started = time.monotonic()
        self.last_line = -math.inf
        self.last_tenth = -1
        self.written = 0

    def __enter__(self) -> _Reporter:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.stop()

    def _show(self, done: float, detail: str, force: bool = False) -> None:
        self.bar.update(self.task, completed=done, detail=detail)
        if self.tty:
            return
        now = time.monotonic()
        tenth = int(done * 5)  # done runs over 0..2: a tenth of the whole is 0.2
        if force or (tenth > self.last_tenth and now - self.last_line >= 2.0):
            self.last_tenth, self.last_line = tenth, now
            err_console.print(f"{self.label}: {done * 50:.0f}% {detail} ({now - self.started:.1f} s)", highlight=False)

    def run_step(self, now_s: float, horizon_s: float) -> None:
        fraction = now_s / horizon_s if horizon_s > 0 else 1.0
        self._show(fraction, f"sim t {now_s:,.0f}/{horizon_s:,.0f} s")

    def task_step(self, i: int, n: int, now_s: float, horizon_s: float) -> None:
        within = now_s / horizon_s if horizon_s > 0 else 1.0
        self._show((i + within) / n, f"run {min(i + 1, n)}/{n}")

    def file(self, name: str) -> None:
        self.written += 1
        self._show(1.0 + (self.written - 1) / self.write_steps, f"writing {name}", force=True)

    def done(self) -> None:
        self._show(2.0, "done", force=True)


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
        int | None,
        typer.Option(
            "--jobs",
            help="processes for sweep points and replications, or for one run's endpoints when they share nothing "
            "(default: every core; one run is split only past a million expected jobs)",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="run sweep points and replications as Ray tasks on this cluster (host:port of its head)"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet (parquet: smaller and faster past a million jobs)")] = "csv",
    records: Annotated[
        str, typer.Option("--records", help="all: every table; summary: the summary tables only; none: no table")
    ] = "all",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Simulate a scenario: print the summary, write per-job records, worker intervals and plots."""
    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be csv or parquet, was {fmt!r}")
    if records not in ("all", "summary", "none"):
        raise fail(f"--records must be all, summary or none, was {records!r}")
    if replications is not None and replications < 1:
        raise fail(f"--replications must be at least 1, was {replications}")
    if jobs is not None and jobs < 1:
        raise fail(f"--jobs must be at least 1, was {jobs}")
    try:
        _simulate(
            scenario,
            out,
            seed,
            set_ or [],
            sweep or [],
            "parquet" if fmt == "parquet" else "csv",
            plots,
            replications,
            jobs,
            "summary" if records == "summary" else "none" if records == "none" else "all",
            ray_address,
        )
    except GpuserveError as exc:
        raise fail(str(exc)) from None


def _parquet_hint(jobs: int, fmt: str, records: str) -> None:
    if jobs >= PARQUET_HINT_JOBS and fmt == "csv" and records == "all":
        console.print(
            f"{jobs:,} job records: --format parquet writes them several times faster and smaller "
            "(BENCHMARKS.md, Output formats); --records summary writes none",
            highlight=False,
        )


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
    records: Literal["all", "summary", "none"] = "all",
    ray_address: str | None = None,
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
    for note in scenario.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    sweep = _parse_sweep(sweeps) or scenario.sweep
    reps = scenario.replications if replications is None else replications
    processes = default_jobs() if jobs is None else jobs
    out_dir = out if out is not None else Path("out") / scenario_path.stem
    name = scenario.name
    if not sweep and reps > 1:
        with _Reporter(f"{name} x {reps}", 3 + int(plots)) as report:
            replicated = run_replicated(
                scenario, reps, processes, report.task_step, records_dir=out_dir, fmt=fmt, plots=plots, records=records,
                ray_address=ray_address,
            )
            console.print(summary_table(replicated.summary, f"{name}: {scenario_path}, mean ± 95% CI over {reps} replications"))
            _parquet_hint(sum(len(r.jobs) for r in replicated.results), fmt, records)
            report.file(f"summary.{fmt}")
            write_replicated(replicated, out_dir, fmt, plots, records=records, scenario=name)
            seeds = replicated.seeds
            report.file("provenance")
            _provenance(write_provenance, out_dir, scenario, seeds, sweep, scenario_path, seed, sets, sweeps, fmt, plots, replications, processes, records)
            report.done()
    elif not sweep:
        steps = {"all": 5, "summary": 1, "none": 0}[records] + int(plots) + 1
        with _Reporter(name, steps) as report:
            # One run: endpoints that share nothing split over --jobs processes (the same records);
            # without --jobs only a run big enough to repay the processes' start-up is split.
            from gpuserve.sim.shards import auto_processes

            shard_over = jobs if jobs is not None else auto_processes(scenario.config, processes)
            notes: list[str] = []
            result = run_scenario(
                scenario, report.run_step, processes=shard_over, tables=records == "all" or plots, on_note=notes.append
            )
            for note in notes:
                console.print(f"simulated in {note}", highlight=False)
            console.print(summary_table(result.summary, f"{name}: {scenario_path}"))
            _parquet_hint(len(result.jobs), fmt, records)
            write_run(result, out_dir, fmt, plots, records=records, scenario=name, on_file=report.file)
            report.file("provenance")
            _provenance(write_provenance, out_dir, scenario, [scenario.config.seed], sweep, scenario_path, seed, sets, sweeps, fmt, plots, replications, processes, records)
            report.done()
    else:
        with _Reporter(name, 2 + int(plots)) as report:
            swept = run_sweep(
                scenario, sweep, report.task_step, replications=reps, jobs=processes, records_dir=out_dir, fmt=fmt, records=records,
                ray_address=ray_address,
            )
            title = f"{name}: sweep of {', '.join(sweep)}"
            if reps > 1:
                title += f", mean ± 95% CI over {reps} replications"
            console.print(summary_table(swept.table, title, first="setting"))
            _parquet_hint(sum(len(r.jobs) for r in swept.results), fmt, records)
            report.file(f"sweep.{fmt}" + (" and plot" if plots else ""))
            write_sweep(swept, out_dir, fmt, plots, records=records, scenario=name)
            report.file("provenance")
            _provenance(write_provenance, out_dir, scenario, swept.seeds, sweep, scenario_path, seed, sets, sweeps, fmt, plots, replications, processes, records)
            report.done()
    console.print(f"results written to {out_dir}/")


def _provenance(
    write: Callable[..., object],
    out_dir: Path,
    scenario: object,
    seeds: Sequence[int],
    sweep: dict[str, list[object]],
    scenario_path: Path,
    seed: int | None,
    sets: Sequence[str],
    sweeps: Sequence[str],
    fmt: str,
    plots: bool,
    replications: int | None,
    processes: int,
    records: str,
) -> None:
    command = _command_line(scenario_path, out_dir, seed, sets, sweeps, fmt, plots, replications, processes, records)
    write(out_dir, scenario, seeds, sweep, command)


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
    records: str = "all",
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
    line += ["--jobs", str(jobs), "--format", fmt, "--records", records, "--plots" if plots else "--no-plots"]
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
