"""Frozen domain types: endpoint and scaling specs, worker states, snapshots, decisions (billing: core/billing.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from gpuserve.core.errors import ConfigError

__all__ = [
    "COUNTED_STATES",
    "Dispatch",
    "EndpointKind",
    "EndpointSnapshot",
    "EndpointSpec",
    "LoadBalancingSpec",
    "PolicySpec",
    "QueueStats",
    "ScaleAction",
    "ScaleDecision",
    "ScalerType",
    "ScalingSpec",
    "WorkerState",
    "WorkerView",
]


class ScalerType(StrEnum):
    """Runpod's two scaler types."""

    QUEUE_DELAY = "queue_delay"
    REQUEST_COUNT = "request_count"


class EndpointKind(StrEnum):
    """Runpod's two kinds of endpoint: jobs through a queue, or HTTP proxied straight to a worker."""

    QUEUE = "queue"
    LOAD_BALANCER = "load_balancer"


class Dispatch(StrEnum):
    """Who runs a job that made the endpoint start a worker.

    SHARED_QUEUE (Runpod): the job waits in the endpoint's queue and the first worker free
    takes it, so a busy worker that frees during the start may run it and the new worker
    comes up idle. BIND_TO_LAUNCH (AWS Lambda, SimFaaS): the job is reserved for the worker
    it launched and waits for that worker's cold start.
    """

    SHARED_QUEUE = "shared_queue"
    BIND_TO_LAUNCH = "bind_to_launch"


class WorkerState(StrEnum):
    INITIALIZING = "INITIALIZING"
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    THROTTLED = "THROTTLED"
    OUTDATED = "OUTDATED"
    UNHEALTHY = "UNHEALTHY"


# Workers that count toward the endpoint's size (and its max_workers). OUTDATED workers are
# on their way out and are replaced; UNHEALTHY ones are being restarted by the backend.
COUNTED_STATES: frozenset[WorkerState] = frozenset(
    {WorkerState.INITIALIZING, WorkerState.IDLE, WorkerState.RUNNING, WorkerState.THROTTLED}
)


def _check_non_negative(name: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ConfigError(name, value, "cannot be negative")


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value <= 0:
        raise ConfigError(name, value, "must be positive")


ParamValue = float | int | str | bool


@dataclass(frozen=True)
class PolicySpec:
    """A registered policy name plus its parameters (validated by the policy itself)."""

    name: str = "runpod_request_count"
    params: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("policy.name", self.name, "cannot be empty")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True)
class ScalingSpec:
    """Runpod's endpoint scaling settings, with Runpod's defaults."""

    min_workers: int = 0
    max_workers: int = 3
    idle_timeout_s: float = 5.0
    scaler: ScalerType = ScalerType.QUEUE_DELAY
    scaler_value: float = 4.0
    flash_boot: bool = True
    # Knative's scale-to-zero grace: the last worker lingers this long past its idle timeout.
    scale_to_zero_grace_s: float = 0.0
    # Runpod: "extra workers during traffic spikes when Docker images are cached on hosts
    # (default: 2)": workers above max_workers while demand exceeds it; 0 opts out.
    extra_workers: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.min_workers, int) or self.min_workers < 0:
            raise ConfigError("min_workers", self.min_workers, "must be a non-negative integer")
        if not isinstance(self.max_workers, int) or self.max_workers < 0:
            raise ConfigError("max_workers", self.max_workers, "must be a non-negative integer")
        if self.max_workers < self.min_workers:
            raise ConfigError(
                "max_workers", self.max_workers, f"cannot be below min_workers ({self.min_workers})"
            )
        _check_non_negative("idle_timeout_s", self.idle_timeout_s)
        _check_positive("scaler_value", self.scaler_value)
        _check_non_negative("scale_to_zero_grace_s", self.scale_to_zero_grace_s)
        if not isinstance(self.extra_workers, int) or isinstance(self.extra_workers, bool) or self.extra_workers < 0:
            raise ConfigError("extra_workers", self.extra_workers, "must be a non-negative integer")
        if not isinstance(self.scaler, ScalerType):
            try:
                object.__setattr__(self, "scaler", ScalerType(self.scaler))
            except ValueError:
                raise ConfigError(
                    "scaler", self.scaler, "must be 'queue_delay' or 'request_count'"
                ) from None


