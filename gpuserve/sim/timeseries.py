"""Counts over time from [start, end) spans (workers by state, queue length), as time-weighted means and maxima per bin."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gpuserve.sim.engine import STATE_CODES

__all__ = ["COUNTED", "binned_series", "nice_bin_s", "span_bins"]

# The worker states that hold a GPU slot of the endpoint (what "workers" counts in the plots).
COUNTED = tuple(s.value for s in STATE_CODES[:4])

# Bin widths a reader can name: seconds, minutes, hours, days.
_NICE_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def nice_bin_s(span_s: float, max_bins: int = 240) -> float:
    """The smallest readable bin width that cuts `span_s` into at most `max_bins` bins
    (2 hours: 30 s, 240 bins; 10 days: 1 h, 240 bins)."""
    for width in _NICE_S:
        if span_s / width <= max_bins:
            return float(width)
    return 86400.0 * math.ceil(span_s / (86400.0 * max_bins))


def span_bins(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the count c(t) = #{i: starts[i] <= t < ends[i]}, per bin [edges[k], edges[k+1]):
    the time-weighted mean of c and its maximum.

    The mean is exact: the integral of c up to x is sum(x - s_i for s_i < x) - sum(x - e_i for
    e_i < x), read from prefix sums of the sorted starts and ends. The maximum is the count at
    the bin's left edge or just after any change inside the bin; at equal times ends are applied
    before starts, so a worker that hands over to another at one instant is no spike."""
    starts = np.asarray(starts, dtype=float)
    ends = np.asarray(ends, dtype=float)
    keep = ends > starts
    s = np.sort(starts[keep])
    e = np.sort(ends[keep])
    cs = np.concatenate([[0.0], np.cumsum(s)])
    ce = np.concatenate([[0.0], np.cumsum(e)])
    ns = np.searchsorted(s, edges, side="left")
    ne = np.searchsorted(e, edges, side="left")
    integral = (ns * edges - cs[ns]) - (ne * edges - ce[ne])
    widths = np.diff(edges)
    mean = np.diff(integral) / widths
    # Counts at each left edge (starts at or before it, minus ends at or before it).
    at_edge = np.searchsorted(s, edges[:-1], side="right") - np.searchsorted(e, edges[:-1], side="right")
    peak = at_edge.astype(float)
    times = np.concatenate([e, s])
    deltas = np.concatenate([-np.ones(e.size), np.ones(s.size)])
    order = np.lexsort((deltas, times))  # by time, then ends (-1) before starts (+1)
    times, counts = times[order], np.cumsum(deltas[order])
    inside = (times > edges[0]) & (times < edges[-1])
    if inside.any():
        times, counts = times[inside], counts[inside]
        bins = np.searchsorted(edges, times, side="right") - 1
        np.maximum.at(peak, bins, counts)
    return mean, peak


def binned_series(
    jobs: pd.DataFrame, intervals: pd.DataFrame, end_s: float, bin_s: float | None = None, endpoint: str | None = None
) -> pd.DataFrame:
    """One row per time bin: `t_s` (bin start), `bin_s`, the mean and max of workers per counted
    state (`running`, `running_max`, ...), of all `workers`, and of `queue_length`.

    A job is queued from its arrival until it starts (or ends, if it never started: cancelled);
    one still queued at the end counts until `end_s`."""
    span = max(float(end_s), 1e-9)
    width = nice_bin_s(span) if bin_s is None else float(bin_s)
    edges = np.arange(0.0, span + width, width)
    if edges[-1] < span:
        edges = np.append(edges, span)
    if endpoint is not None:
        jobs = jobs[jobs["endpoint"] == endpoint]
        intervals = intervals[intervals["endpoint"] == endpoint]
    out: dict[str, Any] = {"t_s": edges[:-1], "bin_s": np.diff(edges)}
    state = intervals["state"].astype(str).to_numpy()
    iv_start = intervals["start_s"].to_numpy(dtype=float)
    iv_end = intervals["end_s"].to_numpy(dtype=float)
    for name in COUNTED:
        sel = state == name
        out[name.lower()], out[f"{name.lower()}_max"] = span_bins(iv_start[sel], iv_end[sel], edges)
    counted = np.isin(state, COUNTED)
    out["workers"], out["workers_max"] = span_bins(iv_start[counted], iv_end[counted], edges)
    arrival = jobs["arrival_s"].to_numpy(dtype=float)
    start = jobs["start_s"].to_numpy(dtype=float)
    left = np.where(np.isnan(start), jobs["end_s"].to_numpy(dtype=float), start)
    left = np.where(np.isnan(left), span, left)
    out["queue_length"], out["queue_length_max"] = span_bins(arrival, left, edges)
    return pd.DataFrame(out)
