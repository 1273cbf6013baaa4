"""`gpuserve replay`: run a scenario's own arrivals, service times and endpoint settings on the live platform.

A real gpuserve server (uvicorn on 127.0.0.1, SQLite store, the core Controller over the
process or Docker backend) serves the scenario's endpoints; each worker is the synthetic
worker (gpuserve/fidelity/synthetic_worker.py); a separate client process submits every job
at its scheduled time. With `speedup` K every scenario time is divided by K on the way in
(arrivals, service, cold starts, idle timeouts, queue-delay targets, policy windows,
execution timeouts) and multiplied by K on the way out, so the records are in scenario
seconds and line up with `gpuserve simulate`'s. What does not shrink: the platform's own
overheads (process spawn, SDK start, HTTP dispatch and result posts), which therefore weigh
K times more in the scaled-back records; `gpuserve calibrate` measures them so the
simulator can include them (see FIDELITY.md).

A load-balancing endpoint runs the synthetic HTTP worker (synthetic_lb_worker.py) under the
process backend, and the client sends each request through the server's proxy
(`POST /lb/{id}/work`), holding it open until it is answered: 200 is COMPLETED, 504 TIMED_OUT
and 503 a rejection (FAILED, `rejected`). A request counts as held when it reached its worker
more than HELD_AFTER_WALL_S after it was sent (the proxy's own hop takes far less), and as a
cold start when it waited for its worker's start: it was sent before that worker became ready
(first 200 on /ping) and reached it within COLD_WITHIN_WALL_S of that instant (the simulator's
rule: the requests a worker takes as it becomes ready).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gpuserve.config.scenario import Scenario
from gpuserve.core.billing import BillingModel
from gpuserve.core.clock import Clock
from gpuserve.core.errors import ConfigError, GpuserveError
from gpuserve.core.types import WorkerState
from gpuserve.fidelity.plan import ColdStartLedger, JobPlan, job_plan, scale_spec
from gpuserve.fidelity.recorder import RecordingBackend, WorkerRecorder, WorkerTrace
from gpuserve.live.auth import hash_token
from gpuserve.live.backend import LiveBackend
from gpuserve.live.deployment import Deployment
from gpuserve.live.ledger import Bill
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.runtime import Endpoint
from gpuserve.live.settings import ServerSettings
from gpuserve.platform import BackendFactory, Platform
from gpuserve.sim.engine import JOB_STATUSES, STATE_CODES, RawRecords
from gpuserve.sim.records import SimResult, build_result
from gpuserve.store.base import JobStore

__all__ = ["REPLAY_SETTINGS", "ReplayRun", "make_backend", "replay"]

BackendName = Literal["process", "docker"]
Mode = Literal["sleep", "busy"]

API_KEY = "sk-replay"
WORKER_SCRIPT = Path(__file__).with_name("synthetic_worker.py")
LB_WORKER_SCRIPT = Path(__file__).with_name("synthetic_lb_worker.py")
HELD_AFTER_WALL_S = 0.05
COLD_WITHIN_WALL_S = 0.1

# The maintenance pass (deadlines, backend poll, controller wakes) runs every 20 ms: at
# speedup 10 an idle worker is stopped within 0.2 scenario seconds of its keep-alive.
REPLAY_SETTINGS = ServerSettings(
    poll_timeout_s=10.0,
    heartbeat_interval_s=2.0,
    missed_heartbeats=5,
    tick_interval_s=0.5,
    maintenance_interval_s=0.02,
    lb_health_interval_s=0.02,  # a load-balancing worker is seen ready within 20 ms of its first 200
)
_STATUS_CODE = {name: i for i, name in enumerate(JOB_STATUSES)}


@dataclass
class ReplayRun:
    """A finished replay: results in scenario seconds and what the run noticed about itself."""

    result: SimResult
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv", plots: bool = True) -> list[Path]:
        paths = self.result.write(out_dir, fmt)
        meta_path = out_dir / "replay.json"
        meta_path.write_text(json.dumps(self.meta, indent=2, default=str))
        paths.append(meta_path)
        if plots:
            from gpuserve.sim.plots import plot_run

            # Titles name the scenario, as a simulated run's do, so the two sets of plots read alike.
            paths += plot_run(self.result, out_dir, scenario=self.meta.get("scenario"))
        return paths


def _check(scenario: Scenario) -> list[str]:
    notes = []
    cfg = scenario.config
    for h in cfg.hosts:
        for ep in cfg.endpoints:
            spec = ep.spec
            have = h.gpus.get(spec.gpu_type or "", 0)
            if spec.gpus_needed and spec.scaling.max_workers * spec.gpus_needed > have * len(cfg.hosts):
                notes.append(
                    f"endpoint {spec.endpoint_id}: the simulated hosts may run out of {spec.gpu_type} GPUs "
                    "(THROTTLED workers); the live backend here does not model GPU placement"
                )
    return notes


def make_backend(name: BackendName, work: Path) -> BackendFactory:
    """The replay's backend: fast stops, its own logs and (Docker) namespace under the work folder."""

    def make(registry: WorkerRegistry, url: str, settings: ServerSettings, clock: Clock, data_dir: Path) -> LiveBackend:
        return _backend(name, url, registry, work, settings)

    return make


