"""The ledger of a run: a BillingModel applied to the recorded worker intervals and jobs, vectorised, after the run.

Bills are never computed in the engine's hot loop: the engine records state intervals,
flash-boot parked spans and job times, and this module prices them in a few numpy passes
(the same rule as gpuserve.core.billing.bill_worker, which the tests hold it to).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpuserve.core.billing import CPU_PRICE_KEY, BillingBasis, BillingModel, StateBilling
from gpuserve.core.types import WorkerState

__all__ = ["CPU_PRICE_KEY", "BillingModel", "WorkerLedger", "bill_jobs", "bill_workers"]

# A RUNNING worker is always processing, and so is an OUTDATED one: the simulator keeps a
# worker OUTDATED only while it finishes its jobs.
_PROCESSING_STATES = ("RUNNING", "OUTDATED")


@dataclass
class WorkerLedger:
    """Per row of intervals (then of parked spans): billed or not, billed seconds, GPU-seconds, USD."""

    billed: np.ndarray
    billed_s: np.ndarray
    gpu_s: np.ndarray
    cost_usd: np.ndarray


def bill_workers(
    model: BillingModel,
    worker: np.ndarray,
    states: Sequence[str],
    state_codes: np.ndarray,
    duration_s: np.ndarray,
    active: np.ndarray,
    parked_worker: np.ndarray,
    parked_s: np.ndarray,
    worker_gpu_type: Sequence[str | None],
    worker_gpus: np.ndarray,
) -> WorkerLedger:
    """Price interval rows (worker index, state code into `states`, duration, active) and parked spans.

    The rows come in time order per worker (as the engine records them), so a worker's last
    billed row is its last billed second, which carries the rounding's extra fraction:
    RUNNING 2.4 s then RUNNING 2.3 s bill 4.7 s, rounded to 5 s with 0.3 s on the second row."""
    n_iv = duration_s.size
    rows_worker = np.concatenate([worker.astype(np.int64), parked_worker.astype(np.int64)])
    duration = np.concatenate([duration_s, parked_s])
    if model.basis is BillingBasis.EXECUTION:
        zeros = np.zeros(duration.size)
        return WorkerLedger(np.zeros(duration.size, dtype=bool), zeros, zeros.copy(), zeros.copy())
    rule = [model.states[WorkerState(s)] for s in states]
    when_idle = np.array([r is StateBilling.YES for r in rule], dtype=bool)
    when_busy = np.array([r is not StateBilling.NO for r in rule], dtype=bool)
    processing = np.isin(np.arange(len(states)), [states.index(s) for s in _PROCESSING_STATES if s in states])
    codes = state_codes.astype(np.int64)
    iv_billed = np.where(processing[codes], when_busy[codes], when_idle[codes]) | active.astype(bool)
    billed = np.concatenate([iv_billed, np.full(parked_s.size, model.parked_billed, dtype=bool)])
    billed_s = np.where(billed, duration, 0.0)
    if model.rounding_s > 0 and billed.any():
        r = model.rounding_s
        sums = np.bincount(rows_worker, weights=billed_s, minlength=worker_gpus.size)
        # The same tolerance as core.billing.round_up_s: float noise is not a whole extra second.
        extra = np.where(sums > 0, np.ceil(sums / r - 1e-9) * r - sums, 0.0)
        # Each worker's last billed row carries it (one pass, not a sort of every row).
        rows = np.flatnonzero(billed)
        last = np.full(sums.size, -1, dtype=np.int64)
        np.maximum.at(last, rows_worker[rows], rows)
        owners = np.flatnonzero(last >= 0)
        billed_s[last[owners]] += extra[owners]
    prices = np.array([model.price_usd_per_s(g) for g in worker_gpu_type], dtype=float)
    units = np.maximum(worker_gpus.astype(float), 1.0)  # a CPU worker bills as one unit
    rows_units = units[rows_worker] if rows_worker.size else np.zeros(0)
    discount = np.ones(duration.size)
    discount[:n_iv] = np.where(active.astype(bool), 1.0 - model.active_discount, 1.0)
    gpu_s = billed_s * rows_units
    price = prices[rows_worker] if rows_worker.size else np.zeros(0)
    return WorkerLedger(billed, billed_s, gpu_s, gpu_s * price * discount)


def bill_jobs(
    model: BillingModel, execution_s: np.ndarray, started: np.ndarray, memory_gb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(GB-seconds, USD) per job: a started job pays the per-request fee, plus its rounded
    execution x memory under the execution basis (0.0004 s at 1 ms rounding bills 0.001 s)."""
    gb_s = np.zeros(execution_s.size)
    if model.basis is BillingBasis.EXECUTION:
        secs = np.nan_to_num(execution_s, nan=0.0)
        if model.rounding_s > 0:
            r = model.rounding_s
            secs = np.where(secs > 0, np.ceil(secs / r - 1e-9) * r, 0.0)
        gb_s = np.where(started, secs * memory_gb, 0.0)
    cost = gb_s * model.price_usd_per_gb_s + np.where(started, model.per_request_usd, 0.0)
    return gb_s, cost

