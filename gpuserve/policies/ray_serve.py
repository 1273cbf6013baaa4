"""Ray Serve's request-based autoscaling: target ongoing requests per replica, with up and down delays.

desired = total_ongoing / target_ongoing_requests (a float); with running replicas `cur`,
d = ceil(cur + factor * (desired - cur)), and if ceil(desired) < cur but the factor left
d == cur, d -= 1 (so a small downscaling factor cannot stall). d is clamped to the
endpoint's [min_workers, max_workers]. A wish to go up must persist `upscale_delay_s`
(30 s), a wish to go down `downscale_delay_s` (600 s); a change of direction restarts the
wait. Ray counts 0.1-s control-loop ticks; here the delays compare timestamps, so the
result does not depend on how often the controller asks (arrivals consult it too).
Downscaling never goes below 1 except by the 1 -> 0 step, which waits
`downscale_to_zero_delay_s` when set. Cold-start fast path: at 0 running replicas any
request raises the target to max(ceil(upscaling_factor), current target) at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision
from gpuserve.policies.base import Policy, check_number, register

__all__ = ["RayServeParams", "RayServeState", "decide"]

_TIME_TOLERANCE_S = 1e-9  # absorbs float rounding when a wake lands exactly on a delay's end


@dataclass(frozen=True)
class RayServeParams:
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None  # None: the 1 -> 0 step waits downscale_delay_s
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0
    # Ray's control loop runs every 0.1 s; 1 s keeps simulations cheap, and since delays
    # compare timestamps (and a wake is asked for at each delay's end) nothing is lost.
    control_interval_s: float = 1.0

    def __post_init__(self) -> None:
        check_number("target_ongoing_requests", self.target_ongoing_requests, positive=True)
        check_number("upscale_delay_s", self.upscale_delay_s)
        check_number("downscale_delay_s", self.downscale_delay_s)
        if self.downscale_to_zero_delay_s is not None:
            check_number("downscale_to_zero_delay_s", self.downscale_to_zero_delay_s)
        check_number("upscaling_factor", self.upscaling_factor, positive=True)
        check_number("downscaling_factor", self.downscaling_factor, positive=True)
        check_number("control_interval_s", self.control_interval_s, positive=True)
        if self.control_interval_s > 3600:
            raise ConfigError("control_interval_s", self.control_interval_s, "must be at most 3600 s")


@dataclass(frozen=True)
class RayServeState:
    target_workers: int | None = None  # Ray's target_num_replicas; None until first seen
    direction: int = 0  # +1 wanting up, -1 wanting down, 0 content (Ray's decision_counter sign)
    since_s: float | None = None  # when the current run of same-direction wishes began


def _initial(_params: RayServeParams, _endpoint: EndpointSpec) -> RayServeState:
    return RayServeState()


def _desired(snapshot: EndpointSnapshot, params: RayServeParams, running: int) -> int:
    desired_f = snapshot.demand / params.target_ongoing_requests
    factor = params.upscaling_factor if desired_f >= running else params.downscaling_factor
    d = math.ceil(running + factor * (desired_f - running))
    if math.ceil(desired_f) < running and d == running:
        d -= 1
    scaling = snapshot.endpoint.scaling
    return max(scaling.min_workers, min(scaling.max_workers, d))


def decide(
    snapshot: EndpointSnapshot, params: RayServeParams, state: RayServeState
) -> tuple[ScaleDecision, RayServeState]:
    now_s = snapshot.now_s
    scaling = snapshot.endpoint.scaling
    target = state.target_workers
    if target is None:
        target = max(scaling.min_workers, min(scaling.max_workers, snapshot.current_workers))
    running = snapshot.ready_workers

    def answer(desired: int, reason: str, new: RayServeState, wake_at_s: float | None = None) -> tuple[ScaleDecision, RayServeState]:
        # keep_alive 0: the delays are Ray's hysteresis; once a replica is to go, it goes when idle.
        return ScaleDecision(desired, reason, keep_alive_s=0.0, wake_at_s=wake_at_s), new

    if running == 0:
        if snapshot.demand > 0:
            fast = min(scaling.max_workers, max(math.ceil(params.upscaling_factor), target))
            return answer(fast, f"cold-start fast path: {snapshot.demand} requests at 0 running", RayServeState(fast))
        return answer(target, "no running replicas and no requests", replace(state, target_workers=target))

    desired = _desired(snapshot, params, running)
    if desired > target:
        since_s = state.since_s if state.direction > 0 and state.since_s is not None else now_s
        due_s = since_s + params.upscale_delay_s
        if now_s >= due_s - _TIME_TOLERANCE_S:
            return answer(desired, f"up {target} -> {desired} after {now_s - since_s:g} s", RayServeState(desired))
        reason = f"wants up {target} -> {desired}, waiting until {due_s:g}"
        return answer(target, reason, RayServeState(target, +1, since_s), wake_at_s=due_s)
    if desired < target:
        since_s = state.since_s if state.direction < 0 and state.since_s is not None else now_s
        to_zero = target == 1
        if to_zero and params.downscale_to_zero_delay_s is not None:
            delay_s = params.downscale_to_zero_delay_s
        else:
            delay_s = params.downscale_delay_s
        if not to_zero:
            desired = max(1, desired)  # only the 1 -> 0 step may reach zero
        due_s = since_s + delay_s
        if now_s >= due_s - _TIME_TOLERANCE_S:
            return answer(desired, f"down {target} -> {desired} after {now_s - since_s:g} s", RayServeState(desired))
        reason = f"wants down {target} -> {desired}, waiting until {due_s:g}"
        return answer(target, reason, RayServeState(target, -1, since_s), wake_at_s=due_s)
    return answer(target, f"at target {target}", RayServeState(target))


POLICY = register(
    Policy(
        name="ray_serve",
        params_type=RayServeParams,
        initial_state=_initial,
        decide=decide,
        # Periodic: demand also falls when jobs finish, which is no arrival; the tick notices it.
        tick_interval_s=lambda p: p.control_interval_s,
        doc=__doc__ or "",
        # Ray's controller polls replica metrics on its control loop, not per request.
        observes_on_tick=True,
    )
)
