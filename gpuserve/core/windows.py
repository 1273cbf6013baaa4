"""Time-window averages over (time_s, value) samples, the way Knative buckets per-second metrics."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["prune", "window_average"]

Sample = tuple[float, float]


def prune(samples: Sequence[Sample], now_s: float, keep_s: float) -> tuple[Sample, ...]:
    """Drop samples older than `keep_s` before `now_s` (samples are in time order)."""
    cutoff = now_s - keep_s
    start = 0
    while start < len(samples) and samples[start][0] <= cutoff:
        start += 1
    return tuple(samples[start:])


def window_average(samples: Sequence[Sample], now_s: float, window_s: float) -> float | None:
    """Mean of the sample values in (now_s - window_s, now_s]; None when there is no sample.

    Samples are taken once per second (1-s buckets). A window younger than `window_s` is
    averaged over what it has (Knative's partial window), so a 60-s stable window that has
    only seen 6 s of traffic averages those 6 s rather than diluting them with 54 zeros.
    """
    cutoff = now_s - window_s
    values = [v for t, v in samples if cutoff < t <= now_s]
    if not values:
        return None
    return sum(values) / len(values)
