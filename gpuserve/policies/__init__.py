"""Autoscaling policies, one pure module each, registered by the name scenario files use."""

from gpuserve.policies import request_count  # noqa: F401  (registers runpod_request_count)
from gpuserve.policies.base import Policy, PolicyInstance, available, build_params, get, register

__all__ = ["Policy", "PolicyInstance", "available", "build_params", "get", "register"]
