"""The one glue between policy and world: tick(now) -> snapshot -> policy -> guardrails -> backend.apply.

The same class runs in the simulator (sim clock, simulated workers, in-memory queue) and
live (wall clock, processes or containers, SQLite store); only the three seams differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gpuserve import policies
from gpuserve.core.clock import Clock
from gpuserve.core.errors import NotFoundError
from gpuserve.core.guardrails import apply_guardrails, clamp_to_account
from gpuserve.core.types import (
    COUNTED_STATES,
    EndpointSnapshot,
    EndpointSpec,
    QueueStats,
    ScaleAction,
    ScaleDecision,
    WorkerView,
)
from gpuserve.policies.base import PolicyInstance
from gpuserve.schedule import ConsultPlan, consult_plan, next_wake_s

__all__ = ["Backend", "ControlStep", "Controller", "JobQueue"]


class Backend(Protocol):
    """Where workers live: simulated, local processes, or containers.

    A backend may also offer `image_cached(endpoint_id) -> bool` (a host holds the endpoint's
    image, so extra workers may start on a spike); without it no image counts as cached.
    """

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]: ...

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None: ...


class JobQueue(Protocol):
    """Where jobs wait: in memory (sim) or the durable store (live)."""

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats: ...


@dataclass(frozen=True)
class ControlStep:
    """One pass of the loop for one endpoint, kept for logs, tests and replay comparisons."""

    snapshot: EndpointSnapshot
    decision: ScaleDecision
    action: ScaleAction
    next_wake_s: float | None
    account_blocked: int = 0  # starts the account-wide worker limit refused in this pass


@dataclass
class _Endpoint:
    spec: EndpointSpec
    policy: PolicyInstance
    plan: ConsultPlan
    bound_spec: EndpointSpec  # the spec the policy's state was built from
    next_wake_s: float | None = None
    last_step: ControlStep | None = None


def _plan(policy: PolicyInstance, spec: EndpointSpec, bound_spec: EndpointSpec) -> ConsultPlan:
    # A swapped spec keeps the policy's state, which was built from the old one: request_count
    # resolved per_worker 2 from scaler_value 2, and a new spec with scaler_value 4 and 4 slots
    # per worker would pass the check (4 >= 4) that the kept state fails (2 < 4). A promise
    # that depends on the spec is then dropped; a fixed one holds for every spec.
    on = spec if spec == bound_spec else None
    return consult_plan(
        spec,
        tick_interval_s=policy.tick_interval_s,
        sized_by_demand=policy.sized_by_demand(on),
        stateless_no_wake=policy.stateless_no_wake(on),
        observes_on_tick=policy.observes_on_tick(on),
    )


class Controller:
    """Scales every endpoint it is given, by calling its policy and applying guardrails."""

    def __init__(
        self,
        endpoints: Iterable[EndpointSpec],
        backend: Backend,
        queue: JobQueue,
        clock: Clock,
        max_step: int | None = None,
        account_max_workers: int | None = None,
        account_usage: Callable[[], int] | None = None,
    ) -> None:
        """`account_max_workers` caps workers across every endpoint (None: no cap); `account_usage`
        counts them faster than asking the backend for each endpoint's workers (the simulator)."""
        self.backend = backend
        self.queue = queue
        self.clock = clock
        self.max_step = max_step
        if account_max_workers is not None and account_max_workers < 0:
            raise ValueError(f"account_max_workers cannot be negative, was {account_max_workers}")
        self.account_max_workers = account_max_workers
        self._account_usage = account_usage
        self._image_cached: Callable[[str], bool] | None = getattr(backend, "image_cached", None)
        self._endpoints: dict[str, _Endpoint] = {}
        for spec in endpoints:
            self.add_endpoint(spec)

    # -- endpoint management -------------------------------------------------------------

    def add_endpoint(self, spec: EndpointSpec) -> None:
        """Register (or replace, keeping no policy state) an endpoint."""
        policy = policies.get(spec.policy.name, spec.policy.params, spec)
        plan = _plan(policy, spec, spec)
        self._endpoints[spec.endpoint_id] = _Endpoint(spec=spec, policy=policy, plan=plan, bound_spec=spec)

    def update_endpoint(self, spec: EndpointSpec) -> None:
        """Swap an endpoint's spec; the policy keeps its state if the policy is unchanged."""
        old = self._entry(spec.endpoint_id)
        if old.spec.policy == spec.policy:
            old.spec = spec
            old.plan = _plan(old.policy, spec, old.bound_spec)
        else:
            self.add_endpoint(spec)

    def remove_endpoint(self, endpoint_id: str) -> None:
        self._endpoints.pop(endpoint_id, None)

    @property
    def endpoint_ids(self) -> list[str]:
        return list(self._endpoints)

    def spec(self, endpoint_id: str) -> EndpointSpec:
        return self._entry(endpoint_id).spec

    def tick_interval_s(self, endpoint_id: str) -> float | None:
        return self._entry(endpoint_id).policy.tick_interval_s

    def consult_plan(self, endpoint_id: str) -> ConsultPlan:
        """When this endpoint's policy must be consulted (gpuserve.schedule's functions read it)."""
        return self._entry(endpoint_id).plan

    def next_wake_s(self, endpoint_id: str) -> float | None:
        """When an event-driven endpoint wants to be consulted again with no new events."""
        return self._entry(endpoint_id).next_wake_s

    def last_step(self, endpoint_id: str) -> ControlStep | None:
        return self._entry(endpoint_id).last_step

    # -- the loop --------------------------------------------------------------------------

    def snapshot(self, endpoint_id: str, now_s: float | None = None) -> EndpointSnapshot:
        entry = self._entry(endpoint_id)
        now = self.clock.now_s() if now_s is None else now_s
        cached = self._image_cached
        return EndpointSnapshot(
            now_s=now,
            endpoint=entry.spec,
            workers=tuple(self.backend.workers(endpoint_id)),
            queue=self.queue.stats(endpoint_id, now),
            image_cached=bool(cached(endpoint_id)) if cached is not None and entry.spec.scaling.extra_workers else False,
        )

    def account_workers(self) -> int:
        """Workers counted against the account limit: every endpoint's, in counted states."""
        if self._account_usage is not None:
            return self._account_usage()
        return sum(
            1 for eid in self._endpoints for w in self.backend.workers(eid) if w.state in COUNTED_STATES
        )

    def _limit(self, action: ScaleAction) -> tuple[ScaleAction, int]:
        if self.account_max_workers is None or action.start <= 0:
            return action, 0
        limited = clamp_to_account(action, self.account_workers(), self.account_max_workers)
        return limited, action.start - limited.start

    def tick(self, now_s: float | None = None) -> list[ControlStep]:
        """Run one pass for every endpoint."""
        now = self.clock.now_s() if now_s is None else now_s
        return [self.tick_endpoint(eid, now) for eid in list(self._endpoints)]

    def tick_endpoint(self, endpoint_id: str, now_s: float | None = None) -> ControlStep:
        entry = self._entry(endpoint_id)
        snap = self.snapshot(endpoint_id, now_s)
        decision = entry.policy.decide(snap)
        action, blocked = self._limit(apply_guardrails(snap, decision, self.max_step))
        if not action.is_noop:
            self.backend.apply(entry.spec, action, snap.now_s)
        wake = next_wake_s(snap, decision, action)
        step = ControlStep(snapshot=snap, decision=decision, action=action, next_wake_s=wake, account_blocked=blocked)
        entry.next_wake_s = wake
        entry.last_step = step
        return step

    def preview(self, endpoint_id: str, now_s: float | None = None) -> tuple[ControlStep, bool]:
        """The pass `tick_endpoint` would run now, applied to nothing and remembered nowhere.

        Returns that step and whether the policy's state would have changed. A loop that
        skipped a pass on the schedule's word can check the word with it: a skip changed
        nothing exactly when the action is a no-op and the state stays as it was.
        """
        entry = self._entry(endpoint_id)
        snap = self.snapshot(endpoint_id, now_s)
        bound = entry.policy
        decision, state = bound.policy.decide(snap, bound.params, bound.state)
        action, _blocked = self._limit(apply_guardrails(snap, decision, self.max_step))
        step = ControlStep(snapshot=snap, decision=decision, action=action, next_wake_s=next_wake_s(snap, decision, action))
        return step, state != bound.state

    def on_job_arrival(self, endpoint_id: str, now_s: float | None = None, low_priority: bool = False) -> ControlStep | None:
        """A job just arrived: consult the policy at once (Knative's 'poke'), unless it is lowPriority.

        Kept for callers that consult on every arrival; `gpuserve.schedule.must_consult_on_arrival`
        with `consult_plan(endpoint_id)` says when a pass can be skipped, and then
        `tick_endpoint` runs it. A job at zero workers gets one from the guardrails.
        """
        if low_priority:
            return None
        return self.tick_endpoint(endpoint_id, now_s)

    def _entry(self, endpoint_id: str) -> _Endpoint:
        try:
            return self._endpoints[endpoint_id]
        except KeyError:
            raise NotFoundError(f"endpoint {endpoint_id!r} is not managed by this controller") from None
