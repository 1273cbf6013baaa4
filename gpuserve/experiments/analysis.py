"""Reading a sweep table: its Pareto front (cost against latency) and the cheapest setting that meets a target, CIs included."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError
from gpuserve.experiments.replicate import CI_SUFFIX

__all__ = ["cheapest_meeting", "pareto_front", "upper_bound"]


def upper_bound(table: pd.DataFrame, metric: str) -> pd.Series:
    """The upper end of each row's 95% CI of `metric` (the mean itself without replications)."""
    ci = table[metric + CI_SUFFIX].fillna(0.0) if metric + CI_SUFFIX in table else 0.0
    return table[metric] + ci


def pareto_front(table: pd.DataFrame, x: str = "latency_p99_s", y: str = "cost_usd") -> pd.Series:
    """True for each row no other row beats on both: lower or equal `x` and `y`, one of them
    strictly. Rows with a NaN metric are never on the front."""
    xs = table[x].to_numpy(dtype=float)
    ys = table[y].to_numpy(dtype=float)
    on = ~(np.isnan(xs) | np.isnan(ys))
    for i in np.flatnonzero(on):
        others = on.copy()
        others[i] = False
        dominated = (xs[others] <= xs[i]) & (ys[others] <= ys[i]) & ((xs[others] < xs[i]) | (ys[others] < ys[i]))
        if dominated.any():
            on[i] = False
    return pd.Series(on, index=table.index, name="pareto")


def cheapest_meeting(
    table: pd.DataFrame, target: float, metric: str = "latency_p99_s", cost: str = "cost_usd"
) -> pd.DataFrame:
    """The settings whose `metric` meets `target` even at the upper end of its 95% CI, cheapest
    first; also column `meets_mean` (the mean alone meets it) and `<metric>_upper`.

    A setting whose mean meets the target but whose interval crosses it is not accepted: with
    5 replications at p99 9.0 ± 1.5 s, a 10-s target is not met with 95% confidence."""
    if metric not in table or cost not in table:
        raise ConfigError("table", sorted(table.columns), f"needs the columns {metric} and {cost}")
    out = table.assign(**{f"{metric}_upper": upper_bound(table, metric), "meets_mean": table[metric] <= target})
    met = out[out[f"{metric}_upper"] <= target]
    return met.sort_values([cost, f"{metric}_upper"], kind="stable")
