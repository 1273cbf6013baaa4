"""Autoscaling policies, one pure module each, registered by the name scenario files use."""

from gpuserve.policies import (
    fixed_keepalive,  # noqa: F401  (registers fixed_keepalive)
    hybrid_histogram,  # noqa: F401  (registers hybrid_histogram)
    kpa,  # noqa: F401  (registers knative_kpa)
    queue_delay,  # noqa: F401  (registers runpod_queue_delay)
    ray_serve,  # noqa: F401  (registers ray_serve)
    request_count,  # noqa: F401  (registers runpod_request_count)
)
from gpuserve.policies.base import (
    ENTRY_POINT_GROUP,
    Policy,
    PolicyInstance,
    available,
    build_params,
    get,
    is_reference,
    lookup,
    register,
    resolve_reference,
    source_of,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Policy",
    "PolicyInstance",
    "available",
    "build_params",
    "get",
    "is_reference",
    "lookup",
    "register",
    "resolve_reference",
    "source_of",
]
