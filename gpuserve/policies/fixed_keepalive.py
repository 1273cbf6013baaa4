"""Scale-per-request with a fixed keep-alive window (the AWS Lambda / SimFaaS model).

Every queued request that finds no free slot gets a new worker at once; an idle worker is
kept `keep_alive_s` (600 s by default, Lambda's observed ~10 min) after its last job and
then retired. The decision carries `keep_alive_s`, so the idle-timeout guardrail uses it
instead of the endpoint's `idle_timeout_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision
from gpuserve.policies.base import Policy, check_number, register

__all__ = ["FixedKeepAliveParams", "FixedKeepAliveState", "decide", "scale_per_request"]


def scale_per_request(snapshot: EndpointSnapshot) -> int:
    """Workers wanted when no request may wait for a busy worker.

    Queued jobs beyond the free slots (slots on idle, running and starting workers) get new
    workers at once: 3 unserved jobs at concurrency 2 -> ceil(3/2) = 2 more workers. With
    nothing unserved the wish shrinks toward in-system demand; the keep-alive guardrail
    decides when an idle worker really goes, so asking low early costs nothing.
    """
    per_worker = snapshot.endpoint.concurrency_per_worker
    current = snapshot.current_workers
    unserved = max(0, snapshot.queue.scaling_queue - snapshot.free_slots)
    if unserved > 0:
        return current + math.ceil(unserved / per_worker)
    return min(current, math.ceil(snapshot.demand / per_worker))


@dataclass(frozen=True)
class FixedKeepAliveParams:
    keep_alive_s: float = 600.0

    def __post_init__(self) -> None:
        check_number("keep_alive_s", self.keep_alive_s)


@dataclass(frozen=True)
class FixedKeepAliveState:
    """Stateless: the keep-alive clock lives in each worker's `idle_since_s`."""


def _initial(_params: FixedKeepAliveParams, _endpoint: EndpointSpec) -> FixedKeepAliveState:
    return FixedKeepAliveState()


def decide(
    snapshot: EndpointSnapshot, params: FixedKeepAliveParams, state: FixedKeepAliveState
) -> tuple[ScaleDecision, FixedKeepAliveState]:
    desired = scale_per_request(snapshot)
    reason = f"scale-per-request: {desired} workers for demand {snapshot.demand}, keep-alive {params.keep_alive_s:g} s"
    return ScaleDecision(desired, reason, keep_alive_s=params.keep_alive_s), state


POLICY = register(
    Policy(
        name="fixed_keepalive",
        params_type=FixedKeepAliveParams,
        initial_state=_initial,
        decide=decide,
        # Event-driven: arrivals bring scale-up, and the guardrails' idle expiry wakes it for retirement.
        tick_interval_s=lambda _p: None,
        doc=__doc__ or "",
        # With nothing queued nothing is unserved: min(current, ceil(demand / per_worker)).
        sized_by_demand=True,
        stateless_no_wake=True,  # no state, no wake, keep-alive from params
    )
)
