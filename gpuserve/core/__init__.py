"""Pure domain of gpuserve: types, job state machine, clock, windows, guardrails, errors (stdlib only)."""

from gpuserve.core.billing import BILLING_PRESETS, BillingBasis, BillingModel, StateBilling, billing_preset
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
    Dispatch,
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
)

__all__ = [
    "BILLING_PRESETS",
    "COUNTED_STATES",
    "TERMINAL_STATUSES",
    "BackendError",
    "BillingBasis",
    "BillingModel",
    "CapacityError",
    "Clock",
    "ConfigError",
    "Dispatch",
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
    "StateBilling",
    "WorkerState",
    "WorkerView",
    "apply_guardrails",
    "billing_preset",
    "can_transition",
    "next_expiry_s",
    "transition",
]
