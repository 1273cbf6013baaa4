"""Runpod's REQUEST_COUNT scaler: workers = ceil((requestsInQueue + requestsInProgress) / scalerValue)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision, ScalerType
from gpuserve.policies.base import Policy, register

__all__ = ["RequestCountParams", "RequestCountState", "decide"]


@dataclass(frozen=True)
class RequestCountParams:
    # Runpod's default scalerValue for REQUEST_COUNT is 4; 0 means "take the endpoint's scaler_value".
    requests_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.requests_per_worker < 0:
            raise ConfigError("requests_per_worker", self.requests_per_worker, "cannot be negative")


@dataclass(frozen=True)
class RequestCountState:
    requests_per_worker: float


def _per_worker(params: RequestCountParams, endpoint: EndpointSpec) -> float:
    if params.requests_per_worker > 0:
        return params.requests_per_worker
    scaling = endpoint.scaling
    return scaling.scaler_value if scaling.scaler is ScalerType.REQUEST_COUNT else 4.0


def _initial(params: RequestCountParams, endpoint: EndpointSpec) -> RequestCountState:
    return RequestCountState(_per_worker(params, endpoint))


def _sized_by_demand(params: RequestCountParams, endpoint: EndpointSpec) -> bool:
    # ceil(demand / per_worker) can exceed the workers holding that demand only if one worker
    # is meant to hold fewer requests than it has slots: per_worker 1 at concurrency 4 -> 4
    # running requests on one worker want 4 workers.
    return _per_worker(params, endpoint) >= endpoint.concurrency_per_worker


def decide(
    snapshot: EndpointSnapshot, params: RequestCountParams, state: RequestCountState
) -> tuple[ScaleDecision, RequestCountState]:
    # 9 requests at 4 per worker -> ceil(2.25) = 3 workers. Zero demand asks for zero; the
    # idle-timeout guardrail decides when idle workers actually go.
    desired = math.ceil(snapshot.demand / state.requests_per_worker)
    return (
        ScaleDecision(desired, f"ceil({snapshot.demand}/{state.requests_per_worker:g}) = {desired}"),
        state,
    )


POLICY = register(
    Policy(
        name="runpod_request_count",
        params_type=RequestCountParams,
        initial_state=_initial,
        decide=decide,
        tick_interval_s=lambda _p: None,  # demand only changes on arrivals and completions
        doc=__doc__ or "",
        sized_by_demand=_sized_by_demand,
        stateless_no_wake=True,  # the state is the resolved per_worker; no wake, no keep-alive of its own
    )
)
