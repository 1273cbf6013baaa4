"""Runpod's two scalers at explicit times: REQUEST_COUNT's formula and QUEUE_DELAY's trigger and wake."""

from __future__ import annotations

import pytest

from gpuserve import policies
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import (
    EndpointSpec,
    ManualClock,
    QueueStats,
    ScalerType,
    WorkerState,
    apply_guardrails,
    next_expiry_s,
)
from tests.policies.policy_snapshots import endpoint, snap, workers

# -- REQUEST_COUNT: workers = ceil((requestsInQueue + requestsInProgress) / scalerValue) ----------------


@pytest.mark.parametrize(
    ("in_queue", "in_progress", "scaler_value", "desired"),
    [
        (0, 0, 4, 0),
        (1, 0, 4, 1),
        (4, 0, 4, 1),
        (5, 0, 4, 2),
        (9, 0, 4, 3),
        (3, 6, 4, 3),
        (8, 8, 4, 4),
        (7, 0, 1, 7),
        (10, 0, 2.5, 4),
    ],
)
def test_request_count_formula(in_queue: int, in_progress: int, scaler_value: float, desired: int) -> None:
    spec = endpoint("runpod_request_count", scaler=ScalerType.REQUEST_COUNT, scaler_value=scaler_value)
    instance = policies.get("runpod_request_count", {}, spec)
    decision = instance.decide(snap(100.0, spec, in_queue=in_queue, in_progress=in_progress))
    assert decision.desired_workers == desired


def test_request_count_ignores_low_priority_jobs() -> None:
    spec = endpoint("runpod_request_count", scaler=ScalerType.REQUEST_COUNT, scaler_value=4)
    instance = policies.get("runpod_request_count", {}, spec)
    # 9 queued, of which 8 are lowPriority: only 1 queued + 4 running drive scaling -> ceil(5/4) = 2.
    decision = instance.decide(snap(0.0, spec, in_queue=9, in_queue_scaling=1, in_progress=4))
    assert decision.desired_workers == 2


@pytest.mark.parametrize(
    ("scaler", "scaler_value", "params", "per_worker"),
    [
        (ScalerType.REQUEST_COUNT, 3.0, {}, 3.0),
        (ScalerType.QUEUE_DELAY, 10.0, {}, 4.0),  # another scaler's value is not a request count
        (ScalerType.REQUEST_COUNT, 3.0, {"requests_per_worker": 6}, 6.0),
    ],
)
def test_request_count_value_source(
    scaler: ScalerType, scaler_value: float, params: dict[str, float], per_worker: float
) -> None:
    spec = endpoint("runpod_request_count", scaler=scaler, scaler_value=scaler_value)
    assert policies.get("runpod_request_count", params, spec).state.requests_per_worker == per_worker


# -- QUEUE_DELAY -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scaler", "scaler_value", "params", "delay_s"),
    [
        (ScalerType.QUEUE_DELAY, 4.0, {}, 4.0),
        (ScalerType.QUEUE_DELAY, 10.0, {}, 10.0),
        (ScalerType.REQUEST_COUNT, 2.0, {}, 4.0),  # Runpod's default X when the endpoint counts requests
        (ScalerType.QUEUE_DELAY, 10.0, {"queue_delay_s": 2.5}, 2.5),
    ],
)
def test_queue_delay_threshold_source(
    scaler: ScalerType, scaler_value: float, params: dict[str, float], delay_s: float
) -> None:
    spec = endpoint("runpod_queue_delay", scaler=scaler, scaler_value=scaler_value)
    assert policies.get("runpod_queue_delay", params, spec).state.queue_delay_s == delay_s


@pytest.mark.parametrize(
    ("age_s", "desired", "wake_at_s"),
    [
        (0.0, 1, 104.0),
        (3.9, 1, 100.1),  # below X: no new worker, wake exactly when the job crosses X
        (4.0, 2, None),  # at X: triggers
        (4.0 - 4e-13, 2, None),  # a wake at the crossing whose age rounded a few ulps short still fires
        (4.5, 2, None),  # above X
    ],
)
def test_queue_delay_trigger_below_at_above(age_s: float, desired: int, wake_at_s: float | None) -> None:
    spec = endpoint("runpod_queue_delay")
    instance = policies.get("runpod_queue_delay", {}, spec)
    now = 100.0
    decision = instance.decide(snap(now, spec, workers(running=1), in_queue=1, in_progress=1, oldest_queued_age_s=age_s))
    assert decision.desired_workers == desired
    assert decision.wake_at_s == (pytest.approx(wake_at_s) if wake_at_s is not None else None)


