"""`gpuserve replay`, `compare` and `calibrate`: the simulator checked against the live platform."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpuserve.cli.root import app, console, fail
from gpuserve.core.errors import GpuserveError


@app.command()
def replay(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (see scenarios/)")],
    backend: Annotated[str, typer.Option("--backend", help="process or docker")] = "process",
    speedup: Annotated[float, typer.Option("--speedup", help="divide every scenario time by K (see FIDELITY.md)")] = 1.0,
    mode: Annotated[str, typer.Option("--mode", help="sleep or busy: how the synthetic worker spends a job")] = "sleep",
    out: Annotated[Path | None, typer.Option("--out", help="results folder (default out/<scenario>-live)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field, as for simulate")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Run a scenario on the live platform (real server, real workers) and write simulate's records."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from gpuserve.cli.tables import summary_table
    from gpuserve.config.scenario import load_scenario, parse_assignment
    from gpuserve.fidelity.replay import replay as run_replay

    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be csv or parquet, was {fmt!r}")
    if backend not in ("process", "docker"):
        raise fail(f"--backend must be process or docker, was {backend!r}")
    if mode not in ("sleep", "busy"):
        raise fail(f"--mode must be sleep or busy, was {mode!r}")
    if not speedup > 0:
        raise fail(f"--speedup must be positive, was {speedup}")
    try:
        sc = load_scenario(scenario, [parse_assignment(s) for s in set_ or []], seed=seed)
        out_dir = out if out is not None else Path("out") / f"{scenario.stem}-live"
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("scenario t {task.completed:,.0f}/{task.total:,.0f} s"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        with progress:
            task = progress.add_task(f"replay {sc.name} ({backend}, x{speedup:g})", total=sc.config.duration_s)

            def step(now_s: float, total_s: float) -> None:
                progress.update(task, completed=now_s, total=total_s)

            run = run_replay(sc, backend=backend, speedup=speedup, mode=mode, progress=step)  # type: ignore[arg-type]
        console.print(summary_table(run.result.summary, f"{sc.name} live ({backend}, speedup {speedup:g})"))
        run.write(out_dir, "parquet" if fmt == "parquet" else "csv", plots)
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    for note in run.meta.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"results written to {out_dir}/")


@app.command()
def compare(
    sim_dir: Annotated[Path, typer.Argument(help="a `gpuserve simulate` results folder")],
    live_dir: Annotated[Path, typer.Argument(help="a `gpuserve replay` results folder")],
    out: Annotated[Path | None, typer.Option("--out", help="where to write comparison.csv/.md and plots (default LIVE_DIR/compare)")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write overlaid PNG plots")] = True,
) -> None:
    """Simulated against measured: each metric's values and relative error, and overlaid plots."""
    from gpuserve.cli.tables import comparison_table
    from gpuserve.fidelity.compare import compare_dirs

    out_dir = out if out is not None else live_dir / "compare"
    try:
        comp, _paths = compare_dirs(sim_dir, live_dir, out_dir, plots)
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    console.print(comparison_table(comp, f"{sim_dir} (simulated) vs {live_dir} (live)"))
    console.print(f"comparison written to {out_dir}/")


@app.command()
def calibrate(
    backend: Annotated[str, typer.Option("--backend", help="process or docker")] = "process",
    out: Annotated[Path | None, typer.Option("--out", help="profile file (default scenarios/profiles/<backend>-host.yaml)")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="cold starts and jobs measured (medians are kept)")] = 7,
    fit: Annotated[str, typer.Option("--fit", help="stage distributions: lognormal (fitted) or empirical (the samples)")] = "lognormal",
    from_run: Annotated[
        Path | None, typer.Option("--from-run", help="fit a live run's results folder (gpuserve replay --out) instead of measuring")
    ] = None,
) -> None:
    """Measure this host's platform overheads (cold-start phases, dispatch, result post) into a profile."""
    from gpuserve.fidelity.calibrate import calibrate as run_calibrate
    from gpuserve.fidelity.calibrate import write_profile, write_run_profile

    if fit not in ("lognormal", "empirical"):
        raise fail(f"--fit must be lognormal or empirical, was {fit!r}")
    if from_run is not None:
        path = out if out is not None else Path("scenarios") / "profiles" / "from-run.yaml"
        try:
            run_fit, path, service_path = write_run_profile(from_run, path, "empirical" if fit == "empirical" else "lognormal")
        except GpuserveError as exc:
            raise fail(str(exc)) from None
        console.print(
            f"{run_fit.starts} cold starts ({run_fit.alone} alone), {len(run_fit.service_s)} jobs: profile written to {path}, "
            f"service samples to {service_path}"
        )
        return
    if backend not in ("process", "docker"):
        raise fail(f"--backend must be process or docker, was {backend!r}")
    if repeats < 1:
        raise fail(f"--repeats must be at least 1, was {repeats}")
    path = out if out is not None else Path("scenarios") / "profiles" / f"{backend}-host.yaml"
    try:
        cal = run_calibrate("docker" if backend == "docker" else "process", repeats=repeats)
        write_profile(cal, path, "empirical" if fit == "empirical" else "lognormal")
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{backend} backend overheads (median of {repeats})")
    table.add_column("phase")
    table.add_column("median s", justify="right")
    table.add_column("p90 s", justify="right")
    for name, (median, p90) in cal.phases.items():
        table.add_row(name, f"{median:.4f}", f"{p90:.4f}")
    console.print(table)
    console.print(f"profile written to {path}")
