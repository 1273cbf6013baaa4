"""Turn a run's flat records into pandas DataFrames: jobs, worker state intervals, workers, summary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gpuserve.core.jobs import JobStatus
from gpuserve.core.types import WorkerState
from gpuserve.sim.billing import WorkerLedger, bill_jobs, bill_workers
from gpuserve.sim.engine import END_REASONS, JOB_STATUS_CODES, STATE_CODES, RawRecords
from gpuserve.sim.failures import FAILING_STREAK

__all__ = [
    "JOB_STATUS_DTYPE",
    "PARKED_COLUMNS",
    "WORKER_STATE_DTYPE",
    "SimResult",
    "build_result",
    "summarize",
    "summary_of",
    "time_series",
]

# Fixed category sets, so a table with no TIMED_OUT job still has the category and two runs
# concatenate without falling back to object columns.
JOB_STATUS_DTYPE = pd.CategoricalDtype([s.value for s in JobStatus])
WORKER_STATE_DTYPE = pd.CategoricalDtype([s.value for s in WorkerState])

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


def _from_codes(codes: np.ndarray, names: list[str]) -> pd.Categorical[str]:
    out: pd.Categorical[str] = pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), categories=pd.Index(names, dtype=str))
    return out


def _categorical(codes: np.ndarray, names: list[str] | np.ndarray) -> pd.Categorical[str]:
    """A category column from integer codes into `names` (-1: missing), categories in sorted order.

    Strings per row are what made a trace's records slow and large: pandas stores a str column
    as one copy of every row's text, built row by row (`bench/trace_scale.py`: 10 million jobs).
    Codes cost 1-4 bytes a row, and sorted categories sort and compare like the strings did."""
    labels = np.asarray(names, dtype=object)
    if labels.size == 0:
        return _from_codes(np.full(len(codes), -1, dtype=np.int8), [])
    uniques, inverse = np.unique(labels.astype(str), return_inverse=True)
    remap = np.append(inverse, -1)  # code -1 (missing) stays -1
    codes = np.asarray(codes, dtype=np.int64)
    return _from_codes(remap[np.where(codes < 0, len(labels), codes)], [str(u) for u in uniques])


def _fixed(codes: np.ndarray, order: tuple[str, ...], dtype: pd.CategoricalDtype) -> pd.Categorical[str]:
    """Codes into `order` (the engine's) as a column of the fixed dtype's categories."""
    names = [str(c) for c in dtype.categories]
    to_dtype = np.array([names.index(name) for name in order], dtype=np.int8)
    return _from_codes(to_dtype[np.asarray(codes, dtype=np.int64)], names)


def _per_row(workers: pd.DataFrame, column: str, worker_idx: np.ndarray, none: str | None = None) -> pd.Categorical[str]:
    """A worker column for each row naming a worker (by index, -1 for none), as categories (see
    `_categorical`); a worker the table lacks, or a missing value, is missing; a row with no
    worker is `none` (missing if None)."""
    values = workers[column].to_numpy(dtype=object) if len(workers) else np.zeros(0, dtype=object)
    present = np.array([isinstance(v, str) for v in values], dtype=bool)
    names = list(np.unique(values[present].astype(str))) if present.any() else []
    if none is not None and none not in names:
        names = sorted([*names, none])
    code_of = {name: i for i, name in enumerate(names)}
    row_code = np.array([code_of[v] if ok else -1 for v, ok in zip(values, present, strict=True)], dtype=np.int64)
    worker_idx = np.asarray(worker_idx, dtype=np.int64)
    idx = workers["worker"].to_numpy(dtype=np.int64) if len(workers) else np.zeros(0, dtype=np.int64)
    size = int(max(idx.max(initial=-1), worker_idx.max(initial=-1))) + 2
    pos = np.full(size, -1, dtype=np.int64)  # the last slot is index -1: no worker
    pos[idx] = row_code
    pos[-1] = code_of[none] if none is not None else -1
    return _from_codes(pos[worker_idx], [str(n) for n in names])


def _workers_frame(raw: RawRecords) -> pd.DataFrame:
    workers = pd.DataFrame(raw.workers)
    if workers.empty:
        workers = pd.DataFrame(columns=["worker_id", "worker", "endpoint", "host", "gpu_type", "gpus"])
    return workers


def _job_columns(raw: RawRecords) -> dict[str, Any]:
    """The jobs table's columns that need no worker names, as numpy arrays (status and end_reason as codes)."""
    cfg = raw.config
    start = np.asarray(raw.job_start_s, dtype=float)
    end = np.asarray(raw.job_end_s, dtype=float)
    arrival = np.asarray(raw.job_arrival_s, dtype=float)
    billing = cfg.billing
    memory = np.array([e.spec.memory_gb or 0.0 for e in cfg.endpoints], dtype=float)
    job_ep = np.asarray(raw.job_endpoint, dtype=np.int64)
    job_gb_s, job_cost = bill_jobs(billing, end - start, ~np.isnan(start), memory[job_ep] if len(arrival) else np.zeros(0))
    # Load-balancing endpoints: a held request waited from its arrival until a worker took it
    # (its delay), or for its whole latency if none did (rejected at the hold timeout).
    lb_endpoint = np.array([e.spec.is_load_balancer for e in cfg.endpoints], dtype=bool)
    held = np.zeros(len(arrival), dtype=bool)
    held[np.asarray(raw.held, dtype=np.int64)] = True
    rejected = np.zeros(len(arrival), dtype=bool)
    rejected[np.asarray(raw.rejected, dtype=np.int64)] = True
    held_s = np.where(held, np.where(np.isnan(start), end, start) - arrival, 0.0)
    return {
        "endpoint": job_ep,
        "job_id": np.arange(len(arrival)),
        "arrival_s": arrival,
        "start_s": start,
        "end_s": end,
        # A job starts no earlier than it arrives; clip float noise from sim-time arithmetic.
        "delay_s": np.clip(start - arrival, 0.0, None),
        "execution_s": end - start,
        "latency_s": end - arrival,
        "status": np.asarray(raw.job_status, dtype=np.int64),
        "cold": np.asarray(raw.job_cold, dtype=bool),
        "worker_id": None,  # filled by build_result (names per row)
        "load_balancer": lb_endpoint[job_ep] if len(arrival) else np.zeros(0, dtype=bool),
        "held": held,
        "held_s": np.clip(held_s, 0.0, None),
        "rejected": rejected,
        "gb_s_billed": job_gb_s,
        "cost_usd": job_cost,
        "retries": np.asarray(raw.job_retries, dtype=np.int64) if len(raw.job_retries) else np.zeros(len(arrival), dtype=np.int64),
        # Why it ended, beside its status: ttl_expired, client_cancel, retries_exhausted, drain_limit or normal.
        "end_reason": np.asarray(raw.job_reason, dtype=np.int64) if len(raw.job_reason) else np.zeros(len(arrival), dtype=np.int64),
        "low_priority": raw.job_low_priority if raw.job_low_priority is not None else np.zeros(len(arrival), dtype=bool),
        # A /runsync client whose job ended after its wait gave up (the job itself ran on).
        "client_gave_up": (end - arrival > raw.job_runsync_wait_s) & ~np.isnan(raw.job_runsync_wait_s)
        if raw.job_runsync_wait_s is not None
        else np.zeros(len(arrival), dtype=bool),
    }


def _ledger(raw: RawRecords, workers: pd.DataFrame) -> tuple[WorkerLedger, np.ndarray, np.ndarray, np.ndarray]:
    """The interval and parked rows priced: (ledger, interval durations, parked starts, parked ends)."""
    billing = raw.config.billing
    iv_worker = np.asarray(raw.iv_worker, dtype=np.int64)
    iv_state = np.asarray(raw.iv_state, dtype=np.int64)
    iv_active = np.asarray(raw.iv_active, dtype=bool)
    duration = np.asarray(raw.iv_end_s, dtype=float) - np.asarray(raw.iv_start_s, dtype=float)
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
    return ledger, duration, park_start, park_end


def build_result(raw: RawRecords) -> SimResult:
    ep_ids = np.array(raw.endpoint_ids, dtype=object)
    workers = _workers_frame(raw)
    cols = _job_columns(raw)
    # Codes are positions in JobStatus; the column holds the plain names (COMPLETED, ...).
    cols["status"] = _fixed(cols["status"], tuple(s.value for s in JOB_STATUS_CODES), JOB_STATUS_DTYPE)
    cols["endpoint"] = _categorical(cols["endpoint"], ep_ids)
    # A job no worker took has "" (an empty field in jobs.csv).
    cols["worker_id"] = _per_row(workers, "worker_id", np.asarray(raw.job_worker, dtype=np.int64), none="")
    cols["end_reason"] = _categorical(cols["end_reason"], list(END_REASONS))
    jobs = pd.DataFrame(cols)
    del cols

    ledger, duration, park_start, park_end = _ledger(raw, workers)
    iv_worker = np.asarray(raw.iv_worker, dtype=np.int64)
    state_names = _fixed(np.asarray(raw.iv_state, dtype=np.int64), tuple(s.value for s in STATE_CODES), WORKER_STATE_DTYPE)
    w_ep, w_gpu, w_host, w_id = (_per_row(workers, c, iv_worker) for c in ("endpoint", "gpu_type", "host", "worker_id"))
    park_worker = np.asarray(raw.park_worker, dtype=np.int64)
    n_iv = duration.size
    billed, billed_s = ledger.billed[:n_iv], ledger.billed_s[:n_iv]
    intervals = pd.DataFrame(
        {
            "worker_id": w_id,
            "endpoint": w_ep,
            "host": w_host,
            "gpu_type": w_gpu,
            "state": state_names,
            "start_s": np.asarray(raw.iv_start_s, dtype=float),
            "end_s": np.asarray(raw.iv_end_s, dtype=float),
            "duration_s": duration,
            "active": np.asarray(raw.iv_active, dtype=bool),
            "billed": billed,
            "billed_s": billed_s,
            "gpu_s_billed": ledger.gpu_s[:n_iv],
            "cost_usd": ledger.cost_usd[:n_iv],
        }
    )
    parked = _no_parked()
    if park_worker.size:
        parked = pd.DataFrame(
            {
                "worker_id": _per_row(workers, "worker_id", park_worker),
                "endpoint": _per_row(workers, "endpoint", park_worker),
                "host": _per_row(workers, "host", park_worker),
                "gpu_type": _per_row(workers, "gpu_type", park_worker),
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


_JOB_COLUMNS = ("status", "latency_s", "delay_s", "cold", "cost_usd", "gb_s_billed", "load_balancer", "held", "held_s", "rejected", "end_reason", "client_gave_up", "retries")
_IV_COLUMNS = ("state", "duration_s", "gpu_s_billed", "cost_usd")


_STATUS_NAMES = [s.value for s in JOB_STATUS_CODES]
_STATE_NAMES = [s.value for s in STATE_CODES]
_DONE_CODES = [_STATUS_NAMES.index(name) for name in _FINISHED]


def _arrays(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named columns as numpy arrays (absent ones left out); a summary works on these, not on frames.

    Job statuses and worker states become small-int codes (positions in JobStatus and
    STATE_CODES): ten million Python strings would cost more memory than the rest of the run."""
    out: dict[str, np.ndarray] = {}
    for n in names:
        if n not in frame:
            continue
        if n in ("status", "state", "end_reason"):
            cats = {"status": _STATUS_NAMES, "state": _STATE_NAMES, "end_reason": list(END_REASONS)}[n]
            out[n] = pd.Categorical(frame[n], categories=cats).codes
        else:
            out[n] = frame[n].to_numpy()
    return out


def _summary_row(
    name: str,
    jobs: dict[str, np.ndarray],
    intervals: dict[str, np.ndarray],
    workers: dict[str, np.ndarray],
    n_workers: int,
    end_s: float,
    parked: dict[str, np.ndarray],
) -> dict[str, object]:
    status = jobs["status"]
    done = np.isin(status, _DONE_CODES)
    latency = jobs["latency_s"][done].astype(float)
    delay = jobs["delay_s"][done].astype(float)
    row: dict[str, object] = {
        "endpoint": name,
        "jobs": len(status),
        "completed": int((status == _STATUS_NAMES.index(JobStatus.COMPLETED.value)).sum()),
        "timed_out": int((status == _STATUS_NAMES.index(JobStatus.TIMED_OUT.value)).sum()),
        "cancelled": int((status == _STATUS_NAMES.index(JobStatus.CANCELLED.value)).sum()),
        "failed": int((status == _STATUS_NAMES.index(JobStatus.FAILED.value)).sum()),
        "latency_mean_s": float(latency.mean()) if latency.size else float("nan"),
        "latency_p50_s": _pct(latency, 50),
        "latency_p95_s": _pct(latency, 95),
        "latency_p99_s": _pct(latency, 99),
        "delay_mean_s": float(delay.mean()) if delay.size else float("nan"),
        "delay_p50_s": _pct(delay, 50),
        "delay_p95_s": _pct(delay, 95),
        "delay_p99_s": _pct(delay, 99),
        # Jobs that waited for a worker's start (cold), over jobs that ran to their end.
        "cold_start_fraction": float(jobs["cold"][done].astype(bool).mean()) if done.any() else float("nan"),
        **_hold_metrics(jobs),
        "workers_started": n_workers,
        # Starts per job: under shared_queue a start may serve no job that waited for it.
        "workers_started_per_job": n_workers / len(status) if len(status) else float("nan"),
        "flash_resumes": int(workers["flash_resumed"].astype(bool).sum()) if "flash_resumed" in workers else 0,
    }
    for reason in ("ttl_expired", "client_cancel"):
        row[reason] = int((jobs["end_reason"] == END_REASONS.index(reason)).sum()) if "end_reason" in jobs else 0
    row["client_gave_up"] = int(jobs["client_gave_up"].astype(bool).sum()) if "client_gave_up" in jobs else 0
    row["retried_jobs"] = int((jobs["retries"].astype(np.int64) > 0).sum()) if "retries" in jobs else 0
    row["worker_crashes"] = int(workers["crashed"].astype(bool).sum()) if "crashed" in workers else 0
    streak = int(workers["crash_streak"].astype(np.int64).max()) if "crash_streak" in workers and len(workers["crash_streak"]) else 0
    row["crash_streak_max"] = streak
    # Runpod scales down endpoints that keep producing unhealthy workers; here they are flagged.
    row["failing"] = streak >= FAILING_STREAK
    span = end_s if end_s > 0 else 1.0
    state, duration = intervals["state"], intervals["duration_s"].astype(float)
    for code, st in enumerate(STATE_CODES):
        row[f"mean_{st.value.lower()}"] = float(duration[state == code].sum()) / span
    row["gpu_s_billed"] = float(intervals["gpu_s_billed"].astype(float).sum()) + float(parked["gpu_s_billed"].astype(float).sum())
    job_cost = float(jobs["cost_usd"].astype(float).sum()) if "cost_usd" in jobs else 0.0
    row["gb_s_billed"] = float(jobs["gb_s_billed"].astype(float).sum()) if "gb_s_billed" in jobs else 0.0
    row["cost_usd"] = float(intervals["cost_usd"].astype(float).sum()) + float(parked["cost_usd"].astype(float).sum()) + job_cost
    return row


def _endpoint_codes(frame: pd.DataFrame, endpoint_ids: list[str]) -> np.ndarray | None:
    if not len(frame) or "endpoint" not in frame:
        return None
    codes: np.ndarray = pd.Categorical(frame["endpoint"], categories=endpoint_ids).codes
    return codes


def _split(codes: np.ndarray | None, columns: dict[str, np.ndarray], endpoint_ids: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Each endpoint's rows of `columns` (`codes`: each row's position in endpoint_ids), in endpoint_ids
    order, from one stable sort (not one filter per endpoint), one endpoint at a time so only one
    copy of its rows exists at once."""
    if codes is None or not len(codes):
        for _ in endpoint_ids:
            yield {k: v[:0] for k, v in columns.items()}
        return
    # Small ints sort by radix (a stable order is unique, so the type changes nothing else).
    small = codes.astype(np.int16) if len(endpoint_ids) < 2**15 else codes
    order = np.argsort(small, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(endpoint_ids) + 1))
    for i in range(len(endpoint_ids)):
        rows = order[bounds[i] : bounds[i + 1]]
        yield {k: v[rows] for k, v in columns.items()}


def _hold_metrics(jobs: dict[str, np.ndarray]) -> dict[str, object]:
    """Requests to load-balancing endpoints, how many were held and rejected, and hold time over all of them (0 if not held)."""
    if "load_balancer" not in jobs:  # records from before load-balancing endpoints
        return {"lb_requests": 0, "held": 0, "rejected": 0, "hold_p50_s": float("nan"), "hold_p99_s": float("nan")}
    lb = jobs["load_balancer"].astype(bool)
    hold = jobs["held_s"][lb].astype(float)
    return {
        "lb_requests": int(lb.sum()),
        "held": int(jobs["held"][lb].astype(bool).sum()),
        "rejected": int(jobs["rejected"][lb].astype(bool).sum()),
        "hold_p50_s": _pct(hold, 50),
        "hold_p99_s": _pct(hold, 99),
    }


def summarize(
    jobs: pd.DataFrame,
    intervals: pd.DataFrame,
    workers: pd.DataFrame,
    endpoint_ids: list[str],
    end_s: float,
    parked: pd.DataFrame | None = None,
) -> pd.DataFrame:
    parked = _no_parked() if parked is None else parked
    tables = (jobs, intervals, workers, parked)
    columns = (
        _arrays(jobs, _JOB_COLUMNS),
        _arrays(intervals, _IV_COLUMNS),
        _arrays(workers, ("flash_resumed", "crashed", "crash_streak")),
        _arrays(parked, ("gpu_s_billed", "cost_usd")),
    )
    codes = tuple(_endpoint_codes(t, endpoint_ids) for t in tables) if len(endpoint_ids) > 1 else (None,) * 4
    return _summarize_columns(columns, codes, len(workers), endpoint_ids, end_s)


def summary_of(raw: RawRecords) -> pd.DataFrame:
    """`build_result(raw).summary`, without the jobs, intervals and parked tables: the same numbers
    from the raw columns (a trace's 10 million rows of names are what cost a run's memory)."""
    workers = _workers_frame(raw)
    cols = _job_columns(raw)
    job_cols = {k: cols[k] for k in _JOB_COLUMNS if k in cols}
    job_ep = cols["endpoint"]
    del cols
    ledger, duration, _park_start, _park_end = _ledger(raw, workers)
    n_iv = duration.size
    iv_cols = {
        "state": np.asarray(raw.iv_state, dtype=np.int64),
        "duration_s": duration,
        "gpu_s_billed": ledger.gpu_s[:n_iv],
        "cost_usd": ledger.cost_usd[:n_iv],
    }
    park_cols = {"gpu_s_billed": ledger.gpu_s[n_iv:], "cost_usd": ledger.cost_usd[n_iv:]}
    worker_cols = _arrays(workers, ("flash_resumed", "crashed", "crash_streak"))
    ids = raw.endpoint_ids
    codes: tuple[np.ndarray | None, ...] = (None,) * 4
    if len(ids) > 1:
        position = {eid: i for i, eid in enumerate(ids)}
        w_idx = workers["worker"].to_numpy(dtype=np.int64) if len(workers) else np.zeros(0, dtype=np.int64)
        w_code = np.array([position.get(e, -1) for e in workers["endpoint"]], dtype=np.int64) if len(workers) else w_idx
        by_idx = np.full(int(w_idx.max(initial=-1)) + 1, -1, dtype=np.int64)
        by_idx[w_idx] = w_code
        iv_worker = np.asarray(raw.iv_worker, dtype=np.int64)
        park_worker = np.asarray(raw.park_worker, dtype=np.int64)
        codes = (job_ep, by_idx[iv_worker] if iv_worker.size else iv_worker, w_code, by_idx[park_worker] if park_worker.size else park_worker)
    return _summarize_columns((job_cols, iv_cols, worker_cols, park_cols), codes, len(workers), ids, raw.end_s)


def _summarize_columns(
    columns: tuple[dict[str, np.ndarray], ...],
    codes: tuple[np.ndarray | None, ...],
    n_workers: int,
    endpoint_ids: list[str],
    end_s: float,
) -> pd.DataFrame:
    job_cols, iv_cols, worker_cols, park_cols = columns
    worker_cols["one"] = np.ones(n_workers, dtype=np.int8)
    rows = []
    if len(endpoint_ids) > 1:
        # A trace can have thousands of endpoints: split every table once, in numpy.
        parts = zip(
            *(_split(c, cols, endpoint_ids) for c, cols in zip(codes, columns, strict=True)),
            strict=True,
        )
        for eid, (j, iv, w, p) in zip(endpoint_ids, parts, strict=True):
            rows.append(_summary_row(eid, j, iv, w, len(w["one"]), end_s, p))
    name = "ALL" if len(endpoint_ids) > 1 else endpoint_ids[0]
    rows.append(_summary_row(name, job_cols, iv_cols, worker_cols, n_workers, end_s, park_cols))
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