def _backend(name: BackendName, url: str, registry: WorkerRegistry, work: Path, settings: ServerSettings) -> LiveBackend:
    ping_ms = int(settings.heartbeat_interval_s * 1000)
    if name == "process":
        from gpuserve.backends.process import ProcessBackend

        return ProcessBackend(url, registry, logs_dir=work / "logs", ping_interval_ms=ping_ms, stop_grace_s=3.0)
    from gpuserve.backends.docker import DockerBackend

    # No Docker flash boot (pause/unpause): the replay's own ledger decides when a start is a
    # flash resume, so that the worker's init phase lasts what the simulator says.
    return DockerBackend(
        url, registry, namespace=f"replay-{work.name[-8:]}", retention_s=0.0, state_dir=work / "docker",
        ping_interval_ms=ping_ms, stop_timeout_s=3,
    )


def wall_billing(model: BillingModel, k: float) -> BillingModel:
    """The scenario's billing model for a run K times faster: a wall second is K scenario seconds.

    Prices per second go up K times and a scenario second is 1/K wall seconds, so the live
    ledger's bill of the sped-up run is the bill of the scenario's timeline."""
    return replace(
        model,
        prices_usd_per_gpu_s={key: price * k for key, price in model.prices_usd_per_gpu_s.items()},
        price_usd_per_gb_s=model.price_usd_per_gb_s * k,
        rounding_s=model.rounding_s / k,
    )


def add_ledger_columns(summary: pd.DataFrame, bills: dict[str, Bill], k: float) -> None:
    """`ledger_gpu_s_billed` and `ledger_cost_usd`: what the live server's own ledger billed, per summary row."""
    gpu_s, cost = [], []
    for name in summary["endpoint"]:
        chosen = [b for eid, b in bills.items() if name in (eid, "ALL")]
        gpu_s.append(sum(b.gpu_s for b in chosen) * k)
        cost.append(sum(b.cost_usd for b in chosen))
    summary["ledger_gpu_s_billed"] = gpu_s
    summary["ledger_cost_usd"] = cost


