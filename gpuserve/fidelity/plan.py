"""What a replay runs: the simulator's own arrivals and service samples, and the scenario scaled down by a speedup.

The plan reuses the simulator's random streams (one arrival and one service stream per
endpoint, seeded from the scenario seed), so the live run sees exactly the arrivals and
service times the simulation saw. Service samples are drawn in the order the simulator
draws them (per endpoint, in dispatch order, which is arrival order under FIFO).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace

import numpy as np

from gpuserve import policies
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.sim.coldstart import ColdStartProfile, StageTimes
from gpuserve.sim.engine import SimConfig, Simulation

__all__ = ["ColdStartLedger", "JobPlan", "job_plan", "scale_spec", "scaled_policy_params"]


@dataclass(frozen=True)
class JobPlan:
    """Every job of a scenario run, in arrival order: endpoint index, arrival time, service time (seconds)."""

    endpoint_ids: tuple[str, ...]
    endpoint_index: np.ndarray
    arrival_s: np.ndarray
    service_s: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.size)


def job_plan(config: SimConfig) -> JobPlan:
    """Arrivals and service samples exactly as `Simulation(config)` draws them."""
    sim = Simulation(config)
    arrivals = np.asarray(sim._arrival_np, dtype=float)
    ep_index = np.asarray(sim._job_ep_np, dtype=np.int64)
    service = np.empty(arrivals.size)
    for i, ep in enumerate(sim._eps):
        for j in np.flatnonzero(ep_index == i):
            service[j] = ep.next_service_s()
    return JobPlan(tuple(e.spec.endpoint_id for e in config.endpoints), ep_index, arrivals, service)


def scaled_policy_params(spec: EndpointSpec, speedup: float) -> dict[str, float | int | str | bool]:
    """The policy's full parameter set with every time parameter (name ending in `_s`) divided by `speedup`.

    Defaults are made explicit first, so a window the scenario did not set (KPA's 60-s stable
    window) shrinks too. Fixed internal constants of a policy (KPA's 1-s buckets) do not.
    """
    instance = policies.get(spec.policy.name, spec.policy.params, spec)
    out: dict[str, float | int | str | bool] = {}
    for f in dataclasses.fields(instance.params):
        value = getattr(instance.params, f.name)
        if value is None:
            continue
        if f.name.endswith("_s") and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value) / speedup
        out[f.name] = value
    return out


def scale_spec(spec: EndpointSpec, speedup: float) -> EndpointSpec:
    """The endpoint as it runs live at `speedup`: idle timeout, queue-delay target, timeouts and policy windows / K."""
    if not speedup > 0 or not math.isfinite(speedup):
        raise ConfigError("speedup", speedup, "must be a positive number")
    s = spec.scaling
    scaling = ScalingSpec(
        min_workers=s.min_workers,
        max_workers=s.max_workers,
        idle_timeout_s=s.idle_timeout_s / speedup,
        scaler=s.scaler,
        # A queue-delay target is seconds; a request count is not a time.
        scaler_value=s.scaler_value / speedup if s.scaler is ScalerType.QUEUE_DELAY else s.scaler_value,
        flash_boot=s.flash_boot,
        scale_to_zero_grace_s=s.scale_to_zero_grace_s / speedup,
    )
    lb = spec.load_balancing
    return replace(
        spec,
        scaling=scaling,
        policy=PolicySpec(spec.policy.name, scaled_policy_params(spec, speedup)),
        execution_timeout_s=spec.execution_timeout_s / speedup,
        load_balancing=None
        if lb is None
        else replace(lb, hold_timeout_s=lb.hold_timeout_s / speedup, request_timeout_s=lb.request_timeout_s / speedup),
    )


class ColdStartLedger:
    """The simulator's cold-start bookkeeping for one endpoint on one host, in scenario seconds.

    The first start pulls the image (later starts wait for a pull under way, or skip it once
    cached); with flash boot on, a start within the retention window of a stopped ready
    worker resumes it instead. The same rules as gpuserve.sim.engine, so a live worker's
    init phase lasts what the simulator's worker would have taken.
    """

    def __init__(self, profile: ColdStartProfile, flash_boot: bool) -> None:
        self.profile = profile
        self.flash_boot = flash_boot
        self.image_landed_s: float | None = None
        self.retained_expiry_s: list[float] = []

    def start(self, now_s: float) -> StageTimes:
        p = self.profile
        if self.flash_boot:
            self.retained_expiry_s = [e for e in self.retained_expiry_s if e > now_s]
            if self.retained_expiry_s:
                self.retained_expiry_s.pop()  # the most recently stopped one, as the simulator does
                return p.stages(image_wait_s=None, flash=True)
        if self.image_landed_s is None:
            self.image_landed_s = now_s + p.typical_pull_s()
            wait: float | None = None
        else:
            wait = max(0.0, self.image_landed_s - now_s)
        return p.stages(image_wait_s=wait, flash=False)

    def retire(self, now_s: float, was_ready: bool) -> None:
        if was_ready and self.flash_boot and self.profile.flash_retention_s > 0:
            self.retained_expiry_s.append(now_s + self.profile.flash_retention_s)
