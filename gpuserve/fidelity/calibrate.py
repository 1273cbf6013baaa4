"""`gpuserve calibrate`: measure this host's platform overheads and write them as a simulator profile.

Three overheads, each over repeated runs (medians kept, p90 reported):
- cold start of a bare worker (the synthetic worker with no init phase): spawn -> process
  start -> SDK import -> start() -> first job-take for the process backend; request ->
  create -> start -> runtime init -> first take for Docker. Their sum is `platform_start_s`.
- dispatch: job submitted -> taken by a worker that is idle in its long poll (`dispatch_s`).
- result post: what a job costs beyond its handler's service time, from the server's take to
  its COMPLETED status (the job's trip to the worker, the handler call and the result post;
  `result_post_s`); the pure post (handler return -> COMPLETED stored) is reported beside it.
The profile (scenarios/profiles/<backend>-host.yaml) has the simulator's cold-start schema,
with every modelled stage 0, so a scenario can include it and set its own stages on top. The
start-up is also written as a distribution (`distributions.platform_start_s`: a lognormal fit
of the measured starts, or the samples themselves with `fit="empirical"`), so the simulator
draws each start instead of repeating the median.

`calibrate_from_run` fits the same schema from the records of one live run (a replay's
results folder): each worker's measured start-up phases (the backend's cold-start records,
spawn -> exec'd -> the SDK's start() -> the first job-take) as stage distributions, and the
handler's service time as an empirical sample, for a worker that owns both (a real handler).
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import yaml

from gpuserve.core.errors import GpuserveError
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.fidelity.replay import API_KEY, REPLAY_SETTINGS, WORKER_SCRIPT, make_backend
from gpuserve.live.auth import hash_token
from gpuserve.live.backend import LiveBackend
from gpuserve.live.deployment import Deployment
from gpuserve.live.runtime import Endpoint
from gpuserve.platform import Platform

__all__ = [
    "Calibration",
    "RunFit",
    "calibrate",
    "calibrate_from_run",
    "fit_stage",
    "load_distributions",
    "load_overheads",
    "overhead_overrides",
    "profile_dict",
    "run_profile",
    "write_profile",
]

BackendName = Literal["process", "docker"]
WARM_SERVICE_S = 0.05  # each warm job sleeps this long, so the worker is back in its long poll between jobs


@dataclass
class Calibration:
    backend: str
    repeats: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def phases(self) -> dict[str, tuple[float, float]]:
        """name -> (median, p90) seconds."""
        return {
            k: (statistics.median(v), float(np.percentile(v, 90)))
            for k, v in self.samples.items()
            if v
        }

    def median(self, name: str) -> float:
        values = self.samples.get(name) or []
        return statistics.median(values) if values else 0.0


def _spec(eid: str, min_workers: int, idle_timeout_s: float) -> EndpointSpec:
    return EndpointSpec(
        eid,
        scaling=ScalingSpec(
            min_workers=min_workers,
            max_workers=1,
            idle_timeout_s=idle_timeout_s,
            scaler=ScalerType.REQUEST_COUNT,
            scaler_value=1.0,
            flash_boot=False,
        ),
        policy=PolicySpec("runpod_request_count"),
        execution_timeout_s=600.0,
    )


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise GpuserveError(f"calibrate: {what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.005)


def calibrate(backend: BackendName = "process", repeats: int = 7, work_dir: Path | None = None) -> Calibration:
    """Run a server with a bare synthetic worker and measure cold starts, dispatch and result posts."""
    work = Path(tempfile.mkdtemp(prefix="gpuserve-calibrate-")) if work_dir is None else work_dir
    work.mkdir(parents=True, exist_ok=True)
    worker_dir = work / "worker"
    worker_dir.mkdir(exist_ok=True)
    handler = worker_dir / WORKER_SCRIPT.name
    shutil.copyfile(WORKER_SCRIPT, handler)
    cal = Calibration(backend, repeats)
    deployments = [
        Deployment(spec=_spec("cold", 0, 0.05), handler_path=str(handler), sdk="gpuserve"),
        Deployment(spec=_spec("warm", 1, 3600.0), handler_path=str(handler), sdk="gpuserve"),
    ]
    server = Platform(
        [Endpoint(d, frozenset({hash_token(API_KEY)})) for d in deployments],
        data_dir=work,
        backend=make_backend(backend, work),
        settings=REPLAY_SETTINGS,
    ).start()
    registry, store, inner = server.registry, server.store, server.backend
    assert inner is not None
    try:
        with httpx.Client(base_url=f"{server.url}/v2", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:

            def run(eid: str, service_s: float) -> Any:
                r = http.post(f"/{eid}/run", json={"input": {"service_s": service_s}})
                r.raise_for_status()
                job_id = r.json()["id"]
                return _wait(lambda: (j := store.get(job_id)) is not None and j.status.is_terminal and j, 120, f"job {job_id} to end")

            # Cold starts: one job at zero workers, then wait for the scale back to zero.
            for _ in range(repeats):
                _wait(lambda: not registry.all("cold"), 60, "the cold endpoint to scale to zero")
                job = run("cold", 0.0)
                worker_id = job.worker_id
                _wait(lambda: not registry.all("cold"), 60, "the cold endpoint to scale to zero")
                time.sleep(0.1)
                for name, value in _cold_phases(inner, worker_id).items():
                    cal.samples.setdefault(name, []).append(value)
            # Warm jobs: dispatch to an idle worker and per-job overhead around the handler.
            _wait(lambda: any(w.first_take_s is not None for w in registry.all("warm")), 60, "the warm worker to be ready")
            for _ in range(max(10, 3 * repeats)):
                time.sleep(0.05)  # the worker is parked in its long poll again
                job = run("warm", WARM_SERVICE_S)
                if job.started_s is None or job.completed_s is None:
                    continue
                cal.samples.setdefault("dispatch_s", []).append(job.started_s - job.created_s)
                cal.samples.setdefault("result_post_s", []).append(job.completed_s - job.started_s - WARM_SERVICE_S)
                done_wall = (job.output or {}).get("done_wall_s") if isinstance(job.output, dict) else None
                if isinstance(done_wall, float):
                    cal.samples.setdefault("post_only_s", []).append(job.completed_s - done_wall)
    finally:
        server.stop(quiet=True)
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if not cal.samples.get("platform_start_s"):
        raise GpuserveError(f"calibrate: no cold start of the {backend} backend was recorded")
    return cal


def _cold_phases(backend: LiveBackend, worker_id: str | None) -> dict[str, float]:
    """One worker's start-up phases from the backend's own record, plus its total as platform_start_s."""
    record = backend.cold_start(worker_id) if worker_id is not None else None
    if record is None:
        return {}
    out = record.phases()
    if record.total_s is not None:
        out["platform_start_s"] = record.total_s
    return out


Fit = Literal["lognormal", "empirical"]


def fit_stage(samples: list[float], fit: Fit = "lognormal") -> dict[str, Any]:
    """A stage distribution (the profile's `distributions` entry) fitted to measured seconds.

    lognormal: median = the geometric mean, sigma = the standard deviation of log(samples)
    (the maximum-likelihood fit); empirical: the samples, rounded to 0.1 ms.
    """
    values = [float(x) for x in samples if x is not None and math.isfinite(x) and x >= 0]
    if not values:
        raise GpuserveError("calibrate: no samples to fit a stage distribution to")
    if fit == "empirical":
        return {"kind": "empirical", "samples_s": [round(x, 4) for x in values]}
    positive = [x for x in values if x > 1e-4]
    if len(positive) < max(2, len(values) / 2):
        # Mostly zero (a phase the backend barely sees): its median, without a spread log() cannot fit.
        return {"kind": "lognormal", "median_s": round(float(np.median(values)), 5), "sigma": 0.0}
    logs = np.log(positive)
    sigma = float(np.std(logs, ddof=1)) if len(values) > 1 else 0.0
    return {"kind": "lognormal", "median_s": round(float(np.exp(np.mean(logs))), 5), "sigma": round(sigma, 4)}


def profile_dict(cal: Calibration, fit: Fit = "lognormal") -> dict[str, Any]:
    phases = cal.phases
    measured = ", ".join(f"{k} {m:.4f} s (p90 {p:.4f})" for k, (m, p) in phases.items())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return {
        "description": f"platform overheads of the {cal.backend} backend on {platform.node() or 'this host'}; "
        "every modelled stage is 0, so include it and set your own stages on top",
        "source": f"gpuserve calibrate --backend {cal.backend} --repeats {cal.repeats} ({when}); medians of: {measured}",
        "name": f"{cal.backend}-host",
        "image": f"{cal.backend}-host",
        "image_size_gb": 0.0,
        "container_start_s": 0.0,
        "runtime_init_s": 0.0,
        "model_size_gb": 0.0,
        "flash_resume_s": 0.0,
        "flash_retention_s": 0.0,
        "platform_start_s": round(cal.median("platform_start_s"), 4),
        "dispatch_s": round(cal.median("dispatch_s"), 5),
        "result_post_s": round(max(0.0, cal.median("result_post_s")), 5),
        "distributions": {"platform_start_s": fit_stage(cal.samples["platform_start_s"], fit)},
    }


def write_profile(cal: Calibration, path: Path, fit: Fit = "lognormal") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `gpuserve calibrate --backend {cal.backend}`: this host's own overheads.\n"
    path.write_text(header + yaml.safe_dump(profile_dict(cal, fit), sort_keys=False, width=100))
    return path


OVERHEAD_FIELDS = ("platform_start_s", "dispatch_s", "result_post_s")


def load_distributions(path: Path) -> dict[str, Any]:
    """The stage distributions of a calibrated profile file ({} when it has none)."""
    data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    dists = data.get("distributions") if isinstance(data, dict) else None
    return dict(dists) if isinstance(dists, dict) else {}


def scaled_distributions(distributions: dict[str, Any], factor: float) -> dict[str, Any]:
    """Each distribution with its times multiplied by `factor` (a lognormal's sigma is scale-free)."""
    out: dict[str, Any] = {}
    for stage, dist in distributions.items():
        d = dict(dist)
        if d.get("median_s") is not None:
            d["median_s"] = float(d["median_s"]) * factor
        if d.get("samples_s"):
            d["samples_s"] = [float(x) * factor for x in d["samples_s"]]
        out[stage] = d
    return out


def load_overheads(path: Path) -> dict[str, float]:
    """The three platform overheads of a calibrated profile file."""
    from gpuserve.core.errors import ConfigError

    if not path.is_file():
        raise ConfigError("profile", str(path), "is not a file (run `gpuserve calibrate` first)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError("profile", str(path), "must hold a mapping")
    out = {}
    for key in OVERHEAD_FIELDS:
        value = data.get(key, 0.0)
        if not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"profile.{key}", value, "must be a non-negative number")
        out[key] = float(value)
    return out


def overhead_overrides(
    overheads: dict[str, float], speedup: float = 1.0, distributions: dict[str, Any] | None = None
) -> list[tuple[str, Any]]:
    """`--set` assignments that add a host's overheads to every endpoint of a scenario.

    A replay at speedup K runs K times faster than scenario time but pays the overheads in
    full, so in the replay's (scaled-back) records they weigh K times: the simulation to
    compare it with carries K x each overhead (and K x each stage distribution's times).
    """
    out: list[tuple[str, Any]] = [(f"endpoint.cold_start.{key}", value * speedup) for key, value in overheads.items()]
    if distributions:
        out.append(("endpoint.cold_start.distributions", scaled_distributions(distributions, speedup)))
    return out


@dataclass
class RunFit:
    """What `calibrate_from_run` measured in one live run: stage samples, service samples, and which starts were alone."""

    stages: dict[str, list[float]]
    service_s: list[float]
    starts: int
    alone: int
    dispatch_s: float


def calibrate_from_run(live_dir: Path) -> RunFit:
    """Stage and service samples from one replay's results folder (jobs.csv, workers.csv, replay.json).

    Stages come from the backend's cold-start records the replay kept (`cold_starts` in
    replay.json): spawn -> exec'd (`container_start_s`), exec'd -> the SDK's start() (the
    handler's imports and model load: `runtime_init_s`), start() -> first job-take and
    whatever the backend saw beyond those phases (`platform_start_s`). Only starts that no
    other start overlapped are used when there are at least 3 of them, so the fit is a lone
    start's time and the simulator's contention model adds the rest. Service times are the
    completed jobs' execution times (take -> result stored, the handler's own time plus its
    per-job overhead).
    """
    import json

    import pandas as pd

    meta_path = live_dir / "replay.json"
    if not meta_path.is_file():
        raise GpuserveError(f"calibrate: {live_dir} is not a replay's results folder (no replay.json)")
    meta = json.loads(meta_path.read_text())
    records = [r for r in meta.get("cold_starts") or [] if r.get("kind") == "cold" and r.get("total_s") is not None]
    if not records:
        raise GpuserveError(f"calibrate: {meta_path} holds no cold-start records (replay it with this version)")
    workers = pd.read_csv(live_dir / "workers.csv")
    spans = {
        str(wid): (float(created), float(ready))
        for wid, created, ready in zip(workers["worker_id"], workers["created_s"], workers["ready_s"], strict=True)
        if math.isfinite(float(ready))
    }

    def alone(wid: str) -> bool:
        if wid not in spans:
            return False
        a, b = spans[wid]
        return not any(o != wid and x < b and y > a for o, (x, y) in spans.items())

    lone = [r for r in records if alone(str(r["worker_id"]))]
    used = lone if len(lone) >= 3 else records
    stages: dict[str, list[float]] = {"container_start_s": [], "runtime_init_s": [], "platform_start_s": []}
    for r in used:
        spawn = float(r.get("start_s") or 0.0)
        init = float(r.get("runtime_init_s") or 0.0)
        stages["container_start_s"].append(spawn)
        stages["runtime_init_s"].append(init)
        stages["platform_start_s"].append(max(0.0, float(r["total_s"]) - spawn - init))
    jobs = pd.read_csv(live_dir / "jobs.csv")
    done = jobs[jobs["status"] == "COMPLETED"]
    service = [float(x) for x in done["execution_s"] if math.isfinite(x) and x >= 0]
    if not service:
        raise GpuserveError(f"calibrate: {live_dir}/jobs.csv has no completed job to take service times from")
    warm = done[~done["cold"].astype(bool)]
    dispatch = float(np.median(warm["delay_s"])) if len(warm) else 0.0
    return RunFit(stages, service, len(records), len(lone), max(0.0, min(dispatch, 0.05)))


def run_profile(fit: RunFit, source: str, stage_fit: Fit = "lognormal") -> dict[str, Any]:
    """A cold-start profile (the simulator's schema) from `calibrate_from_run`: each stage a distribution."""
    dists = {stage: fit_stage(samples, stage_fit) for stage, samples in fit.stages.items() if samples}
    medians = {stage: round(float(np.median(samples)), 5) for stage, samples in fit.stages.items() if samples}
    return {
        "description": "a real handler's cold start fitted from one live run; every stage a distribution",
        "source": f"gpuserve calibrate --from-run {source}: {fit.starts} cold starts ({fit.alone} alone, "
        f"{'those' if fit.alone >= 3 else 'all'} fitted), {len(fit.service_s)} jobs",
        "name": "from-run",
        "image": "from-run",
        "image_size_gb": 0.0,
        "model_size_gb": 0.0,
        "flash_resume_s": 0.0,
        "flash_retention_s": 0.0,
        "container_start_s": medians.get("container_start_s", 0.0),
        "runtime_init_s": medians.get("runtime_init_s", 0.0),
        "platform_start_s": medians.get("platform_start_s", 0.0),
        "dispatch_s": round(fit.dispatch_s, 5),
        "result_post_s": 0.0,  # inside the measured execution times
        "distributions": dists,
    }


def write_run_profile(live_dir: Path, path: Path, stage_fit: Fit = "lognormal") -> tuple[RunFit, Path, Path]:
    """Fit one live run (`calibrate_from_run`) and write its profile, plus its service samples
    beside it (`<name>-service.csv`, one per line: `service: {kind: empirical, path: ...}`)."""
    fit = calibrate_from_run(live_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the folder as the user would type it from here
        shown = str(live_dir.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(live_dir)
    header = f"# Written by `gpuserve calibrate --from-run {shown}`: a real handler's cold start.\n"
    path.write_text(header + yaml.safe_dump(run_profile(fit, shown, stage_fit), sort_keys=False, width=100))
    service_path = path.with_name(f"{path.stem}-service.csv")
    service_path.write_text("service_s\n" + "".join(f"{x:.5f}\n" for x in fit.service_s))
    return fit, path, service_path
