"""Ray Serve's policy at explicit times: up and down delays by timestamp, the 1 -> 0 rule, the cold-start fast path."""

from __future__ import annotations

from typing import Any

import pytest

from gpuserve import policies
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import ManualClock, QueueStats, WorkerState
from gpuserve.policies.base import PolicyInstance
from tests.policies.policy_snapshots import endpoint, snap, workers


def _ray(params: dict[str, Any] | None = None, **spec_kwargs: Any) -> tuple[PolicyInstance, Any]:
    spec = endpoint("ray_serve", params, **spec_kwargs)
    return policies.get("ray_serve", params or {}, spec), spec


@pytest.mark.parametrize(("at_s", "desired"), [(100.0, 2), (129.0, 2), (129.99, 2), (130.0, 4), (131.0, 4)])
def test_upscale_waits_upscale_delay(at_s: float, desired: int) -> None:
    instance, spec = _ray()
    # 2 replicas, 8 ongoing requests at target 2 -> wants 4 from t=100.
    first = instance.decide(snap(100.0, spec, workers(running=2), in_progress=8))
    assert first.desired_workers == 2 and first.wake_at_s == 130.0
    if at_s > 100.0:
        assert instance.decide(snap(at_s, spec, workers(running=2), in_progress=8)).desired_workers == desired


def test_change_of_mind_restarts_the_delay() -> None:
    instance, spec = _ray()
    instance.decide(snap(100.0, spec, workers(running=2), in_progress=8))
    content = instance.decide(snap(110.0, spec, workers(running=2), in_progress=4))  # exactly at target
    assert content.desired_workers == 2 and instance.state.since_s is None
    again = instance.decide(snap(120.0, spec, workers(running=2), in_progress=8))
    assert again.wake_at_s == 150.0
    assert instance.decide(snap(130.0, spec, workers(running=2), in_progress=8)).desired_workers == 2
    assert instance.decide(snap(150.0, spec, workers(running=2), in_progress=8)).desired_workers == 4


def test_a_down_wish_resets_an_up_wait() -> None:
    instance, spec = _ray()
    instance.decide(snap(0.0, spec, workers(running=2), in_progress=8))
    instance.decide(snap(10.0, spec, workers(running=2), in_progress=0))  # wants down now
    assert instance.state.direction == -1 and instance.state.since_s == 10.0
    assert instance.decide(snap(30.0, spec, workers(running=2), in_progress=8)).desired_workers == 2
    assert instance.state.since_s == 30.0


@pytest.mark.parametrize(("at_s", "desired"), [(599.0, 4), (599.999, 4), (600.0, 1), (700.0, 1)])
def test_downscale_waits_downscale_delay(at_s: float, desired: int) -> None:
    instance, spec = _ray()
    assert instance.decide(snap(0.0, spec, workers(running=4), in_progress=2)).wake_at_s == 600.0
    assert instance.decide(snap(at_s, spec, workers(running=4), in_progress=2)).desired_workers == desired


def test_never_below_one_except_one_to_zero() -> None:
    instance, spec = _ray()
    instance.decide(snap(0.0, spec, workers(running=3)))
    step_down = instance.decide(snap(600.0, spec, workers(running=3)))
    assert step_down.desired_workers == 1  # not 0: zero only by the 1 -> 0 step
    assert instance.decide(snap(601.0, spec, workers(running=1))).desired_workers == 1
    assert instance.decide(snap(1200.0, spec, workers(running=1))).desired_workers == 1
    assert instance.decide(snap(1201.0, spec, workers(running=1))).desired_workers == 0


@pytest.mark.parametrize(("at_s", "desired"), [(119.0, 1), (120.0, 0)])
def test_downscale_to_zero_delay(at_s: float, desired: int) -> None:
    instance, spec = _ray({"downscale_to_zero_delay_s": 120})
    instance.decide(snap(0.0, spec, workers(running=1)))
    assert instance.decide(snap(at_s, spec, workers(running=1))).desired_workers == desired


def test_min_workers_floor_stops_the_one_to_zero_step() -> None:
    instance, spec = _ray(min_workers=1)
    instance.decide(snap(0.0, spec, workers(running=1)))
    decision = instance.decide(snap(5000.0, spec, workers(running=1)))
    assert decision.desired_workers == 1 and decision.wake_at_s is None


@pytest.mark.parametrize(
    ("params", "state_target", "desired"),
    [
        ({}, None, 1),  # max(ceil(1), 0)
        ({"upscaling_factor": 2.5}, None, 3),  # ceil(2.5)
        ({}, 2, 2),  # two replicas already on their way: keep the target
    ],
)
def test_cold_start_fast_path(params: dict[str, Any], state_target: int | None, desired: int) -> None:
    instance, spec = _ray(params)
    if state_target is not None:
        instance.state = instance.state.__class__(target_workers=state_target)
    starting = workers(initializing=state_target or 0)
    decision = instance.decide(snap(50.0, spec, starting, in_queue=1))
    assert decision.desired_workers == desired and decision.wake_at_s is None  # at once, no delay


def test_no_requests_at_zero_stays_at_zero() -> None:
    instance, spec = _ray()
    assert instance.decide(snap(0.0, spec)).desired_workers == 0


@pytest.mark.parametrize(
    ("params", "running", "demand", "desired"),
    [
        ({"upscaling_factor": 0.5}, 4, 16, 6),  # ceil(4 + 0.5 x (8 - 4))
        ({"downscaling_factor": 0.1}, 4, 6, 3),  # ceil(3.9) = 4 would stall: forced to 3
        ({"downscaling_factor": 0.5}, 4, 2, 3),  # ceil(4 + 0.5 x (1 - 4)) = ceil(2.5)
        ({"target_ongoing_requests": 5}, 1, 23, 5),  # ceil(23 / 5)
        ({}, 2, 400, 10),  # clamped to max_workers
    ],
)
def test_desired_formula_with_factors(params: dict[str, Any], running: int, demand: int, desired: int) -> None:
    instance, spec = _ray({**params, "upscale_delay_s": 0, "downscale_delay_s": 0}, max_workers=10)
    decision = instance.decide(snap(0.0, spec, workers(running=running), in_progress=demand))
    assert decision.desired_workers == desired


def test_ray_through_controller_scales_up_at_exactly_the_delay() -> None:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = endpoint("ray_serve")
    ctl = Controller([spec], backend, queue, clock)
    assert ctl.tick_interval_s("ep") == 1.0
    queue.by_endpoint["ep"] = QueueStats(in_queue=1)
    step = ctl.on_job_arrival("ep", 0.0)
    assert step is not None and step.decision.desired_workers == 1 and step.action.start == 1
    (w,) = backend.workers("ep")
    backend.set_state("ep", w.worker_id, WorkerState.RUNNING, in_flight=1)
    queue.by_endpoint["ep"] = QueueStats(in_queue=5, in_progress=1)  # 6 requests at target 2 -> 3 replicas
    starts = {}
    for t in range(1, 40):
        starts[t] = ctl.tick_endpoint("ep", float(t)).action.start
    assert all(starts[t] == 0 for t in range(1, 31))
    assert starts[31] == 2  # wished from t=1, delay 30 s
    assert len(backend.workers("ep")) == 3