@dataclass(frozen=True)
class LoadBalancingSpec:
    """How a load-balancing endpoint routes and holds requests (Runpod's limits as defaults).

    `concurrency_target` is the in-flight count per worker the autoscaler aims for;
    `max_concurrency` is the hard cap a worker is never given more than. A request that
    finds no worker with room is held (not dropped) up to `hold_timeout_s` (Runpod: 2 min),
    then refused; one that runs past `request_timeout_s` (Runpod: 5.5 min) ends timed out.
    """

    concurrency_target: int = 1
    max_concurrency: int = 4
    hold_timeout_s: float = 120.0
    request_timeout_s: float = 330.0

    def __post_init__(self) -> None:
        for name in ("concurrency_target", "max_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")
        if self.max_concurrency < self.concurrency_target:
            raise ConfigError(
                "max_concurrency",
                self.max_concurrency,
                f"cannot be below concurrency_target ({self.concurrency_target})",
            )
        _check_non_negative("hold_timeout_s", self.hold_timeout_s)  # 0: refuse at once when no worker has room
        _check_positive("request_timeout_s", self.request_timeout_s)


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint: what runs, on which GPUs, how it scales, and under which policy."""

    endpoint_id: str
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    policy: PolicySpec = field(default_factory=PolicySpec)
    gpu_type: str | None = None  # None: a CPU-only endpoint
    gpus_per_worker: int = 1
    concurrency_per_worker: int = 1
    execution_timeout_s: float = 600.0
    memory_gb: float | None = None  # a worker's memory; billed per GB-second under an execution basis (AWS Lambda)
    kind: EndpointKind = EndpointKind.QUEUE
    # Set iff kind is LOAD_BALANCER (a load-balancing endpoint given none gets the defaults).
    load_balancing: LoadBalancingSpec | None = None
    dispatch: Dispatch = Dispatch.SHARED_QUEUE

    def __post_init__(self) -> None:
        if not self.endpoint_id or not isinstance(self.endpoint_id, str):
            raise ConfigError("endpoint_id", self.endpoint_id, "must be a non-empty string")
        if not isinstance(self.kind, EndpointKind):
            try:
                object.__setattr__(self, "kind", EndpointKind(self.kind))
            except ValueError:
                raise ConfigError("type", self.kind, "must be 'queue' or 'load_balancer'") from None
        if self.kind is EndpointKind.LOAD_BALANCER:
            if self.load_balancing is None:
                object.__setattr__(self, "load_balancing", LoadBalancingSpec())
            assert self.load_balancing is not None
            # Policies size an endpoint by concurrency_per_worker; on a load-balancing endpoint
            # that is its concurrency target (max_concurrency is the routing cap, not a target).
            target = self.load_balancing.concurrency_target
            if self.concurrency_per_worker not in (1, target):
                raise ConfigError(
                    "concurrency_per_worker",
                    self.concurrency_per_worker,
                    f"is set by concurrency_target ({target}) on a load-balancing endpoint: leave it unset",
                )
            object.__setattr__(self, "concurrency_per_worker", target)
        if self.kind is EndpointKind.QUEUE and self.load_balancing is not None:
            raise ConfigError("load_balancing", self.load_balancing, "applies only to type: load_balancer endpoints")
        if not isinstance(self.dispatch, Dispatch):
            try:
                object.__setattr__(self, "dispatch", Dispatch(self.dispatch))
            except ValueError:
                raise ConfigError("dispatch", self.dispatch, "must be 'shared_queue' or 'bind_to_launch'") from None
        if not isinstance(self.gpus_per_worker, int) or self.gpus_per_worker < 0:
            raise ConfigError("gpus_per_worker", self.gpus_per_worker, "must be a non-negative integer")
        if not isinstance(self.concurrency_per_worker, int) or self.concurrency_per_worker < 1:
            raise ConfigError(
                "concurrency_per_worker", self.concurrency_per_worker, "must be an integer >= 1"
            )
        _check_positive("execution_timeout_s", self.execution_timeout_s)
        if self.memory_gb is not None:
            _check_positive("memory_gb", self.memory_gb)

    @property
    def is_load_balancer(self) -> bool:
        return self.kind is EndpointKind.LOAD_BALANCER

    @property
    def gpus_needed(self) -> int:
        """GPUs a worker occupies: zero for CPU-only endpoints."""
        return self.gpus_per_worker if self.gpu_type else 0


@dataclass(frozen=True)
class WorkerView:
    """What the controller sees of one worker, read from a backend."""

    worker_id: str
    state: WorkerState
    created_s: float
    in_flight: int = 0
    capacity: int = 1  # jobs it may run at once (concurrency_per_worker)
    idle_since_s: float | None = None  # set while IDLE: when its last job ended (or it became ready)
    failure: str | None = None  # set while UNHEALTHY, when known: why ("exited with code 1", "image not found (REF)")

    def idle_for_s(self, now_s: float) -> float:
        if self.state is not WorkerState.IDLE or self.idle_since_s is None:
            return 0.0
        return max(0.0, now_s - self.idle_since_s)


@dataclass(frozen=True)
class QueueStats:
    """What the controller sees of an endpoint's queue at one instant."""

    in_queue: int = 0
    in_progress: int = 0
    oldest_queued_age_s: float = 0.0
    submitted_total: int = 0  # monotonic count of jobs ever submitted (arrival-rate policies)
    last_arrival_s: float | None = None
    in_queue_scaling: int | None = None  # in_queue minus lowPriority jobs; None = same as in_queue

    @property
    def scaling_queue(self) -> int:
        """Queued jobs allowed to drive scale-up (Runpod: lowPriority jobs never do)."""
        return self.in_queue if self.in_queue_scaling is None else self.in_queue_scaling


