"""Regenerate FIDELITY.md: the simulator against theory, against SimFaaS, and against the live platform.

    .venv/bin/python sim/fidelity_report.py [--speedup 5] [--quick]      (or: make fidelity)
    .venv/bin/python sim/fidelity_report.py --only lb_bursty            (one live study, printed)

(a) M/M/c with c always-warm workers against Erlang C; (b) one scale-per-request scenario in
gpuserve's simulator and in SimFaaS (bench/sim_throughput.py's runners); (c) the steady,
bursty and diurnal scenarios of scenarios/fidelity/ simulated and replayed live on the
process backend (and Docker when an engine answers), and lb_bursty (a load-balancing endpoint)
on the process backend, compared metric by metric, with and
without this host's calibrated overheads in the model. Every number in the file is measured
by the run that wrote it. Results folders go to out/fidelity/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import math
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from gpuserve.core.billing import BillingModel
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.experiments import load_scenario, run_scenario
from gpuserve.fidelity.calibrate import (
    calibrate,
    load_distributions,
    load_overheads,
    overhead_overrides,
    write_profile,
)
from gpuserve.fidelity.compare import WITHIN_ONE_TARGET, compare_dirs
from gpuserve.fidelity.replay import replay
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, SimEndpoint, Simulation
from gpuserve.sim.plots import plot_run
from gpuserve.sim.service import Exponential
from gpuserve.sim.workload import Poisson

# The checkout this study lives in: it reads scenarios/ and bench/, and writes out/fidelity/ and FIDELITY.md.
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("steady", "bursty", "diurnal")
LB_SCENARIOS = ("lb_bursty",)  # load-balancing endpoints: the process backend only (replay runs them there)
OUT = ROOT / "out" / "fidelity"


def erlang_c(c: int, offered: float) -> float:
    """P(wait) in M/M/c with offered load a = lambda/mu < c."""
    head = sum(offered**k / math.factorial(k) for k in range(c))
    tail = offered**c / math.factorial(c) * c / (c - offered)
    return tail / (head + tail)


def section_erlang(quick: bool) -> str:
    rows = []
    for c in (1, 2, 8):
        for rho in (0.5, 0.9):
            lam = rho * c
            jobs = (200_000 if quick else 1_000_000) * (2 if rho == 0.9 else 1)
            spec = EndpointSpec(
                "mmc",
                scaling=ScalingSpec(min_workers=c, max_workers=c, idle_timeout_s=5.0, scaler=ScalerType.REQUEST_COUNT, scaler_value=1.0),
                policy=PolicySpec("runpod_request_count"),
            )
            cfg = SimConfig((SimEndpoint(spec, Poisson(lam), Exponential(1.0), ColdStartProfile()),), billing=BillingModel({}), duration_s=jobs / lam, seed=1)
            raw = Simulation(cfg).run()
            arr = raw.job_arrival_s
            waits = np.clip(np.asarray(raw.job_start_s) - arr, 0.0, None)[arr.size // 100 :]
            p_theory = erlang_c(c, lam)
            w_theory = p_theory / (c - lam)
            p_sim, w_sim = float(np.mean(waits > 1e-9)), float(np.mean(waits))
            rows.append(
                f"| {c} | {rho} | {waits.size:,} | {p_theory:.4f} | {p_sim:.4f} | {(p_sim - p_theory) / p_theory:+.2%} "
                f"| {w_theory:.4f} | {w_sim:.4f} | {(w_sim - w_theory) / w_theory:+.2%} |"
            )
    head = (
        "## (a) M/M/c against Erlang C\n\n"
        "c always-warm workers (min = max = c, no cold start), Poisson arrivals, exponential service with mean 1 s,\n"
        "seed 1; the first 1% of jobs is dropped as warm-up. P(wait) and mean wait from Erlang C.\n\n"
        "| c | utilisation | jobs | P(wait) Erlang C | P(wait) simulated | error | mean wait (s) theory | simulated | error |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    return head + "\n".join(rows) + "\n"


def section_simfaas(quick: bool) -> str:
    # bench/ holds scripts, not a package: load the benchmark by its file, so this section runs its very scenario.
    spec = importlib.util.spec_from_file_location("sim_throughput", ROOT / "bench" / "sim_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    n = 50_000 if quick else 200_000
    g_s, g_n, g_flags, _calls = bench.run_gpuserve(n, 1)
    s_s, s_n, s_flags = bench.run_simfaas(n, 1)
    g_p, g_se = bench.batch_means(g_flags)
    s_p, s_se = bench.batch_means(s_flags)
    z = (g_p - s_p) / math.hypot(g_se, s_se) if g_se or s_se else float("nan")
    return (
        "## (b) The same scenario in gpuserve's simulator and in SimFaaS\n\n"
        f"SimFaaS's own example, as `bench/sim_throughput.py` runs it: Poisson {bench.RATE_PER_S} req/s, exponential service "
        f"{bench.WARM_MEAN_S} s warm / {bench.COLD_MEAN_S} s cold, keep-alive {bench.KEEP_ALIVE_S:.0f} s, scale per request, "
        f"no instance limit; {n:,} requests each, seed 1. P(cold) is the share of requests that launched an instance, "
        f"with the standard error of {bench.BATCHES} batch means.\n\n"
        "| simulator | requests | P(cold) | std. error | wall time (s) |\n| --- | ---: | ---: | ---: | ---: |\n"
        f"| gpuserve | {g_n:,} | {g_p:.5f} | {g_se:.5f} | {g_s:.2f} |\n"
        f"| SimFaaS 0.2.2 | {s_n:,} | {s_p:.5f} | {s_se:.5f} | {s_s:.2f} |\n\n"
        f"Difference {g_p - s_p:+.5f} = {z:+.2f} combined standard errors (one seed per simulator).\n"
    )


def docker_up() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def live_study(backend: str, speedup: float, quick: bool, only: tuple[str, ...] = ()) -> tuple[str, list[dict[str, object]]]:
    # One study alone (--only) leaves the shipped profile as the last full report wrote it.
    profile_path = (OUT if only else ROOT / "scenarios" / "profiles") / f"{backend}-host.yaml"
    t = time.time()
    cal = calibrate(backend, repeats=3 if quick else 7)  # type: ignore[arg-type]
    write_profile(cal, profile_path)
    overheads = load_overheads(profile_path)
    lines = [
        f"### {backend} backend\n",
        f"Calibrated overheads (`gpuserve calibrate --backend {backend}`, medians of {cal.repeats} cold starts and "
        f"{len(cal.samples.get('dispatch_s', []))} warm jobs, {time.time() - t:.0f} s): "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in overheads.items())
        + f". At speedup {speedup:g} they weigh {speedup:g} times as much in scenario seconds.\n",
    ]
    verdicts: list[dict[str, object]] = []
    names = SCENARIOS + (LB_SCENARIOS if backend == "process" else ())
    for name in names:
        if only and name not in only:
            continue
        path = ROOT / "scenarios" / "fidelity" / f"{name}.yaml"
        base = OUT / backend / name
        scenario = load_scenario(path, [("duration_s", "300")] if quick else [])
        plain = run_scenario(scenario)
        plain.write(base / "sim")
        calibrated_sc = load_scenario(path, ([("duration_s", "300")] if quick else []) + overhead_overrides(overheads, speedup))  # type: ignore[arg-type]
        calibrated = run_scenario(calibrated_sc)
        calibrated.write(base / "sim-calibrated")
        plot_run(calibrated, base / "sim-calibrated")
        t = time.time()
        run = replay(scenario, backend=backend, speedup=speedup)  # type: ignore[arg-type]
        wall = time.time() - t
        run.write(base / "live")
        comp_plain, _ = compare_dirs(base / "sim", base / "live", base / "compare-plain", plots=False)
        comp, _ = compare_dirs(base / "sim-calibrated", base / "live", base / "compare")
        lag = run.meta.get("client_lag_p99_ms")
        lines.append(
            f"#### {name}: {scenario.config.duration_s:.0f} s of scenario time, {len(run.result.jobs)} jobs, "
            f"live run {wall:.0f} s at speedup {speedup:g} (client submission lag p99 {lag:.1f} ms)\n"
        )
        lines.append("Simulated with this host's calibrated overheads (x speedup) against live:\n")
        lines.append(comp.markdown())
        t_plain = comp_plain.table.set_index("metric")
        lines.append(
            "Without the overheads in the model (the scenario as written): latency p50 "
            f"{t_plain.loc['latency_p50_s', 'relative_error']:+.1%}, p99 {t_plain.loc['latency_p99_s', 'relative_error']:+.1%}, "
            f"cold starts {t_plain.loc['cold_starts', 'relative_error']:+.1%}, "
            f"worker count within one {comp_plain.within_one:.1%}.\n"
        )
        lines.append(f"Plots: `out/fidelity/{backend}/{name}/compare/compare_latency_cdf.png`, `compare_workers.png`.\n")
        tab = comp.table.set_index("metric")
        verdicts.append(
            {
                "backend": backend,
                "scenario": name,
                "p50": tab.loc["latency_p50_s", "relative_error"],
                "p99": tab.loc["latency_p99_s", "relative_error"],
                "cold": tab.loc["cold_starts", "relative_error"],
                "within": comp.within_one,
                "ok": bool(tab.loc["latency_p50_s", "ok"]) and bool(tab.loc["latency_p99_s", "ok"])
                and bool(tab.loc["cold_starts", "ok"]) and comp.within_one >= WITHIN_ONE_TARGET,
            }
        )
    return "\n".join(lines), verdicts


REAL_WORKER = ROOT / "gpuserve" / "fidelity" / "real_worker.py"
REAL_MODEL_BYTES = 128 << 20
REAL_SERVICE = "lognormal:1.0:0.5"
TARGETS = {"latency_p50_s": 0.10, "latency_p99_s": 0.20, "cold_starts": 0.10, "gpu_s_billed": 0.05}
TARGET_NAMES = {"latency_p50_s": "p50", "latency_p99_s": "p99", "cold_starts": "cold-start count", "gpu_s_billed": "GPU-seconds billed"}


def real_study(quick: bool) -> str:
    """(d) A real handler, calibrated on one scenario's live run, predicting another scenario's live run."""
    from gpuserve.fidelity.calibrate import write_run_profile

    base = OUT / "real"
    base.mkdir(parents=True, exist_ok=True)
    model = base / "model.bin"
    if not model.is_file() or model.stat().st_size != REAL_MODEL_BYTES:
        model.write_bytes(np.random.default_rng(0).bytes(REAL_MODEL_BYTES))
    env = {"GPUSERVE_REAL_MODEL_SOURCE": "host_cache", "GPUSERVE_REAL_MODEL_PATH": str(model), "GPUSERVE_REAL_SERVICE": REAL_SERVICE}
    short = [("duration_s", "40")] if quick else []
    calib_path = ROOT / "scenarios" / "fidelity" / "real-calibrate.yaml"
    predict_path = ROOT / "scenarios" / "fidelity" / "real-predict.yaml"
    t = time.time()
    calib_sc = load_scenario(calib_path, short)
    loads: list[float] = []
    sampling = threading.Event()

    def sample_load() -> None:  # the host's 1-minute load average through the calibration run
        while not sampling.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    try:
        run_a = replay(calib_sc, backend="process", speedup=1.0, worker=REAL_WORKER, worker_env=env)
    finally:
        sampling.set()
        sampler.join()
    run_a.write(base / "calibrate" / "live", plots=False)
    wall_a = time.time() - t
    # Other runnable processes on the cores (other tenants): the load average less about one for
    # this study's own server, client and starting worker.
    background = max(0.0, float(np.mean(loads)) - 1.0) if loads else 0.0
    # Kept in the repository: the fit this section's prediction used (and its service samples beside it).
    fit, profile_path, service_path = write_run_profile(base / "calibrate" / "live", ROOT / "scenarios" / "profiles" / "real-handler.yaml")
    cores = os.cpu_count() or 1
    calibrated = [
        ("endpoint.cold_start", {"profile": str(profile_path)}),
        ("endpoint.service", {"kind": "empirical", "path": str(service_path)}),
        ("hosts", [{"name": "local", "gpus": {"A100": 4}, "cpu_cores": cores, "cpu_background": round(background, 2)}]),
    ]
    no_contention = calibrated[:2]
    predict_sc = load_scenario(predict_path, short + calibrated)
    prediction = run_scenario(predict_sc)
    prediction.write(base / "predict" / "sim")
    ablation = run_scenario(load_scenario(predict_path, short + no_contention))
    ablation.write(base / "predict" / "sim-no-contention")
    t = time.time()
    run_b = replay(load_scenario(predict_path, short), backend="process", speedup=1.0, worker=REAL_WORKER, worker_env=env)
    run_b.write(base / "predict" / "live")
    wall_b = time.time() - t
    comp, _ = compare_dirs(base / "predict" / "sim", base / "predict" / "live", base / "predict" / "compare")
    comp_abl, _ = compare_dirs(base / "predict" / "sim-no-contention", base / "predict" / "live", base / "predict" / "compare-no-contention", plots=False)
    # In-sample: the calibrated simulator against the very run it was fitted to.
    insample = run_scenario(load_scenario(calib_path, short + calibrated))
    insample.write(base / "calibrate" / "sim")
    comp_in, _ = compare_dirs(base / "calibrate" / "sim", base / "calibrate" / "live", base / "calibrate" / "compare", plots=False)
    tab, tab_abl, tab_in = (c.table.set_index("metric") for c in (comp, comp_abl, comp_in))

    def verdict(table: object) -> str:
        t = table  # a DataFrame indexed by metric
        return ", ".join(
            f"{TARGET_NAMES[m]} {t.loc[m, 'relative_error']:+.1%} ({'met' if abs(t.loc[m, 'relative_error']) <= lim else 'missed'})"  # type: ignore[attr-defined]
            for m, lim in TARGETS.items()
        )

    lone = fit.stages
    med = {k: float(np.median(v)) for k, v in lone.items() if v}
    cold_a = run_a.result.workers
    starts_a = (cold_a["ready_s"] - cold_a["created_s"]).dropna()
    starts_b = (run_b.result.workers["ready_s"] - run_b.result.workers["created_s"]).dropna()
    svc = np.asarray(fit.service_s)
    return "\n".join(
        [
            "## (d) A real handler: calibrated on one scenario, predicting another\n",
            "The live worker is `gpuserve/fidelity/real_worker.py`, not the synthetic one: it ignores the job input (the "
            "simulator's sample) and sleeps a service time it draws itself from its own generator (OS entropy; "
            f"`{REAL_SERVICE}`, mean 1 s), and its cold start is real work: the interpreter, gpuserve's SDK, `import numpy`, "
            f"and reading its {REAL_MODEL_BYTES >> 20} MiB model file from this host's disk into memory (model source "
            "`host_cache`). Process backend, speedup 1 (every time is real time).\n",
            f"1. **Calibrate** on `scenarios/fidelity/real-calibrate.yaml` alone (Poisson 0.7 req/s, request-count "
            f"policy, idle timeout 6 s): live run {wall_a:.0f} s, {len(run_a.result.jobs)} jobs, {len(starts_a)} workers "
            f"started (start-up median {starts_a.median():.2f} s, max {starts_a.max():.2f} s). `gpuserve calibrate --from-run` "
            f"fitted each stage as a lognormal from the {fit.alone if fit.alone >= 3 else fit.starts} "
            f"{'starts that no other start overlapped' if fit.alone >= 3 else 'starts (fewer than 3 were alone)'} "
            f"(medians: spawn {med.get('container_start_s', 0):.3f} s, interpreter + imports + model read "
            f"{med.get('runtime_init_s', 0):.3f} s, SDK start to first job-take {med.get('platform_start_s', 0):.3f} s) and "
            f"the service time as the {svc.size} measured execution times (mean {svc.mean():.3f} s, p99 "
            f"{np.percentile(svc, 99):.3f} s). The prediction's host has this machine's {cores} cores, which concurrent "
            f"start-ups share (gpuserve.sim.hosts), with {background:.1f} other runnable processes on them (the mean "
            f"1-minute load average during the calibration run, {np.mean(loads) if loads else 0.0:.1f}, less one for the "
            "study itself: this machine is shared).\n",
            f"2. **Predict** `scenarios/fidelity/real-predict.yaml` (on/off bursts of 2.5 req/s, queue-delay policy, idle "
            "timeout 4 s) with that calibration only, then run it live: "
            f"{wall_b:.0f} s, {len(run_b.result.jobs)} jobs, {len(starts_b)} workers started (start-up median "
            f"{starts_b.median():.2f} s, max {starts_b.max():.2f} s).\n",
            "Predicted (simulated, calibrated on the other scenario) against live:\n",
            comp.markdown(),
            f"Targets on the prediction: {verdict(tab)}.\n",
            f"The same prediction without CPU contention (no `cpu_cores` on the host): {verdict(tab_abl)}.\n",
            f"In-sample (the calibrated simulator against the run it was fitted to): {verdict(tab_in)}.\n",
            "The fit: `scenarios/profiles/real-handler.yaml` (and `real-handler-service.csv`). Folders: `out/fidelity/real/` "
            "(calibrate/live, calibrate/sim, predict/sim, predict/sim-no-contention, predict/live, predict/compare).\n",
        ]
    )


def cold_count_replications(scenario: object, n: int) -> list[int]:
    """Cold-start counts of `n` runs that differ only in the cold-start stream (stage draws): arrivals and services fixed."""
    from gpuserve.sim.records import build_result

    counts = []
    cfg = scenario.config  # type: ignore[attr-defined]
    for r in range(n):
        sim = Simulation(cfg)
        for i, ep in enumerate(sim._eps):
            # Replication r of stream 2 (the engine's cold-start stream is spawn key (i, 2)).
            ep.cold_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(i, 2, r)))
        counts.append(int(build_result(sim.run()).jobs["cold"].astype(bool).sum()))
    return counts


def coldstart_study(speedup: float, quick: bool, reps: int = 200) -> str:
    """(e) The Docker diurnal study again, with the calibrated start-up as a distribution instead of a median."""
    backend = "docker" if docker_up() else "process"
    base = OUT / backend / "diurnal-dist"
    # The calibration goes beside the results: the repository's profile is (c)'s, left as it is.
    profile_path = base / f"{backend}-host.yaml"
    cal = calibrate(backend, repeats=3 if quick else 7)  # type: ignore[arg-type]
    write_profile(cal, profile_path)
    overheads = load_overheads(profile_path)
    dists = load_distributions(profile_path)
    path = ROOT / "scenarios" / "fidelity" / "diurnal.yaml"
    short = [("duration_s", "300")] if quick else []
    median_sc = load_scenario(path, short + overhead_overrides(overheads, speedup))  # type: ignore[arg-type]
    dist_sc = load_scenario(path, short + overhead_overrides(overheads, speedup, dists))  # type: ignore[arg-type]
    run_scenario(median_sc).write(base / "sim-median")
    run_scenario(dist_sc).write(base / "sim-dist")
    t = time.time()
    live = replay(load_scenario(path, short), backend=backend, speedup=speedup)  # type: ignore[arg-type]
    wall = time.time() - t
    live.write(base / "live", plots=False)
    comp_med, _ = compare_dirs(base / "sim-median", base / "live", base / "compare-median", plots=False)
    comp_dist, _ = compare_dirs(base / "sim-dist", base / "live", base / "compare-dist", plots=False)
    live_cold = int(live.result.jobs["cold"].astype(bool).sum())
    counts = np.asarray(cold_count_replications(dist_sc, reps))
    values, freq = np.unique(counts, return_counts=True)
    within = float(np.mean(np.abs(counts - live_cold) <= 0.1 * np.maximum(counts, 1)))
    starts = [x for x in cal.samples.get("platform_start_s", [])]
    ps = dists.get("platform_start_s", {})
    tm, td = (c.table.set_index("metric") for c in (comp_med, comp_dist))

    def row(name: str, tab: object) -> str:
        t = tab  # DataFrame indexed by metric
        cells = [f"{t.loc[m, 'simulated']:.4g} ({t.loc[m, 'relative_error']:+.1%})" for m in ("latency_p50_s", "latency_p99_s", "cold_starts", "gpu_s_billed")]  # type: ignore[attr-defined]
        return f"| {name} | " + " | ".join(cells) + " |"

    return "\n".join(
        [
            "## (e) Cold starts as distributions: the diurnal study again\n",
            f"`gpuserve calibrate --backend {backend}` now also fits the start-up it measures as a lognormal "
            f"(`distributions.platform_start_s` in `out/fidelity/{backend}/diurnal-dist/{backend}-host.yaml`): {len(starts)} cold starts, "
            f"median {float(np.median(starts)) * 1000:.1f} ms, min {min(starts) * 1000:.1f} ms, max {max(starts) * 1000:.1f} ms; "
            f"fit median {float(ps.get('median_s', 0)) * 1000:.1f} ms, sigma {float(ps.get('sigma', 0)):.3f}. "
            f"`scenarios/fidelity/diurnal.yaml` was replayed live again ({backend} backend, speedup {speedup:g}, {wall:.0f} s) "
            f"and simulated with the calibrated start-up as its median (as in (c)) and as the fitted distribution, "
            f"each x {speedup:g}.\n",
            "| simulation | latency p50 (s) | latency p99 (s) | cold starts (jobs) | GPU-seconds billed |",
            "| --- | ---: | ---: | ---: | ---: |",
            row("median start-up", tm),
            row("start-up distribution", td),
            f"| live ({backend}) | {tm.loc['latency_p50_s', 'measured']:.4g} | {tm.loc['latency_p99_s', 'measured']:.4g} | "
            f"{live_cold} | {tm.loc['gpu_s_billed', 'measured']:.4g} |\n",
            f"The cold-start count of one run is one draw. Over {reps} simulations that differ only in the cold-start "
            "stream (the same arrivals and service times, each start drawn anew from the fitted distribution), the "
            "count was " + ", ".join(f"{v} in {f}" for v, f in zip(values.tolist(), freq.tolist(), strict=True))
            + f" runs (mean {counts.mean():.2f}); the live count ({live_cold}) is within 10% of the simulated one in "
            f"{within:.0%} of them.\n",
        ]
    )


STATIC = """
## What a replay does, and what `--speedup` scales

