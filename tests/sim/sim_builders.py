"""Small builders for simulator tests: endpoints and configs with explicit numbers."""

from __future__ import annotations

from typing import Any

from gpuserve.core.billing import billing_preset
from gpuserve.core.types import (
    Dispatch,
    EndpointKind,
    EndpointSpec,
    LoadBalancingSpec,
    PolicySpec,
    ScalerType,
    ScalingSpec,
)
from gpuserve.sim.coldstart import ColdStartProfile
from gpuserve.sim.engine import SimConfig, SimEndpoint, Simulation
from gpuserve.sim.failures import FailureModel, HostFailure, Update
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.records import SimResult, build_result
from gpuserve.sim.service import Constant, ServiceTime
from gpuserve.sim.workload import Replay, Workload


def endpoint(
    eid: str = "ep",
    *,
    times: tuple[float, ...] | None = None,
    workload: Workload | None = None,
    service: ServiceTime | None = None,
    cold: ColdStartProfile | None = None,
    min_workers: int = 0,
    max_workers: int = 3,
    idle_timeout_s: float = 5.0,
    scaler_value: float = 1.0,
    flash_boot: bool = False,
    policy: str = "runpod_request_count",
    params: dict[str, Any] | None = None,
    gpu_type: str | None = "A100",
    concurrency: int = 1,
    execution_timeout_s: float = 600.0,
    memory_gb: float | None = None,
    load_balancing: LoadBalancingSpec | None = None,  # set: a load-balancing endpoint
    extra_workers: int = 0,  # Runpod's default is 2; these exact timelines opt out unless they test it
    dispatch: str = "shared_queue",
    failures: FailureModel | None = None,
    jobs: JobOptions | None = None,
) -> SimEndpoint:
    spec = EndpointSpec(
        eid,
        scaling=ScalingSpec(
            min_workers=min_workers,
            max_workers=max_workers,
            idle_timeout_s=idle_timeout_s,
            scaler=ScalerType.REQUEST_COUNT,
            scaler_value=scaler_value,
            flash_boot=flash_boot,
            extra_workers=extra_workers,
        ),
        policy=PolicySpec(policy, params or {}),
        gpu_type=gpu_type,
        concurrency_per_worker=concurrency,
        execution_timeout_s=execution_timeout_s,
        memory_gb=memory_gb,
        kind=EndpointKind.QUEUE if load_balancing is None else EndpointKind.LOAD_BALANCER,
        load_balancing=load_balancing,
        dispatch=Dispatch(dispatch),
    )
    return SimEndpoint(
        spec=spec,
        workload=workload if workload is not None else Replay(times or ()),
        service=service if service is not None else Constant(5.0),
        cold_start=cold if cold is not None else ColdStartProfile(),
        failures=failures or FailureModel(),
        jobs=jobs or JobOptions(),
    )


def run(
    *endpoints: SimEndpoint,
    duration_s: float = 100.0,
    hosts: tuple[HostSpec, ...] = (),
    prices: dict[str, float] | None = None,
    discount: float | None = None,  # None: the preset's active-worker discount
    billing: str = "runpod",
    billing_overrides: dict[str, Any] | None = None,
    seed: int = 0,
    consult: str = "auto",
    account_max_workers: int | None = None,
    max_retries: int = 3,
    host_failures: tuple[HostFailure, ...] = (),
    updates: tuple[Update, ...] = (),
) -> SimResult:
    overrides = dict(billing_overrides or {})
    if discount is not None:
        overrides["active_discount"] = discount
    config = SimConfig(
        endpoints=tuple(endpoints),
        hosts=hosts,
        billing=billing_preset(billing, prices_usd_per_gpu_s=prices or {"A100": 0.001}, **overrides),
        duration_s=duration_s,
        seed=seed,
        consult_on_arrival="always" if consult == "always" else "auto",
        account_max_workers=account_max_workers,
        max_retries=max_retries,
        host_failures=host_failures,
        updates=updates,
    )
    return build_result(Simulation(config).run())


def intervals_of(result: SimResult, worker_id: str) -> list[tuple[str, float, float]]:
    iv = result.intervals[result.intervals["worker_id"] == worker_id].sort_values("start_s")
    return [(str(r.state), float(r.start_s), float(r.end_s)) for r in iv.itertuples()]
