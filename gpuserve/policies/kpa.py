"""Knative's KPA: stable (60 s) and panic (6 s) window averages of concurrency, max up/down rates, scale-to-zero grace.

Every tick (2 s) and on every arrival, with T the target concurrency per worker:
    S, P = per-second concurrency averaged over the stable / panic window (partial windows average what they have)
    R = max(1, ready workers); up = ceil(max_scale_up_rate * R); down = floor(R / max_scale_down_rate)
    dS = clamp(ceil(S/T), down, up); dP = clamp(ceil(P/T), down, up)
    panic starts, or is extended (panic_time = now), when ceil(P/T) / R >= panic_threshold (2.0)
    panic ends when not over the threshold and panic_time + stable_window < now
    desired = dS, or in panic max_panic = max(max_panic, dS, dP) (never scales down in panic)
No window sample yet is an explicit hold. Concurrency is the endpoint's demand (queued +
running). T defaults to concurrency_per_worker x target_utilization (0.7), the GPU-worker
reading of Knative's 100 x 0.7 = 70. A wish for zero keeps the last worker for
scale_to_zero_grace_s (30 s) first, as Knative does with the activator in the path.

Per-second samples: the controller observes demand only when it consults the policy, so
concurrency is taken as constant between observations and each second's sample is its
time-weighted average, what Knative's 1-s scrape of a queue-proxy would report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision
from gpuserve.core.windows import Sample, prune, window_average
from gpuserve.policies.base import Policy, check_number, register

__all__ = ["KpaParams", "KpaState", "decide", "observe"]

# ceil(2.1 / 0.7) is 4 in floating point (3.0000000000000004); a window average that is a
# whole multiple of T must ask for exactly that many workers.
_CEIL_TOLERANCE = 1e-9


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_TOLERANCE)


@dataclass(frozen=True)
class KpaParams:
    target: float = 0.0  # concurrency per worker; 0 = concurrency_per_worker x target_utilization
    target_utilization: float = 0.7
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0  # of the stable window: 6 s
    panic_threshold_pct: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0
    tick_interval_s: float = 2.0

    def __post_init__(self) -> None:
        check_number("target", self.target)
        check_number("target_utilization", self.target_utilization, positive=True)
        if self.target_utilization > 1:
            raise ConfigError("target_utilization", self.target_utilization, "must be at most 1")
        check_number("stable_window_s", self.stable_window_s, positive=True)
        check_number("panic_window_pct", self.panic_window_pct, positive=True)
        if self.panic_window_pct > 100:
            raise ConfigError("panic_window_pct", self.panic_window_pct, "must be at most 100")
        check_number("panic_threshold_pct", self.panic_threshold_pct, positive=True)
        check_number("max_scale_up_rate", self.max_scale_up_rate, positive=True)
        if self.max_scale_up_rate <= 1:
            raise ConfigError("max_scale_up_rate", self.max_scale_up_rate, "must be above 1")
        check_number("max_scale_down_rate", self.max_scale_down_rate, positive=True)
        if self.max_scale_down_rate <= 1:
            raise ConfigError("max_scale_down_rate", self.max_scale_down_rate, "must be above 1")
        check_number("scale_to_zero_grace_s", self.scale_to_zero_grace_s)
        check_number("tick_interval_s", self.tick_interval_s, positive=True)

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100.0


@dataclass(frozen=True)
class KpaState:
    target: float  # resolved concurrency per worker
    samples: tuple[Sample, ...] = ()  # (end of second, time-weighted mean concurrency in it)
    obs_s: float | None = None  # last observation: time and value (held until the next one)
    obs_value: float = 0.0
    bucket_from_s: float = 0.0  # the open second's samples start here (later than its start on the first one)
    bucket_area: float = 0.0  # integral of concurrency over [bucket_from_s, obs_s)
    panic_time_s: float | None = None
    max_panic_workers: int = 0
    zero_since_s: float | None = None  # when the policy first wished for zero workers


def _initial(params: KpaParams, endpoint: EndpointSpec) -> KpaState:
    target = params.target if params.target > 0 else endpoint.concurrency_per_worker * params.target_utilization
    return KpaState(target=target)


def observe(state: KpaState, now_s: float, value: float, keep_s: float) -> KpaState:
    """Fold an observation into per-second samples, closing every whole second since the last one."""
    if state.obs_s is None:
        return replace(state, obs_s=now_s, obs_value=value, bucket_from_s=now_s, bucket_area=0.0)
    if now_s <= state.obs_s:
        return replace(state, obs_value=value)  # same instant: the newer value holds from here on
    samples = list(state.samples)
    t, start, area, held = state.obs_s, state.bucket_from_s, state.bucket_area, state.obs_value
    # Seconds older than the stable window are pruned anyway; skip a long silent stretch.
    horizon_s = math.floor(now_s) - math.ceil(keep_s) - 1
    while True:
        end = math.floor(t) + 1.0
        if end > now_s:
            area += held * (now_s - t)
            break
        area += held * (end - t)
        samples.append((end, area / (end - start)))
        t = start = max(end, float(horizon_s))
        area = 0.0
    return replace(
        state,
        samples=prune(samples, now_s, keep_s),
        obs_s=now_s,
        obs_value=value,
        bucket_from_s=start,
        bucket_area=area,
    )


def decide(snapshot: EndpointSnapshot, params: KpaParams, state: KpaState) -> tuple[ScaleDecision, KpaState]:
    now_s = snapshot.now_s
    state = observe(state, now_s, float(snapshot.demand), params.stable_window_s)
    stable = window_average(state.samples, now_s, params.stable_window_s)
    panic = window_average(state.samples, now_s, params.panic_window_s)
    if stable is None or panic is None:
        return ScaleDecision.hold("no concurrency data in the windows yet"), state

    target = state.target
    ready = max(1, snapshot.ready_workers)
    up = math.ceil(params.max_scale_up_rate * ready - _CEIL_TOLERANCE)
    down = math.floor(ready / params.max_scale_down_rate)
    stable_want, panic_want = _ceil(stable / target), _ceil(panic / target)
    d_stable = min(max(stable_want, down), up)
    d_panic = min(max(panic_want, down), up)

    panic_time_s, max_panic = state.panic_time_s, state.max_panic_workers
    over = panic_want / ready >= params.panic_threshold_pct / 100.0
    if over:
        panic_time_s = now_s  # enter, or extend
    elif panic_time_s is not None and panic_time_s + params.stable_window_s < now_s:
        panic_time_s, max_panic = None, 0  # the surge has reached the stable window

    desired = d_stable
    mode = "stable"
    if panic_time_s is not None:
        max_panic = max(max_panic, d_stable, d_panic)
        desired = max_panic
        mode = "panic"
    reason = f"{mode}: S={stable:.3g} P={panic:.3g} T={target:g} R={ready} -> {desired}"

    zero_since_s = state.zero_since_s
    wake_at_s = None
    if desired == 0 and snapshot.current_workers > 0 and params.scale_to_zero_grace_s > 0:
        zero_since_s = now_s if zero_since_s is None else zero_since_s
        grace_end_s = zero_since_s + params.scale_to_zero_grace_s
        if now_s < grace_end_s:
            desired, wake_at_s = 1, grace_end_s
            reason += f"; last worker held until {grace_end_s:g} (scale-to-zero grace)"
    elif desired > 0 or snapshot.current_workers == 0:
        zero_since_s = None

    state = replace(state, panic_time_s=panic_time_s, max_panic_workers=max_panic, zero_since_s=zero_since_s)
    # keep_alive 0: the windows are the hysteresis; a worker the KPA no longer wants goes once idle.
    return ScaleDecision(desired, reason, keep_alive_s=0.0, wake_at_s=wake_at_s), state


POLICY = register(
    Policy(
        name="knative_kpa",
        params_type=KpaParams,
        initial_state=_initial,
        decide=decide,
        tick_interval_s=lambda p: p.tick_interval_s,
        doc=__doc__ or "",
        # Knative's autoscaler scrapes its pods on its own schedule; the activator pokes it
        # only when no pod can take a request.
        observes_on_tick=True,
    )
)
