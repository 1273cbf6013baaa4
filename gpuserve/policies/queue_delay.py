"""Runpod's QUEUE_DELAY scaler: add workers once a job has waited `queue_delay_s` (default 4 s) in the queue.

How many to add (Runpod does not document it): when the oldest queued job has waited at
least X seconds, the queue counts as backed up, and every queued job that no existing
slot will take (slots on idle, running and starting workers) gets a worker now:
desired = current + ceil(unserved / concurrency_per_worker). This is idempotent: asking
again a moment later (the next arrival) adds nothing more while those workers start, so
the scale-up rate is a property of the queue, not of how often the controller asks. A
"+1 per decision" rule would make it depend on the arrival rate instead.

Below X nothing is added: jobs are meant to wait up to X for a busy worker. The wish
shrinks toward in-system demand and the idle-timeout guardrail retires idle workers
(Runpod: idle timeout matters in this mode). While the oldest job is below X the policy
asks to be woken at the exact moment it crosses X. An endpoint with no workers at all
gets one at once from the guardrails (as with every policy), since waiting X seconds for
no worker is pure loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision, ScalerType
from gpuserve.policies.base import Policy, check_number, register

__all__ = ["QueueDelayParams", "QueueDelayState", "decide"]

RUNPOD_DEFAULT_QUEUE_DELAY_S = 4.0
# A wake computed as now + (X - age) can land a few ulps short of X once the queue
# recomputes the age; this tolerance makes that wake fire instead of re-arming forever.
_TIME_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class QueueDelayParams:
    # 0 means "take the endpoint's scaler_value when its scaler is queue_delay, else 4 s".
    queue_delay_s: float = 0.0

    def __post_init__(self) -> None:
        check_number("queue_delay_s", self.queue_delay_s)


@dataclass(frozen=True)
class QueueDelayState:
    queue_delay_s: float


def _initial(params: QueueDelayParams, endpoint: EndpointSpec) -> QueueDelayState:
    if params.queue_delay_s > 0:
        return QueueDelayState(params.queue_delay_s)
    scaling = endpoint.scaling
    if scaling.scaler is ScalerType.QUEUE_DELAY:
        return QueueDelayState(scaling.scaler_value)
    return QueueDelayState(RUNPOD_DEFAULT_QUEUE_DELAY_S)


def decide(
    snapshot: EndpointSnapshot, params: QueueDelayParams, state: QueueDelayState
) -> tuple[ScaleDecision, QueueDelayState]:
    delay_s = state.queue_delay_s
    queue = snapshot.queue
    current = snapshot.current_workers
    per_worker = snapshot.endpoint.concurrency_per_worker
    queued = queue.scaling_queue
    age_s = queue.oldest_queued_age_s
    # Shrink toward demand; guardrails keep idle workers for the endpoint's idle timeout.
    toward_demand = min(current, math.ceil(snapshot.demand / per_worker))

    if queued > 0 and age_s >= delay_s - _TIME_TOLERANCE_S:
        unserved = max(0, queued - snapshot.free_slots)
        added = math.ceil(unserved / per_worker)
        if added > 0:
            desired = current + added
            reason = f"oldest job waited {age_s:g} s >= {delay_s:g} s: +{added} for {unserved} unserved jobs"
            return ScaleDecision(desired, reason), state
        reason = f"oldest job waited {age_s:g} s >= {delay_s:g} s, but starting workers will take every queued job"
        return ScaleDecision(toward_demand, reason), state

    # At zero workers this asks for none; the guardrails start one for a waiting job.
    wake_at_s = snapshot.now_s + (delay_s - age_s) if queued > 0 else None
    reason = f"oldest job waited {age_s:g} s < {delay_s:g} s: {toward_demand} workers for demand {snapshot.demand}"
    return ScaleDecision(toward_demand, reason, wake_at_s=wake_at_s), state


POLICY = register(
    Policy(
        name="runpod_queue_delay",
        params_type=QueueDelayParams,
        initial_state=_initial,
        decide=decide,
        # Event-driven: arrivals consult it, and it asks for a wake when the oldest job crosses X.
        tick_interval_s=lambda _p: None,
        doc=__doc__ or "",
        # With nothing queued: min(current, ceil(demand / per_worker)) and no wake. It is not
        # stateless_no_wake: a queued job makes it ask for a wake at the moment it crosses X.
        sized_by_demand=True,
    )
)