@pytest.mark.parametrize(
    ("views", "concurrency", "in_queue", "in_progress", "desired"),
    [
        # 2 busy + 1 starting worker (1 free slot), 5 queued -> 4 unserved -> 3 + 4 = 7.
        (workers(running=2, initializing=1), 1, 5, 2, 7),
        # the same queue, now covered by the 4 workers it started: nothing more to add.
        (workers(running=2, initializing=5), 1, 5, 2, 7),
        # concurrency 2: 2 full workers, 5 queued -> ceil(5/2) = 3 more.
        (workers(running=2, capacity=2), 2, 5, 4, 5),
        # a THROTTLED worker has no slot to give.
        (workers(running=1, throttled=1), 1, 1, 1, 3),
    ],
)
def test_queue_delay_adds_enough_for_unserved_jobs(
    views: tuple, concurrency: int, in_queue: int, in_progress: int, desired: int
) -> None:
    spec = endpoint("runpod_queue_delay", concurrency=concurrency)
    instance = policies.get("runpod_queue_delay", {}, spec)
    s = snap(50.0, spec, views, in_queue=in_queue, in_progress=in_progress, oldest_queued_age_s=6.0)
    assert instance.decide(s).desired_workers == desired


def test_queue_delay_zero_workers_start_one_at_once() -> None:
    # The policy asks for none below X; the guardrails start one for jobs waiting at zero workers.
    spec = endpoint("runpod_queue_delay")
    instance = policies.get("runpod_queue_delay", {}, spec)
    s = snap(20.0, spec, in_queue=3, oldest_queued_age_s=0.0)
    decision = instance.decide(s)
    assert apply_guardrails(s, decision).start == 1 and decision.wake_at_s == pytest.approx(24.0)


def test_queue_delay_scales_down_through_idle_timeout() -> None:
    spec = endpoint("runpod_queue_delay", idle_timeout_s=5.0)
    instance = policies.get("runpod_queue_delay", {}, spec)
    views = workers(idle=2, running=1, idle_since_s=100.0)
    before = snap(104.9, spec, views, in_progress=1)
    decision = instance.decide(before)
    assert decision.desired_workers == 1 and decision.wake_at_s is None
    assert apply_guardrails(before, decision).stop == ()
    assert next_expiry_s(before, decision) == pytest.approx(105.0)
    at = snap(105.0, spec, views, in_progress=1)
    assert sorted(apply_guardrails(at, instance.decide(at)).stop) == ["idle0", "idle1"]


def test_queue_delay_through_controller_wakes_at_the_crossing() -> None:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec: EndpointSpec = endpoint("runpod_queue_delay", idle_timeout_s=5.0)
    ctl = Controller([spec], backend, queue, clock)

    queue.by_endpoint["ep"] = QueueStats(in_queue=1, oldest_queued_age_s=0.0)
    step = ctl.on_job_arrival("ep", 0.0)
    assert step is not None and step.action.start == 1  # zero workers: start one at once
    (w,) = backend.workers("ep")
    backend.set_state("ep", w.worker_id, WorkerState.RUNNING, in_flight=1)

    # A second job at t=10 finds the only worker busy: it waits, and the controller is told when to look.
    queue.by_endpoint["ep"] = QueueStats(in_queue=1, in_progress=1, oldest_queued_age_s=0.0)
    step = ctl.on_job_arrival("ep", 10.0)
    assert step is not None and step.action.is_noop
    assert ctl.next_wake_s("ep") == pytest.approx(14.0)

    queue.by_endpoint["ep"] = QueueStats(in_queue=1, in_progress=1, oldest_queued_age_s=3.999)
    assert ctl.tick_endpoint("ep", 13.999).action.is_noop
    queue.by_endpoint["ep"] = QueueStats(in_queue=1, in_progress=1, oldest_queued_age_s=4.0)
    step = ctl.tick_endpoint("ep", 14.0)
    assert step.action.start == 1 and len(backend.workers("ep")) == 2