`gpuserve replay` runs a real gpuserve server on 127.0.0.1 (SQLite store, the core Controller
with a wall clock, the process or Docker backend). Every worker is the synthetic worker
(`gpuserve/fidelity/synthetic_worker.py`, gpuserve's worker SDK): its init phase sleeps the
cold start the simulator would give that worker at that moment (image pull unless cached or
under way, container start, runtime init, model load, or a flash-boot resume inside the
retention window: the same bookkeeping as the engine), and each job sleeps (or busy-waits,
`--mode busy`) the service time the simulator drew for it, passed in the job's input. A
separate client process submits each job at the simulator's arrival time (same workload
generator, same seed). Worker state intervals come from exact transitions recorded in the
worker registry (no sampling); a job is cold if it was waiting when its worker took its
first job, as in the simulator.

With `--speedup K`, the scenario is run K times faster: arrival times, service times, cold
starts, idle timeouts, queue-delay targets, execution timeouts and every policy parameter
named `*_s` (KPA windows and tick, Ray Serve delays, keep-alive) are divided by K, and the
records are multiplied back, so they are in scenario seconds. What does not shrink: the
platform's own overheads (process spawn and interpreter start, SDK start-up, HTTP dispatch
and result posts, the server's 20-ms maintenance pass, CPU contention when several workers
start at once) and fixed constants inside policies (KPA's 1-second buckets). In the
scaled-back records these weigh K times as much. `gpuserve calibrate` measures them, and the
simulator takes them as `platform_start_s` (added to every start), `dispatch_s` (before a
job starts) and `result_post_s` (after its service); the "calibrated" simulations below carry
K x the measured values, which is what the live run at speedup K experiences.

## Causes found and fixed (the model or the code, not the targets)

- **Lost wake-ups (live code).** A submitted job woke one parked job-take; if that take
  belonged to a worker that had just been stopped (draining), the wake was spent and the job
  stayed queued while idle workers kept polling, until some poll timed out. Seen in the
  first replays as jobs waiting seconds with three idle workers. The runtime now skips
  draining workers' takes when it wakes one.
- **Dispatch order (controller/runtime difference).** The simulator (like SimFaaS and
  Lambda) hands a job to the newest free worker, so load packs onto recent workers and older
  ones reach their idle timeout; the live runtime woke the longest-parked take, which spreads
  jobs round-robin and keeps every worker alive. Live now wakes the newest worker's take
  first. Before this, a 22-job test replay (60 s, speedup 5) started 3 workers against 5
  simulated and had 23% more idle worker-time; after it, 5 against 5 and 2% less.
- **Platform overheads (model).** The simulator had no place for the host's own start-up,
  dispatch and result-post costs; it now has (all 0 unless a calibrated profile sets them).
- **Time 0 (replay driver).** Time 0 was first taken before the server booted, so min workers
  started ~0.15 s of wall time (0.8 scenario seconds at speedup 5) after the simulated ones.
  Time 0 is now the moment the server is up.

## What remains different

- **Concurrent starts.** `calibrate` measures one worker starting on a quiet host. When
  several workers start at once (the first burst, the start of a run next to the server's own
  boot), they share this host's 2 CPUs and each takes longer. Section (c) models every start
  as the calibrated median with no contention; it shows as more INITIALIZING worker-time live
  than simulated (the "mean workers initializing" rows). The model now has both missing
  pieces: each stage can be a distribution, and a declared host's `cpu_cores` (with
  `cpu_background`, other runnable processes) are shared by concurrent start-ups; (d) uses
  both, (e) the distribution. A job that arrives within the spread of a worker's ready time
  is counted cold on one side and warm on the other (a job is cold when it was waiting as its
  worker took its first job), so with a handful of cold starts per run one such job is 10-25%
  of the count: a single run's cold-start count is one draw, and (e) gives how often the
  simulated count lands within 10% of the live one when only the start-up draws change.
