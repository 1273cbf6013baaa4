"""Turn a run's flat records into pandas DataFrames: jobs, worker state intervals, workers, summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gpuserve.core.jobs import JobStatus
from gpuserve.sim.billing import bill_jobs, bill_workers
from gpuserve.sim.engine import JOB_STATUS_CODES, STATE_CODES, RawRecords

__all__ = ["PARKED_COLUMNS", "SimResult", "build_result", "summarize", "time_series"]

# Flash-boot parked spans: a stopped worker's snapshot kept on its host (no GPU held).
PARKED_COLUMNS = ["worker_id", "endpoint", "host", "gpu_type", "start_s", "end_s", "duration_s", "billed", "billed_s", "gpu_s_billed", "cost_usd"]


def _no_parked() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in PARKED_COLUMNS})

_FINISHED = (JobStatus.COMPLETED.value, JobStatus.TIMED_OUT.value)


@dataclass
class SimResult:
    """A run's results as DataFrames. `summary` has one row per endpoint plus an `ALL` row.

    The ledger is in the records: `intervals` and `parked` carry billed seconds, GPU-seconds
    and USD per row, `jobs` the per-request fees and execution charges; `summary.cost_usd`
    is their sum."""

    jobs: pd.DataFrame
    intervals: pd.DataFrame
    workers: pd.DataFrame
    summary: pd.DataFrame
    end_s: float
    controller_calls: int = 0
    parked: pd.DataFrame = field(default_factory=_no_parked)

    def write(self, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv") -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("jobs", "intervals", "parked", "workers", "summary"):
            frame: pd.DataFrame = getattr(self, name)
            path = out_dir / f"{name}.{fmt}"
            if fmt == "parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
            paths.append(path)
        return paths


def build_result(raw: RawRecords) -> SimResult:
    cfg = raw.config
    ep_ids = np.array(raw.endpoint_ids, dtype=object)
    workers = pd.DataFrame(raw.workers)
    if workers.empty:
        workers = pd.DataFrame(columns=["worker_id", "worker", "endpoint", "host", "gpu_type", "gpus"])
    wid_by_idx = dict(zip(workers["worker"], workers["worker_id"], strict=True)) if len(workers) else {}

    start = np.asarray(raw.job_start_s, dtype=float)
    end = np.asarray(raw.job_end_s, dtype=float)
    arrival = raw.job_arrival_s
    worker_idx = np.asarray(raw.job_worker, dtype=np.int64)
    # Codes are positions in JobStatus; the column holds the plain names (COMPLETED, ...).
    status = np.array([s.value for s in JOB_STATUS_CODES], dtype=object)[np.asarray(raw.job_status, dtype=np.int64)]
    billing = cfg.billing
    memory = np.array([e.spec.memory_gb or 0.0 for e in cfg.endpoints], dtype=float)
    job_ep = np.asarray(raw.job_endpoint, dtype=np.int64)
    job_gb_s, job_cost = bill_jobs(billing, end - start, ~np.isnan(start), memory[job_ep] if len(arrival) else np.zeros(0))
    worker_ids = np.array([wid_by_idx.get(i, "") for i in range(max(wid_by_idx, default=-1) + 1)] + [""], dtype=object)
    jobs = pd.DataFrame(
        {
            "endpoint": ep_ids[raw.job_endpoint] if len(arrival) else np.array([], dtype=object),
            "job_id": np.arange(len(arrival)),
            "arrival_s": arrival,
            "start_s": start,
            "end_s": end,
            # A job starts no earlier than it arrives; clip float noise from sim-time arithmetic.
            "delay_s": np.clip(start - arrival, 0.0, None),
            "execution_s": end - start,
            "latency_s": end - arrival,
            "status": status,
            "cold": np.asarray(raw.job_cold, dtype=bool),
            "worker_id": worker_ids[worker_idx] if len(arrival) else np.array([], dtype=object),
            "gb_s_billed": job_gb_s,
            "cost_usd": job_cost,
        }
    )

    iv_worker = np.asarray(raw.iv_worker, dtype=np.int64)
    iv_state = np.asarray(raw.iv_state, dtype=np.int64)
    iv_start = np.asarray(raw.iv_start_s, dtype=float)
    iv_end = np.asarray(raw.iv_end_s, dtype=float)
    iv_active = np.asarray(raw.iv_active, dtype=bool)
    state_names = np.array([s.value for s in STATE_CODES], dtype=object)[iv_state]
    if len(workers):
        wk = workers.set_index("worker")
        w_ep = wk["endpoint"].reindex(iv_worker).to_numpy()
        w_gpu = wk["gpu_type"].reindex(iv_worker).to_numpy()
        w_host = wk["host"].reindex(iv_worker).to_numpy()
        w_id = wk["worker_id"].reindex(iv_worker).to_numpy()
    else:
        w_ep = w_gpu = w_host = w_id = np.array([], dtype=object)
    duration = iv_end - iv_start
    park_worker = np.asarray(raw.park_worker, dtype=np.int64)
    park_start = np.asarray(raw.park_start_s, dtype=float)
    park_end = np.asarray(raw.park_end_s, dtype=float)
    n_workers = int(workers["worker"].max()) + 1 if len(workers) else 0
    gpu_of: list[str | None] = [None] * n_workers
    gpus_of = np.zeros(n_workers, dtype=np.int64)
    for idx, gpu, gpus in zip(workers["worker"], workers["gpu_type"], workers["gpus"], strict=True):
        gpu_of[int(idx)] = gpu if isinstance(gpu, str) else None
        gpus_of[int(idx)] = int(gpus)
    ledger = bill_workers(
        billing,
        iv_worker,
        [s.value for s in STATE_CODES],
        iv_state,
        duration,
        iv_active,
        park_worker,
        park_end - park_start,
        gpu_of,
        gpus_of,
    )
    n_iv = duration.size
    billed, billed_s = ledger.billed[:n_iv], ledger.billed_s[:n_iv]
    intervals = pd.DataFrame(
        {
            "worker_id": w_id,
            "endpoint": w_ep,
            "host": w_host,
            "gpu_type": w_gpu,
            "state": state_names,
            "start_s": iv_start,
            "end_s": iv_end,
            "duration_s": duration,
            "active": iv_active,
            "billed": billed,
            "billed_s": billed_s,
            "gpu_s_billed": ledger.gpu_s[:n_iv],
            "cost_usd": ledger.cost_usd[:n_iv],
        }
    )
    parked = _no_parked()
    if park_worker.size:
        wk = workers.set_index("worker")
        parked = pd.DataFrame(
            {
                "worker_id": wk["worker_id"].reindex(park_worker).to_numpy(),
                "endpoint": wk["endpoint"].reindex(park_worker).to_numpy(),
                "host": wk["host"].reindex(park_worker).to_numpy(),
                "gpu_type": wk["gpu_type"].reindex(park_worker).to_numpy(),
                "start_s": park_start,
                "end_s": park_end,
                "duration_s": park_end - park_start,
                "billed": ledger.billed[n_iv:],
                "billed_s": ledger.billed_s[n_iv:],
                "gpu_s_billed": ledger.gpu_s[n_iv:],
                "cost_usd": ledger.cost_usd[n_iv:],
            }
        )
    summary = summarize(jobs, intervals, workers, raw.endpoint_ids, raw.end_s, parked)
    return SimResult(jobs, intervals, workers, summary, raw.end_s, raw.controller_calls, parked)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _summary_row(
    name: str, jobs: pd.DataFrame, intervals: pd.DataFrame, workers: pd.DataFrame, end_s: float, parked: pd.DataFrame
) -> dict[str, object]:
    done = jobs[jobs["status"].isin(_FINISHED)]
    latency = done["latency_s"].to_numpy()
    delay = done["delay_s"].to_numpy()
    row: dict[str, object] = {
        "endpoint": name,
        "jobs": len(jobs),
        "completed": int((jobs["status"] == JobStatus.COMPLETED.value).sum()),
        "timed_out": int((jobs["status"] == JobStatus.TIMED_OUT.value).sum()),
        "cancelled": int((jobs["status"] == JobStatus.CANCELLED.value).sum()),
        "latency_mean_s": float(latency.mean()) if latency.size else float("nan"),
        "latency_p50_s": _pct(latency, 50),
        "latency_p95_s": _pct(latency, 95),
        "latency_p99_s": _pct(latency, 99),
        "delay_mean_s": float(delay.mean()) if delay.size else float("nan"),
        "delay_p50_s": _pct(delay, 50),
        "delay_p95_s": _pct(delay, 95),
        "delay_p99_s": _pct(delay, 99),
        "cold_start_fraction": float(done["cold"].mean()) if len(done) else float("nan"),
        "workers_started": len(workers),
        "flash_resumes": int(workers["flash_resumed"].sum()) if "flash_resumed" in workers else 0,
    }
    span = end_s if end_s > 0 else 1.0
    for state in STATE_CODES[:4]:
        sel = intervals["state"] == state.value
        row[f"mean_{state.value.lower()}"] = float(intervals.loc[sel, "duration_s"].sum()) / span
    row["gpu_s_billed"] = float(intervals["gpu_s_billed"].sum()) + float(parked["gpu_s_billed"].sum())
    job_cost = jobs["cost_usd"] if "cost_usd" in jobs else pd.Series(dtype=float)
    row["gb_s_billed"] = float(jobs["gb_s_billed"].sum()) if "gb_s_billed" in jobs else 0.0
    row["cost_usd"] = float(intervals["cost_usd"].sum()) + float(parked["cost_usd"].sum()) + float(job_cost.sum())
    return row


def summarize(
    jobs: pd.DataFrame,
    intervals: pd.DataFrame,
    workers: pd.DataFrame,
    endpoint_ids: list[str],
    end_s: float,
    parked: pd.DataFrame | None = None,
) -> pd.DataFrame:
    parked = _no_parked() if parked is None else parked
    rows = []
    if len(endpoint_ids) > 1:
        for eid in endpoint_ids:
            w = workers[workers["endpoint"] == eid] if len(workers) else workers
            rows.append(
                _summary_row(
                    eid, jobs[jobs["endpoint"] == eid], intervals[intervals["endpoint"] == eid], w, end_s, parked[parked["endpoint"] == eid]
                )
            )
    rows.append(_summary_row("ALL" if len(endpoint_ids) > 1 else endpoint_ids[0], jobs, intervals, workers, end_s, parked))
    return pd.DataFrame(rows)


def time_series(result: SimResult, points: int = 1000) -> pd.DataFrame:
    """Queue length and workers per state on a regular grid over the run (for plots)."""
    grid = np.linspace(0.0, max(result.end_s, 1e-9), points)
    out: dict[str, np.ndarray] = {"t_s": grid}
    jobs = result.jobs
    arrivals = np.sort(jobs["arrival_s"].to_numpy())
    # A job leaves the queue when it starts, or at its end if it never started (cancelled).
    left = np.sort(np.where(np.isnan(jobs["start_s"].to_numpy()), jobs["end_s"].to_numpy(), jobs["start_s"].to_numpy()))
    out["queue_length"] = np.searchsorted(arrivals, grid, side="right") - np.searchsorted(left, grid, side="right")
    iv = result.intervals
    for state in STATE_CODES[:4]:
        sel = iv[iv["state"] == state.value]
        starts = np.sort(sel["start_s"].to_numpy())
        ends = np.sort(sel["end_s"].to_numpy())
        out[state.value.lower()] = np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, side="right")
    return pd.DataFrame(out)
