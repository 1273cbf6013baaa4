"""Builders of real EndpointSnapshot objects for policy tests, at explicit times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuserve.core import (
    EndpointSnapshot,
    EndpointSpec,
    PolicySpec,
    QueueStats,
    ScalerType,
    ScalingSpec,
    WorkerState,
    WorkerView,
)


def endpoint(
    policy: str = "runpod_request_count",
    params: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 1,
    min_workers: int = 0,
    max_workers: int = 100,
    idle_timeout_s: float = 5.0,
    scaler: ScalerType = ScalerType.QUEUE_DELAY,
    scaler_value: float = 4.0,
    scale_to_zero_grace_s: float = 0.0,
    extra_workers: int = 0,  # Runpod's default is 2; snapshots state limits exactly unless they test it
) -> EndpointSpec:
    scaling = ScalingSpec(
        min_workers=min_workers,
        max_workers=max_workers,
        idle_timeout_s=idle_timeout_s,
        scaler=scaler,
        scaler_value=scaler_value,
        scale_to_zero_grace_s=scale_to_zero_grace_s,
        extra_workers=extra_workers,
    )
    return EndpointSpec("ep", scaling=scaling, policy=PolicySpec(policy, params or {}), concurrency_per_worker=concurrency)


def workers(
    *,
    idle: int = 0,
    running: int = 0,
    initializing: int = 0,
    throttled: int = 0,
    idle_since_s: float = 0.0,
    capacity: int = 1,
    in_flight: int | None = None,
) -> tuple[WorkerView, ...]:
    """Workers by state; RUNNING ones carry `in_flight` jobs (default: full)."""
    busy = capacity if in_flight is None else in_flight
    views: list[WorkerView] = []
    for i in range(idle):
        views.append(WorkerView(f"idle{i}", WorkerState.IDLE, 0.0, 0, capacity, idle_since_s))
    for i in range(running):
        views.append(WorkerView(f"run{i}", WorkerState.RUNNING, 0.0, busy, capacity))
    for i in range(initializing):
        views.append(WorkerView(f"init{i}", WorkerState.INITIALIZING, 0.0, 0, capacity))
    for i in range(throttled):
        views.append(WorkerView(f"thr{i}", WorkerState.THROTTLED, 0.0, 0, capacity))
    return tuple(views)


def snap(
    now_s: float,
    spec: EndpointSpec,
    views: tuple[WorkerView, ...] = (),
    **queue: Any,
) -> EndpointSnapshot:
    return EndpointSnapshot(now_s=now_s, endpoint=spec, workers=views, queue=QueueStats(**queue))