@dataclass(frozen=True)
class EndpointSnapshot:
    """Everything a policy may look at, frozen at `now_s`."""

    now_s: float
    endpoint: EndpointSpec
    workers: tuple[WorkerView, ...]
    queue: QueueStats
    image_cached: bool = False  # a host has the endpoint's image: extra workers may start on a spike

    @property
    def counted(self) -> tuple[WorkerView, ...]:
        return tuple(w for w in self.workers if w.state in COUNTED_STATES)

    @property
    def current_workers(self) -> int:
        return sum(1 for w in self.workers if w.state in COUNTED_STATES)

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self.workers if w.state in (WorkerState.IDLE, WorkerState.RUNNING))

    @property
    def free_slots(self) -> int:
        """Job slots on ready or starting workers not yet taken (a starting worker will take jobs)."""
        return sum(
            max(0, w.capacity - w.in_flight)
            for w in self.workers
            if w.state in (WorkerState.IDLE, WorkerState.RUNNING, WorkerState.INITIALIZING)
        )

    @property
    def demand(self) -> int:
        """Requests in the system that may drive scale-up: queued (not lowPriority) + running."""
        return self.queue.scaling_queue + self.queue.in_progress


@dataclass(frozen=True)
class ScaleDecision:
    """A policy's answer: the worker count it wants, or an explicit hold when it has no data.

    `keep_alive_s` lets a policy that manages keep-alive itself (fixed keep-alive,
    hybrid histogram) replace the endpoint's idle timeout for this decision.
    `wake_at_s` asks to be consulted again at that time even if nothing happens, so an
    event-driven controller need not tick every second to catch a pre-warm or expiry.
    """

    desired_workers: int | None
    reason: str
    keep_alive_s: float | None = None
    wake_at_s: float | None = None

    @classmethod
    def hold(cls, reason: str, wake_at_s: float | None = None) -> ScaleDecision:
        return cls(desired_workers=None, reason=reason, wake_at_s=wake_at_s)

    @property
    def is_hold(self) -> bool:
        return self.desired_workers is None

    def __post_init__(self) -> None:
        if self.desired_workers is not None and self.desired_workers < 0:
            raise ConfigError("desired_workers", self.desired_workers, "cannot be negative")


@dataclass(frozen=True)
class ScaleAction:
    """What the backend must do: start `start` new workers, stop the listed ones."""

    start: int = 0
    stop: tuple[str, ...] = ()
    target: int = 0
    reason: str = ""

    @property
    def is_noop(self) -> bool:
        return self.start == 0 and not self.stop
