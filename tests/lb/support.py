"""Helpers for the load-balancing tests: an endpoint running tests/lb/lb_app.py, and quick settings."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpuserve.core.types import EndpointKind, LoadBalancingSpec
from gpuserve.live.deployment import Deployment
from tests.support.live import FAST, endpoint_spec

APP = Path(__file__).resolve().parent / "lb_app.py"

# Health polled often and given up on quickly, so states change within a test's lifetime.
LB_FAST = replace(FAST, lb_health_interval_s=0.1, lb_health_timeout_s=1.0, lb_unhealthy_after=3)


def lb_deployment(
    endpoint_id: str,
    files: Path,
    *,
    load_s: float = 0.0,
    concurrency_target: int = 1,
    max_concurrency: int = 4,
    hold_timeout_s: float = 30.0,
    request_timeout_s: float = 60.0,
    **scaling: Any,
) -> Deployment:
    """A load-balancing endpoint whose workers run lb_app.py; its files (gates, sick flags) live in `files`."""
    spec = replace(
        endpoint_spec(endpoint_id, scaler_value=float(concurrency_target), **scaling),
        kind=EndpointKind.LOAD_BALANCER,
        load_balancing=LoadBalancingSpec(
            concurrency_target=concurrency_target,
            max_concurrency=max_concurrency,
            hold_timeout_s=hold_timeout_s,
            request_timeout_s=request_timeout_s,
        ),
    )
    files.mkdir(parents=True, exist_ok=True)
    return Deployment(
        spec=spec,
        command=(sys.executable, str(APP)),
        workdir=str(files),
        env={"LB_TEST_DIR": str(files), "LOAD_S": repr(load_s)},
    )
