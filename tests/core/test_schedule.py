"""The consult schedule at explicit numbers: arrival skips, idle-expiry wakes, next wakes, plans from policies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import (
    EndpointSnapshot,
    EndpointSpec,
    ManualClock,
    QueueStats,
    ScaleAction,
    ScaleDecision,
    ScalerType,
    WorkerState,
    WorkerView,
    apply_guardrails,
)
from gpuserve.policies import Policy, register
from gpuserve.schedule import (
    ConsultPlan,
    consult_plan,
    idle_expiry_wake_s,
    idle_wake_without_pass,
    must_consult_on_arrival,
    next_wake_s,
)
from tests.policies.policy_snapshots import endpoint


def _spec(policy: str = "runpod_request_count", params: dict[str, Any] | None = None, **spec: Any) -> EndpointSpec:
    return endpoint(policy, params, **{"max_workers": 3, **spec})


def _plan(policy: str, params: dict[str, Any] | None = None, **spec: Any) -> ConsultPlan:
    ctl = Controller([_spec(policy, params, **spec)], FakeBackend(), FakeQueue(), ManualClock())
    return ctl.consult_plan("ep")


# -- must_consult_on_arrival ---------------------------------------------------------------

FAST = consult_plan(_spec(max_workers=3), tick_interval_s=None, sized_by_demand=True, stateless_no_wake=True)
PLAIN = consult_plan(_spec(max_workers=3), tick_interval_s=None)


@pytest.mark.parametrize(
    ("plan", "free_slot", "workers", "throttled", "consult"),
    [
        (FAST, True, 2, 0, False),  # a ready worker took it: nothing for a demand-sized policy to do
        (FAST, True, 2, 1, True),  # ... unless a THROTTLED worker waits to be stopped
        (FAST, False, 2, 0, True),  # it waits below max_workers: it may need a worker
        (FAST, False, 0, 0, True),  # at zero workers the guardrails start one
        (FAST, False, 3, 0, False),  # it waits at max_workers, none idle: no start, no stop
        (FAST, False, 3, 1, True),
        (PLAIN, True, 2, 0, True),  # undeclared: every arrival is consulted
        (PLAIN, False, 3, 0, True),
    ],
)
def test_must_consult_on_arrival(plan: ConsultPlan, free_slot: bool, workers: int, throttled: int, consult: bool) -> None:
    assert must_consult_on_arrival(plan, free_slot=free_slot, workers=workers, throttled=throttled) is consult


def test_arrivals_are_skipped_only_past_the_extra_workers_a_spike_may_add() -> None:
    spiky = consult_plan(_spec(max_workers=3, extra_workers=2), tick_interval_s=None, sized_by_demand=True, stateless_no_wake=True)
    assert spiky.max_workers == 5
    assert must_consult_on_arrival(spiky, free_slot=False, workers=3, throttled=0)  # 2 extra may still start
    assert not must_consult_on_arrival(spiky, free_slot=False, workers=5, throttled=0)


def test_low_priority_arrivals_are_never_consulted() -> None:
    assert not must_consult_on_arrival(PLAIN, free_slot=False, workers=0, throttled=1, low_priority=True)


def test_consulting_every_arrival_turns_both_skips_off() -> None:
    plan = FAST.consulting_every_arrival()
    assert must_consult_on_arrival(plan, free_slot=True, workers=2, throttled=0)
    assert must_consult_on_arrival(plan, free_slot=False, workers=3, throttled=0)
    assert plan.idle_expiry_wakes == FAST.idle_expiry_wakes


# -- plans from policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "params", "concurrency", "served", "at_max", "idle_wakes"),
    [
        ("runpod_request_count", {}, 1, True, True, True),  # per_worker 4 (Runpod's default) >= 1 slot
        ("runpod_request_count", {"requests_per_worker": 2}, 2, True, True, True),
        ("runpod_request_count", {"requests_per_worker": 1}, 4, False, True, True),  # 4 jobs on one worker want 4
        ("fixed_keepalive", {}, 3, True, True, True),
        ("runpod_queue_delay", {}, 1, True, False, True),  # asks for a wake while a job queues
        ("knative_kpa", {}, 1, True, True, False),  # sees the endpoint at its 2-s tick
        ("ray_serve", {}, 1, True, True, False),
        ("hybrid_histogram", {}, 1, False, False, True),  # learns from every arrival
    ],
)
def test_builtin_policies_plans(
    policy: str, params: dict[str, Any], concurrency: int, served: bool, at_max: bool, idle_wakes: bool
) -> None:
    plan = _plan(policy, params, concurrency=concurrency)
    assert (plan.skip_served_arrivals, plan.skip_arrivals_at_max, plan.idle_expiry_wakes) == (served, at_max, idle_wakes)


def test_request_count_uses_the_endpoints_scaler_value() -> None:
    # scaler_value 2 requests per worker at 4 slots: not sized by demand.
    plan = _plan("runpod_request_count", {}, scaler=ScalerType.REQUEST_COUNT, scaler_value=2, concurrency=4)
    assert not plan.skip_served_arrivals and plan.skip_arrivals_at_max


@dataclass(frozen=True)
class _Params:
    pass


def _hold(_snapshot: EndpointSnapshot, _params: _Params, state: int) -> tuple[ScaleDecision, int]:
    return ScaleDecision.hold("no idea"), state


register(Policy("test_schedule_undeclared", _Params, lambda _p, _s: 0, _hold))
register(Policy("test_schedule_ticking", _Params, lambda _p, _s: 0, _hold, tick_interval_s=lambda _p: 5.0))
register(
    Policy(
        "test_schedule_sized_ticking",
        _Params,
        lambda _p, _s: 0,
        _hold,
        tick_interval_s=lambda _p: 5.0,
        sized_by_demand=lambda _p, spec: spec.concurrency_per_worker == 1,
    )
)


def test_a_policy_that_declares_nothing_is_consulted_on_every_arrival() -> None:
    for name in ("test_schedule_undeclared", "test_schedule_ticking"):  # a tick alone earns no skip
        plan = _plan(name)
        assert not plan.skip_served_arrivals and not plan.skip_arrivals_at_max
    assert _plan("test_schedule_undeclared").tick_interval_s is None
    assert _plan("test_schedule_undeclared").idle_expiry_wakes
    assert _plan("test_schedule_ticking").tick_interval_s == 5.0 and not _plan("test_schedule_ticking").idle_expiry_wakes


def test_a_ticking_policy_skipped_on_its_sizing_promise_still_gets_idle_expiry_wakes() -> None:
    plan = _plan("test_schedule_sized_ticking")
    assert plan.skip_served_arrivals and plan.idle_expiry_wakes and plan.tick_interval_s == 5.0
    assert not _plan("test_schedule_sized_ticking", concurrency=2).skip_served_arrivals  # the flag's function of the spec


def test_a_spec_swap_keeps_only_the_promises_that_hold_for_every_spec() -> None:
    # request_count resolved per_worker 2 from scaler_value 2 when bound, and keeps it across
    # the swap; the new spec (scaler_value 4, 4 slots) alone would pass 4 >= 4.
    old = _spec("runpod_request_count", scaler=ScalerType.REQUEST_COUNT, scaler_value=2, concurrency=2, max_workers=3)
    ctl = Controller([old], FakeBackend(), FakeQueue(), ManualClock())
    assert ctl.consult_plan("ep").skip_served_arrivals
    wider = _spec("runpod_request_count", scaler=ScalerType.REQUEST_COUNT, scaler_value=4, concurrency=4, max_workers=5)
    ctl.update_endpoint(wider)
    plan = ctl.consult_plan("ep")
    assert not plan.skip_served_arrivals  # sized_by_demand is a function of the spec: dropped
    assert plan.skip_arrivals_at_max and plan.max_workers == 5  # stateless_no_wake is a fixed True
    ctl.add_endpoint(wider)  # a fresh policy state belongs to the new spec again
    assert ctl.consult_plan("ep").skip_served_arrivals


# -- the idle-expiry wake and the next wake -----------------------------------------------


def test_idle_expiry_wake_is_exactly_the_keep_alive_after_idle() -> None:
    plan = _plan("runpod_request_count", idle_timeout_s=30.0, min_workers=1)
    assert idle_expiry_wake_s(plan, idle_since_s=22.0, workers=2, keep_alive_s=None) == 52.0  # the idle timeout
    assert idle_expiry_wake_s(plan, idle_since_s=22.0, workers=2, keep_alive_s=600.0) == 622.0  # the decision's
    since = 1019.3122553967629
    wake = idle_expiry_wake_s(plan, idle_since_s=since, workers=2, keep_alive_s=10.0)
    assert wake is not None and wake - since >= 10.0  # never an ulp early
    assert idle_expiry_wake_s(plan, idle_since_s=22.0, workers=1, keep_alive_s=None) is None  # at min_workers


def test_a_wake_that_finds_nobody_due_moves_on_without_a_pass() -> None:
    """fixed_keepalive (sized by demand, stateless): a worker idle since 0 s took a job at 300 s and has been
    idle since 400 s; the wake at 600 s finds nobody due, the next one is at 1000 s. Each answer is
    what the Controller's pass says: no action, and that next wake."""
    spec = _spec("fixed_keepalive", {"keep_alive_s": 600.0}, idle_timeout_s=30.0, scale_to_zero_grace_s=5.0)
    plan = consult_plan(spec, tick_interval_s=None, sized_by_demand=True, stateless_no_wake=True)
    assert plan.skip_idle_wakes and not plan.consulting_every_arrival().skip_idle_wakes
    busy = WorkerView("w1", WorkerState.RUNNING, 0.0, in_flight=1)
    idle = WorkerView("w2", WorkerState.IDLE, 0.0, idle_since_s=400.0)
    assert idle_wake_without_pass(plan, 600.0, 2, 400.0, 600.0) == (True, 1000.0)
    snap = EndpointSnapshot(600.0, spec, (busy, idle), QueueStats(in_progress=1))
    decision = ScaleDecision(1, "", keep_alive_s=600.0)
    action = apply_guardrails(snap, decision)
    assert action.is_noop and next_wake_s(snap, decision, action) == 1000.0
    # The last worker waits out the scale-to-zero grace too; someone due needs the pass.
    assert idle_wake_without_pass(plan, 600.0, 1, 400.0, 600.0) == (True, 1005.0)
    assert idle_wake_without_pass(plan, 1000.0, 2, 400.0, 600.0) == (False, None)
    assert idle_wake_without_pass(plan, 600.0, 2, None, 600.0) == (True, None)  # none idle: no expiry to wake for
    # A policy that promises less is always consulted.
    assert idle_wake_without_pass(PLAIN, 600.0, 2, 400.0, None) == (False, None)


