"""Pure domain of gpuserve: types, job state machine, clock, windows, guardrails, errors (stdlib only)."""

from gpuserve.core.clock import Clock, ManualClock
from gpuserve.core.errors import (
    BackendError,
    CapacityError,
    ConfigError,
    GpuserveError,
    IllegalTransitionError,
    NotFoundError,
)
from gpuserve.core.guardrails import apply_guardrails, next_expiry_s
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus, can_transition, transition
from gpuserve.core.types import (
    COUNTED_STATES,
    EndpointSnapshot,
    EndpointSpec,
    PolicySpec,
    QueueStats,
    ScaleAction,
    ScaleDecision,
    ScalerType,
    ScalingSpec,
    WorkerState,
    WorkerView,
    is_billed,
)

__all__ = [
    "COUNTED_STATES",
    "TERMINAL_STATUSES",
    "BackendError",
    "CapacityError",
    "Clock",
    "ConfigError",
    "EndpointSnapshot",
    "EndpointSpec",
    "GpuserveError",
    "IllegalTransitionError",
    "JobStatus",
    "ManualClock",
    "NotFoundError",
    "PolicySpec",
    "QueueStats",
    "ScaleAction",
    "ScaleDecision",
    "ScalerType",
    "ScalingSpec",
    "WorkerState",
    "WorkerView",
    "apply_guardrails",
    "can_transition",
    "is_billed",
    "next_expiry_s",
    "transition",
]
