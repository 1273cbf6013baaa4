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
with every modelled stage 0, so a scenario can include it and set its own stages on top.
"""

from __future__ import annotations

import datetime as dt
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

__all__ = ["Calibration", "calibrate", "load_overheads", "overhead_overrides", "profile_dict", "write_profile"]

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


def profile_dict(cal: Calibration) -> dict[str, Any]:
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
    }


def write_profile(cal: Calibration, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `gpuserve calibrate --backend {cal.backend}`: this host's own overheads.\n"
    path.write_text(header + yaml.safe_dump(profile_dict(cal), sort_keys=False, width=100))
    return path


OVERHEAD_FIELDS = ("platform_start_s", "dispatch_s", "result_post_s")


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


def overhead_overrides(overheads: dict[str, float], speedup: float = 1.0) -> list[tuple[str, float]]:
    """`--set` assignments that add a host's overheads to every endpoint of a scenario.

    A replay at speedup K runs K times faster than scenario time but pays the overheads in
    full, so in the replay's (scaled-back) records they weigh K times: the simulation to
    compare it with carries K x each overhead.
    """
    return [(f"endpoint.cold_start.{key}", value * speedup) for key, value in overheads.items()]
