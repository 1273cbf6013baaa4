"""Turn a run's flat records into pandas DataFrames: jobs, worker state intervals, workers, summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gpuserve.core.jobs import JobStatus
from gpuserve.sim.engine import JOB_STATUS_CODES, STATE_CODES, RawRecords

__all__ = ["SimResult", "build_result", "summarize", "time_series"]

_FINISHED = (JobStatus.COMPLETED.value, JobStatus.TIMED_OUT.value)


@dataclass
class SimResult:
    """A run's results as DataFrames. `summary` has one row per endpoint plus an `ALL` row."""

    jobs: pd.DataFrame
    intervals: pd.DataFrame
    workers: pd.DataFrame
    summary: pd.DataFrame
    end_s: float
    controller_calls: int = 0

    def write(self, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv") -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("jobs", "intervals", "workers", "summary"):
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
        w_gpus = wk["gpus"].reindex(iv_worker).to_numpy()
        w_host = wk["host"].reindex(iv_worker).to_numpy()
        w_id = wk["worker_id"].reindex(iv_worker).to_numpy()
    else:
        w_ep = w_gpu = w_host = w_id = np.array([], dtype=object)
        w_gpus = np.array([], dtype=np.int64)
    duration = iv_end - iv_start
    billing = cfg.billing
    billed = billing.billed_mask(state_names, state_names == "RUNNING", iv_active)
    billed_s = np.where(billed, duration, 0.0)
    units = np.maximum(np.asarray(w_gpus, dtype=float), 1.0)  # a CPU worker bills as one unit
    price = np.array([billing.price_usd_per_s(g if isinstance(g, str) else None) for g in w_gpu], dtype=float)
    discount = np.where(iv_active, 1.0 - billing.active_discount, 1.0)
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
            "gpu_s_billed": billed_s * units,
            "cost_usd": billed_s * units * price * discount,
        }
    )
    summary = summarize(jobs, intervals, workers, raw.endpoint_ids, raw.end_s)
    return SimResult(jobs, intervals, workers, summary, raw.end_s, raw.controller_calls)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _summary_row(name: str, jobs: pd.DataFrame, intervals: pd.DataFrame, workers: pd.DataFrame, end_s: float) -> dict[str, object]:
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
    row["gpu_s_billed"] = float(intervals["gpu_s_billed"].sum())
    row["cost_usd"] = float(intervals["cost_usd"].sum())
    return row


def summarize(
    jobs: pd.DataFrame, intervals: pd.DataFrame, workers: pd.DataFrame, endpoint_ids: list[str], end_s: float
) -> pd.DataFrame:
    rows = []
    if len(endpoint_ids) > 1:
        for eid in endpoint_ids:
            w = workers[workers["endpoint"] == eid] if len(workers) else workers
            rows.append(_summary_row(eid, jobs[jobs["endpoint"] == eid], intervals[intervals["endpoint"] == eid], w, end_s))
    rows.append(_summary_row("ALL" if len(endpoint_ids) > 1 else endpoint_ids[0], jobs, intervals, workers, end_s))
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