- **A shared machine.** The real-handler study (d) ran with the 1-minute load average near
  10 on 2 cores (other work on the machine): start-ups took 4-5 s where a quiet host takes
  well under 1 s, and varied with that load between the calibration run and the predicted
  one. The contention model takes the background as a constant measured during the
  calibration run; load that changes between runs is not modelled. Of two runs of (d), the
  first missed p50 by +10.2% (its predicted run's start-ups were 28% slower than its
  calibration run's) and the second met all four targets.
- **Cold-start counts in-sample (d).** Simulating the calibration scenario itself undercounts
  its cold jobs (8 and 6 simulated against 10 and 9 live in the two runs) while the workers
  started are closer (20 against 20, 19 against 22); which jobs wait for a start depends on
  how a 4-s start lines up with 1-s services finishing, one to three jobs at these counts.
  Not investigated further.
- **The Docker diurnal miss, again (e).** The distribution does not make one run's count
  agree by itself: on the 2026-12-01 rerun the median model simulated 5 cold jobs against 4
  live (a miss by one job again, the other way) and the distribution's draw for the
  scenario's seed 2. Over 200 draws of the start-ups alone the simulated count ranged from 2
  to 8 with its mode at 4, the live count; one simulated run lands within 10% of the live one
  in 42% of draws. At about 5 cold jobs per run, start-up timing alone moves the count by one
  or two jobs (20-40%), more than the 10% target, so a per-run target on counts this small
  needs longer runs or a comparison of distributions. That rerun says little more: the host
  was loaded (1-minute load average near 10 on 2 cores), the calibrated Docker start-up was
  1.9 s (0.24 s on 2026-11-24), and the live replay's starts took 4-10 s of wall time each,
  2-5 times the calibration minutes before, so its p99 latency (+38-52%) and GPU-seconds
  (+5-6%) misses come from load that changed between calibration and run, which no profile
  carries. (c)'s Docker numbers (and `scenarios/profiles/docker-host.yaml`) are from the
  quiet day.
- **Tails of the queue delay.** Queue-delay percentiles at or near zero (p50 for a warm
  endpoint) compare milliseconds of dispatch; their relative errors are large and meaningless.
  The p95/p99 queue delays follow the cold-start timing above.
- **What the synthetic worker does not model.** The live workers sleep; a real model's
  start-up and inference contend for GPU memory, PCIe and CPU, which neither side has here.
  THROTTLED workers (GPU capacity on the simulated hosts) are not replayed: the live backends
  on a GPU-less host place no GPUs, so the fidelity scenarios keep max_workers within capacity.
- **Docker.** The Docker study runs only when `docker info` answers; see its section.
"""


def replace_section(path: Path, heading: str, text: str) -> None:
    """Put `text` in place of the report's section that starts with `heading` (up to the next `## `), or before the static part."""
    report = path.read_text() if path.is_file() else ""
    start = report.find(f"\n{heading}")
    if start < 0:
        anchor = report.find("\n## What a replay does")
        start = anchor if anchor >= 0 else len(report)
        end = start
    else:
        nxt = report.find("\n## ", start + 1)
        end = nxt if nxt >= 0 else len(report)
    path.write_text(report[:start] + "\n" + text.rstrip("\n") + "\n" + report[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speedup", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="shorter runs (300-s scenarios, fewer jobs) for a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "FIDELITY.md")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--only", help="run the live study of this one scenario (process backend) and print it; writes no file")
    parser.add_argument(
        "--section", choices=("all", "real", "coldstarts"), default="all",
        help="real: run only (d), the real-handler study; coldstarts: only (e); either replaces its section in place",
    )
    args = parser.parse_args()
    started = time.time()
    if args.only:
        text, _ = live_study("process", args.speedup, args.quick, only=(args.only,))
        print(text)
        print(f"(took {time.time() - started:.0f} s)")
        return
    if args.section != "all":
        heading, study = ("## (d)", lambda: real_study(args.quick)) if args.section == "real" else (
            "## (e)", lambda: coldstart_study(args.speedup, args.quick))
        text = study() + f"\nThis section took {time.time() - started:.0f} s (`sim/fidelity_report.py --section {args.section}`" \
            f"{' --quick' if args.quick else ''}, {dt.datetime.now(dt.UTC):%Y-%m-%d}).\n"
        replace_section(args.out, heading, text)
        print(f"wrote section {heading[3:]} of {args.out}")
        return
    parts = [
        "# Simulator fidelity\n",
        f"Regenerated by `make fidelity` (`.venv/bin/python sim/fidelity_report.py --speedup {args.speedup:g}"
        f"{' --quick' if args.quick else ''}`) on {dt.datetime.now(dt.UTC):%Y-%m-%d}, host `{platform.node()}` "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}). Every number below was measured by that run.\n",
    ]
    print("(a) Erlang C ...", flush=True)
    parts.append(section_erlang(args.quick))
    print("(b) SimFaaS ...", flush=True)
    parts.append(section_simfaas(args.quick))
    parts.append(
        "## (c) Simulated against live\n\n"
        "Targets: latency p50 within 10%, p99 within 20%, cold-start count within 10%, and the live worker count\n"
        "within one of the simulated count for 95% of the seconds. Scenarios: `scenarios/fidelity/*.yaml`.\n"
    )
    verdicts: list[dict[str, object]] = []
    backends = ["process"]
    if not args.no_docker and docker_up():
        backends.append("docker")
    for backend in backends:
        print(f"(c) {backend} backend ...", flush=True)
        try:
            text, v = live_study(backend, args.speedup, args.quick)
        except Exception as exc:  # a backend that fails mid-study is reported, not hidden
            text, v = f"### {backend} backend\n\nThe study failed: `{type(exc).__name__}: {exc}`.\n", []
        parts.append(text)
        verdicts += v
    if "docker" not in backends:
        parts.append("### docker backend\n\nNot run: no Docker engine answered `docker info` on this host when the report was made.\n")
    summary = ["### Summary\n", "| backend | scenario | p50 error | p99 error | cold-start error | seconds within one worker | all targets |",
               "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for v in verdicts:
        summary.append(
            f"| {v['backend']} | {v['scenario']} | {v['p50']:+.1%} | {v['p99']:+.1%} | {v['cold']:+.1%} | {v['within']:.1%} | "
            f"{'met' if v['ok'] else 'missed'} |"
        )
    parts.append("\n".join(summary) + "\n")
    print("(d) real handler ...", flush=True)
    try:
        parts.append(real_study(args.quick))
    except Exception as exc:  # reported, not hidden
        parts.append(f"## (d) A real handler: calibrated on one scenario, predicting another\n\nThe study failed: `{type(exc).__name__}: {exc}`.\n")
    print("(e) cold-start distributions ...", flush=True)
    try:
        parts.append(coldstart_study(args.speedup, args.quick))
    except Exception as exc:  # reported, not hidden
        parts.append(f"## (e) Cold starts as distributions: the diurnal study again\n\nThe study failed: `{type(exc).__name__}: {exc}`.\n")
    parts.append(STATIC)
    parts.append(f"\nThe whole report took {time.time() - started:.0f} s to regenerate.\n")
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