def replay(
    scenario: Scenario,
    *,
    backend: BackendName = "process",
    speedup: float = 1.0,
    mode: Mode = "sleep",
    work_dir: Path | None = None,
    settings: ServerSettings = REPLAY_SETTINGS,
    progress: Callable[[float, float], None] | None = None,
    worker: Path = WORKER_SCRIPT,
    worker_env: dict[str, str] | None = None,
) -> ReplayRun:
    """Run the scenario live and return its records in scenario seconds (see the module docstring).

    `worker` replaces the synthetic worker with another handler script (one that owns its
    service time and cold start, as gpuserve/fidelity/real_worker.py does; it is handed the
    same job inputs and may ignore them), `worker_env` adds to each worker's environment.
    """
    if not speedup > 0:
        raise ConfigError("speedup", speedup, "must be positive")
    if backend not in ("process", "docker"):
        raise ConfigError("backend", backend, "must be process or docker")
    if mode not in ("sleep", "busy"):
        raise ConfigError("mode", mode, "must be sleep or busy")
    cfg = scenario.config
    lb_ids = [ep.spec.endpoint_id for ep in cfg.endpoints if ep.spec.is_load_balancer]
    if lb_ids and backend != "process":
        raise ConfigError("backend", backend, f"cannot replay load-balancing endpoints ({', '.join(lb_ids)}): use process")
    plan = job_plan(cfg)
    k = float(speedup)
    own_dir = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="gpuserve-replay-")) if work_dir is None else work_dir
    work.mkdir(parents=True, exist_ok=True)
    worker_dir = work / "worker"
    plans = worker_dir / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    handler = worker_dir / worker.name
    shutil.copyfile(worker, handler)
    lb_worker = worker_dir / LB_WORKER_SCRIPT.name
    shutil.copyfile(LB_WORKER_SCRIPT, lb_worker)
    plan_env_dir = str(plans.resolve()) if backend == "process" else "/app/plans"

    clock_origin = {"t0": time.time()}

    def scen(t_wall: float) -> float:
        return (t_wall - clock_origin["t0"]) * k

    ledgers = {ep.spec.endpoint_id: ColdStartLedger(ep.cold_start, ep.spec.scaling.flash_boot) for ep in cfg.endpoints}
    deployments = [
        Deployment(
            # GPU type is a billing label here: the live workers are synthetic and need no GPU.
            spec=replace(scale_spec(ep.spec, k), gpu_type=None),
            handler_path=str(handler),
            env={
                "GPUSERVE_FIDELITY_DIR": plan_env_dir,
                "GPUSERVE_FIDELITY_MODE": mode,
                "GPUSERVE_FIDELITY_CONCURRENCY": str(ep.spec.concurrency_per_worker),
                **(worker_env or {}),
            },
            sdk="gpuserve",
            # A load-balancing endpoint: the synthetic HTTP worker, started by the process backend.
            command=(sys.executable, str(lb_worker)) if ep.spec.is_load_balancer else None,
        )
        for ep in cfg.endpoints
    ]
    recorder = WorkerRecorder()
    for ep in cfg.endpoints:
        recorder.min_workers[ep.spec.endpoint_id] = ep.spec.scaling.min_workers

    def recording(inner: LiveBackend) -> LiveBackend:
        return RecordingBackend(
            inner,
            recorder,
            plans,
            start_stages=lambda eid, now: ledgers[eid].start(scen(now)),
            # The platform pays its own start-up for real; the worker sleeps only the modelled stages.
            init_s=lambda stages: (stages.total_s - stages.platform_start_s) / k,
            on_retire=lambda eid, now, ready: ledgers[eid].retire(scen(now), ready),
        )

    server = Platform(
        [Endpoint(d, frozenset({hash_token(API_KEY)})) for d in deployments],
        data_dir=work,
        backend=make_backend(backend, work),
        settings=settings,
        wrap_backend=recording,
        billing=wall_billing(cfg.billing, k),
    )
    for ep in cfg.endpoints:
        server.runtime.ledger.price_as(ep.spec.endpoint_id, ep.spec.gpu_type, ep.spec.gpus_needed)
    recorder.attach(server.registry)
    store = server.store

    def created(job_id: str) -> float | None:
        job = store.get(job_id)
        return None if job is None else job.created_s

    recorder.job_created_s = created

    plan_path = work / "client_plan.json"
    sent_path = work / "client_sent.jsonl"
    plan_path.write_text(
        json.dumps(
            {
                "api_key": API_KEY,
                "jobs": [
                    [plan.endpoint_ids[int(e)], float(a) / k, float(s) / k]
                    for e, a, s in zip(plan.endpoint_index, plan.arrival_s, plan.service_s, strict=True)
                ],
                "lb": lb_ids,
            }
        )
    )
    with open(work / "client.log", "wb") as client_log:  # the child keeps its own descriptor
        client = subprocess.Popen(
            [sys.executable, "-m", "gpuserve.fidelity.client", str(plan_path), str(sent_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=client_log,
            text=True,
        )
    assert client.stdout is not None
    if client.stdout.readline().strip() != "ready":  # the client's imports must not eat into its schedule
        client.wait(10)
        raise GpuserveError(f"the replay client did not start:\n{(work / 'client.log').read_text()[-2000:]}")
    try:
        clock_origin["t0"] = time.time()
        server.start()
        # Time 0 is when the server is up: the simulator starts min_workers at 0, and the server
        # starts them in its first pass (uvicorn's boot before that takes ~0.15 s here).
        clock_origin["t0"] = time.time()
        assert client.stdin is not None
        client.stdin.write(f"{server.url} {clock_origin['t0']!r}\n")
        client.stdin.close()
        t0 = clock_origin["t0"]
        horizon_wall = t0 + cfg.duration_s / k
        deadline_wall = t0 + (cfg.duration_s + cfg.drain_limit_s) / k
        sent = _wait_for_client(client, sent_path, len(plan), deadline_wall, work, progress, t0, k, cfg.duration_s)
        end_wall = _wait_for_jobs(store, sent, horizon_wall, deadline_wall, progress, t0, k, cfg.duration_s)
        recorder.close_all(end_wall)
        jobs = {rec["job_id"]: store.get(rec["job_id"]) for rec in sent if "job_id" in rec}
        raw, extra = _raw_records(scenario, plan, sent, jobs, recorder, end_wall, scen, t0)
        # The server's own ledger, read at the run's end (wall GPU-seconds x K are scenario ones).
        bills = {eid: server.runtime.ledger.endpoint_bill(eid, now_s=end_wall) for eid in plan.endpoint_ids}
        # The backend's own start-up records (wall seconds, not scaled): what calibrate_from_run fits.
        records = (server.backend.cold_start(w) if server.backend is not None else None for w in recorder.traces)
        cold_starts = [r.as_dict() for r in records if r is not None]
    finally:
        server.stop(quiet=True)
        if client.poll() is None:
            client.kill()
    assert isinstance(server.backend, RecordingBackend)
    applied = server.backend.applied
    result = build_result(raw)
    result.jobs["scheduled_arrival_s"] = extra["scheduled_s"]
    result.jobs["service_planned_s"] = extra["service_s"]
    add_ledger_columns(result.summary, bills, k)
    meta = {
        "scenario": scenario.name,
        "backend": backend,
        "speedup": k,
        "mode": mode,
        "jobs_planned": len(plan),
        "jobs_submitted": len(sent),
        "client_lag_p50_ms": float(np.percentile(extra["lag_s"], 50) * 1000) if len(sent) else None,
        "client_lag_p99_ms": float(np.percentile(extra["lag_s"], 99) * 1000) if len(sent) else None,
        "failed_jobs": extra["failed"],
        "scale_actions": [[round((t - clock_origin["t0"]) * k, 3), e, s, list(st)] for t, e, s, st in applied],
        "notes": _check(scenario),
        "cold_starts": cold_starts,
        "work_dir": str(work),
    }
    if own_dir:
        shutil.rmtree(work, ignore_errors=True)
    return ReplayRun(result, meta)


def _wait_for_client(
    client: subprocess.Popen[str],
    sent_path: Path,
    n: int,
    deadline_wall: float,
    work: Path,
    progress: Callable[[float, float], None] | None,
    t0: float,
    k: float,
    duration_s: float,
) -> list[dict[str, Any]]:
    while client.poll() is None:
        if time.time() > deadline_wall:
            client.kill()
            break
        if progress:
            progress(min(duration_s, (time.time() - t0) * k), duration_s)
        time.sleep(0.1)
    if client.returncode not in (0, None):
        log = (work / "client.log").read_text()[-2000:]
        raise GpuserveError(f"the replay client failed (exit {client.returncode}):\n{log}")
    sent = [json.loads(line) for line in sent_path.read_text().splitlines() if line.strip()] if sent_path.is_file() else []
    sent.sort(key=lambda r: r["i"])
    return sent


def _wait_for_jobs(
    store: JobStore,
    sent: list[dict[str, Any]],
    horizon_wall: float,
    deadline_wall: float,
    progress: Callable[[float, float], None] | None,
    t0: float,
    k: float,
    duration_s: float,
) -> float:
    """Wait until every job has ended and the horizon has passed; return the run's end (wall seconds).

    Load-balancing requests have ended already: the client waited for each answer."""
    pending = {r["job_id"] for r in sent if "job_id" in r}
    last_end = max((float(r["done_s"]) for r in sent if r.get("lb")), default=0.0)
    while True:
        now = time.time()
        for job_id in list(pending):
            job = store.get(job_id)
            if job is None or job.status.is_terminal:
                pending.discard(job_id)
                if job is not None and job.completed_s is not None:
                    last_end = max(last_end, job.completed_s)
        if progress:
            progress(min(duration_s, (now - t0) * k), duration_s)
        if not pending and now >= horizon_wall:
            return max(horizon_wall, last_end)
        if now > deadline_wall:
            return now
        time.sleep(0.02)


def _raw_records(
    scenario: Scenario,
    plan: JobPlan,
    sent: list[dict[str, Any]],
    jobs: dict[str, Any],
    recorder: WorkerRecorder,
    end_wall: float,
    scen: Callable[[float], float],
    t0: float,
) -> tuple[RawRecords, dict[str, Any]]:
    cfg = scenario.config
    traces = sorted(recorder.traces.values(), key=lambda t: t.index)
    index_of = {t.worker_id: t.index for t in traces}
    cold_jobs = set().union(*(t.cold_jobs for t in traces)) if traces else set()
    end_s = scen(end_wall)
    ep_pos = {eid: i for i, eid in enumerate(plan.endpoint_ids)}
    n = len(sent)
    job_ep = np.empty(n, dtype=np.int32)
    arrival = np.empty(n)
    start: list[float] = []
    end: list[float] = []
    worker: list[int] = []
    cold: list[bool] = []
    status: list[int] = []
    scheduled = np.empty(n)
    service = np.empty(n)
    lag = np.empty(n)
    failed = 0
    held: list[int] = []
    rejected: list[int] = []
    ready_wall = {t.worker_id: t.ready_s for t in traces}
    spec_of = {e.spec.endpoint_id: e.spec for e in cfg.endpoints}
    for pos, rec in enumerate(sent):
        i = int(rec["i"])
        job = jobs.get(rec.get("job_id", ""))
        job_ep[pos] = ep_pos[plan.endpoint_ids[int(plan.endpoint_index[i])]]
        scheduled[pos] = float(plan.arrival_s[i])
        service[pos] = float(plan.service_s[i])
        lag[pos] = max(0.0, rec["sent_s"] - t0 - rec["at_s"])
        if rec.get("lb"):
            lb_spec = spec_of[plan.endpoint_ids[int(plan.endpoint_index[i])]].load_balancing
            assert lb_spec is not None
            outcome = _lb_outcome(rec, scen, lb_spec.request_timeout_s, ready_wall)
            arrival[pos] = outcome.arrival_s
            start.append(outcome.start_s)
            end.append(outcome.end_s)
            worker.append(index_of.get(rec.get("worker") or "", -1))
            cold.append(outcome.cold)
            status.append(_STATUS_CODE[outcome.status])
            failed += outcome.status == "CANCELLED"
            if outcome.held:
                held.append(pos)
            if outcome.status == "FAILED":
                rejected.append(pos)
            continue
        if job is None:
            arrival[pos] = scheduled[pos]
            start.append(float("nan"))
            end.append(end_s)
            worker.append(-1)
            cold.append(False)
            status.append(_STATUS_CODE["CANCELLED"])
            continue
        arrival[pos] = scen(job.created_s)
        start.append(scen(job.started_s) if job.started_s is not None else float("nan"))
        name = job.status.value
        if name == "FAILED":
            failed += 1
            name = "CANCELLED"
        if name in ("IN_QUEUE", "IN_PROGRESS"):
            name = "CANCELLED"  # still unfinished when the drain limit ran out, as in the simulator
        end.append(scen(job.completed_s) if job.completed_s is not None else end_s)
        worker.append(index_of.get(job.worker_id or "", -1))
        cold.append(job.id in cold_jobs)
        status.append(_STATUS_CODE[name])
    iv_worker: array[int] = array("l")
    iv_state: array[int] = array("b")
    iv_start: array[float] = array("d")
    iv_end: array[float] = array("d")
    iv_active: array[int] = array("b")
    code = {s: i for i, s in enumerate(STATE_CODES)}
    workers = []
    spec_by_id = {e.spec.endpoint_id: e.spec for e in cfg.endpoints}
    for t in traces:
        for state, a, b, active in t.intervals:
            iv_worker.append(t.index)
            iv_state.append(code[state])
            iv_start.append(max(0.0, scen(a)))  # min workers spawned in the server's boot, just before 0
            iv_end.append(scen(b))
            iv_active.append(int(active))
        spec = spec_by_id[t.endpoint_id]
        workers.append(
            {
                "worker_id": t.worker_id,
                "worker": t.index,
                "endpoint": t.endpoint_id,
                "host": "local",
                "gpu_type": spec.gpu_type,
                "gpus": spec.gpus_needed,
                "created_s": max(0.0, scen(t.created_s)),
                "ready_s": _scen_or_none(scen, t.ready_s if spec.is_load_balancer else t.first_take_s),
                "retired_s": scen(t.retired_s) if t.retired_s is not None and t.retired_s < end_wall else None,
                "flash_resumed": t.stages.flash_resume_s > 0,
                "image_pull_s": t.stages.image_pull_s,
                "container_start_s": t.stages.container_start_s,
                "runtime_init_s": t.stages.runtime_init_s,
                "model_load_s": t.stages.model_load_s,
                "flash_resume_s": t.stages.flash_resume_s,
                # Measured: what the start took beyond the modelled stages (spawn, interpreter, SDK).
                "platform_start_s": _platform_start_s(scen, t, t.ready_s if spec.is_load_balancer else t.first_take_s),
                # The simulator's failure columns, read from what the registry recorded.
                "crash_backoff_s": 0.0,
                "crashed": any(iv[0] is WorkerState.UNHEALTHY for iv in t.intervals),
                "crash_cause": "exit" if any(iv[0] is WorkerState.UNHEALTHY for iv in t.intervals) else "",
                "crash_streak": 0,
                "outdated": any(iv[0] is WorkerState.OUTDATED for iv in t.intervals),
            }
        )
    raw = RawRecords(
        endpoint_ids=list(plan.endpoint_ids),
        job_endpoint=job_ep,
        job_arrival_s=arrival,
        job_start_s=start,
        job_end_s=end,
        job_worker=worker,
        job_cold=cold,
        job_status=status,
        iv_worker=iv_worker,
        iv_state=iv_state,
        iv_start_s=iv_start,
        iv_end_s=iv_end,
        iv_active=iv_active,
        workers=workers,
        end_s=end_s,
        config=cfg,
        controller_calls=0,
        held=held,
        rejected=rejected,
    )
    return raw, {"scheduled_s": scheduled, "service_s": service, "lag_s": lag, "failed": failed}


def _scen_or_none(scen: Callable[[float], float], wall_s: float | None) -> float | None:
    return None if wall_s is None else scen(wall_s)


def _platform_start_s(scen: Callable[[float], float], t: WorkerTrace, ready_wall_s: float | None) -> float | None:
    """What the start took beyond the modelled stages (spawn, interpreter, SDK or HTTP server)."""
    if ready_wall_s is None:
        return None
    return scen(ready_wall_s) - scen(t.created_s) - (t.stages.total_s - t.stages.platform_start_s)


@dataclass(frozen=True)
class _LbOutcome:
    arrival_s: float
    start_s: float
    end_s: float
    status: str
    held: bool
    cold: bool


def _lb_outcome(
    rec: dict[str, Any], scen: Callable[[float], float], request_timeout_s: float, ready_wall: dict[str, float | None]
) -> _LbOutcome:
    """One load-balancing request's record (scenario seconds) from what the client saw of it."""
    sent, done = float(rec["sent_s"]), float(rec["done_s"])
    code = int(rec["status"])
    status = {200: "COMPLETED", 504: "TIMED_OUT", 503: "FAILED"}.get(code, "CANCELLED")
    began = rec.get("start_wall_s")
    if began is not None:
        start_s = scen(float(began))
    elif status == "TIMED_OUT":
        start_s = scen(done) - request_timeout_s  # the proxy gave up request_timeout_s after sending it on
    else:
        start_s = float("nan")
    reached_wall = float(began) if began is not None else None
    held = status == "FAILED" or (reached_wall is not None and reached_wall - sent > HELD_AFTER_WALL_S)
    ready = ready_wall.get(rec.get("worker") or "")
    cold = ready is not None and reached_wall is not None and sent < ready and reached_wall - ready <= COLD_WITHIN_WALL_S
    return _LbOutcome(scen(sent), start_s, scen(done), status, held, cold)