def test_a_ticking_policy_gets_no_idle_expiry_wake() -> None:
    plan = _plan("knative_kpa")
    assert idle_expiry_wake_s(plan, idle_since_s=0.0, workers=3, keep_alive_s=0.0) is None


def _snap(now_s: float, *workers: WorkerView, idle_timeout_s: float) -> EndpointSnapshot:
    return EndpointSnapshot(now_s, _spec(idle_timeout_s=idle_timeout_s), tuple(workers), QueueStats())


def test_next_wake_is_the_earlier_of_the_decision_and_the_expiry() -> None:
    idle = WorkerView("w", WorkerState.IDLE, 0.0, idle_since_s=10.0)
    snap = _snap(12.0, idle, idle_timeout_s=5.0)
    assert next_wake_s(snap, ScaleDecision(0, ""), ScaleAction()) == 15.0
    assert next_wake_s(snap, ScaleDecision(0, "", wake_at_s=13.0), ScaleAction()) == 13.0
    assert next_wake_s(snap, ScaleDecision(0, "", wake_at_s=20.0), ScaleAction()) == 15.0
    assert next_wake_s(snap, ScaleDecision(0, ""), ScaleAction(stop=("w",))) is None  # it was just stopped
    assert next_wake_s(_snap(15.0, idle, idle_timeout_s=5.0), ScaleDecision(1, ""), ScaleAction()) is None  # due now


# -- the zero-workers rule lives in the guardrails ------------------------------------------


@pytest.mark.parametrize(
    ("queue", "max_workers", "start"),
    [
        (QueueStats(in_queue=1), 3, 1),  # a hold at zero workers with a job waiting: start one
        (QueueStats(in_queue=2, in_queue_scaling=0), 3, 0),  # lowPriority jobs never trigger scale-up
        (QueueStats(in_queue=1), 0, 0),  # max_workers 0 allows none
        (QueueStats(), 3, 0),  # nothing waits
    ],
)
def test_guardrails_start_one_worker_for_a_job_waiting_at_zero(queue: QueueStats, max_workers: int, start: int) -> None:
    snap = EndpointSnapshot(0.0, _spec(max_workers=max_workers), (), queue)
    for decision in (ScaleDecision.hold("no data yet"), ScaleDecision(0, "wants none")):
        action = apply_guardrails(snap, decision)
        assert action.start == start and action.target == start
