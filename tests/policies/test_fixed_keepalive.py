"""Scale-per-request with a fixed keep-alive: a worker per unserved request, retired after keep_alive_s idle."""

from __future__ import annotations

import pytest

from gpuserve import policies
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import ManualClock, QueueStats, WorkerState, apply_guardrails, next_expiry_s
from tests.policies.policy_snapshots import endpoint, snap, workers


@pytest.mark.parametrize(
    ("views", "concurrency", "in_queue", "in_progress", "desired"),
    [
        ((), 1, 0, 0, 0),
        ((), 1, 3, 0, 3),  # every request that finds no slot gets a worker at once
        (workers(running=2), 1, 1, 2, 3),
        (workers(running=2, idle=1), 1, 1, 2, 3),  # the idle worker takes it: no new one
        (workers(running=1, initializing=1), 1, 1, 1, 2),  # a starting worker will take it
        (workers(running=1, capacity=4, in_flight=1), 4, 2, 1, 1),  # 3 free slots on the running worker
        (workers(running=1, capacity=4), 4, 5, 4, 3),  # 5 unserved at 4 per worker -> +2
        (workers(idle=4, running=1), 1, 0, 1, 1),  # ask low; the keep-alive guardrail keeps the idle ones
    ],
)
def test_scale_per_request(views: tuple, concurrency: int, in_queue: int, in_progress: int, desired: int) -> None:
    spec = endpoint("fixed_keepalive", concurrency=concurrency)
    instance = policies.get("fixed_keepalive", {}, spec)
    decision = instance.decide(snap(10.0, spec, views, in_queue=in_queue, in_progress=in_progress))
    assert decision.desired_workers == desired
    assert decision.keep_alive_s == 600.0


@pytest.mark.parametrize(("keep_alive_s", "idle_for_s", "stopped"), [(600.0, 599.9, False), (600.0, 600.0, True), (60.0, 60.0, True), (60.0, 59.0, False)])
def test_keep_alive_expiry_via_guardrails(keep_alive_s: float, idle_for_s: float, stopped: bool) -> None:
    # The endpoint's own idle timeout (5 s) is replaced by the policy's keep-alive.
    spec = endpoint("fixed_keepalive", {"keep_alive_s": keep_alive_s}, idle_timeout_s=5.0)
    instance = policies.get("fixed_keepalive", {"keep_alive_s": keep_alive_s}, spec)
    s = snap(100.0 + idle_for_s, spec, workers(idle=1, idle_since_s=100.0))
    decision = instance.decide(s)
    assert decision.desired_workers == 0
    assert apply_guardrails(s, decision).stop == (("idle0",) if stopped else ())
    if not stopped:
        assert next_expiry_s(s, decision) == pytest.approx(100.0 + keep_alive_s)


def test_keep_alive_through_controller() -> None:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = endpoint("fixed_keepalive", idle_timeout_s=5.0)
    ctl = Controller([spec], backend, queue, clock)

    queue.by_endpoint["ep"] = QueueStats(in_queue=2)
    step = ctl.on_job_arrival("ep", 0.0)
    assert step is not None and step.action.start == 2
    first, second = (w.worker_id for w in backend.workers("ep"))
    backend.set_state("ep", first, WorkerState.RUNNING, in_flight=1)
    backend.set_state("ep", second, WorkerState.RUNNING, in_flight=1)

    # Both finish at t=30; no request for 10 minutes.
    backend.set_state("ep", first, WorkerState.IDLE, idle_since_s=30.0)
    backend.set_state("ep", second, WorkerState.IDLE, idle_since_s=30.0)
    queue.by_endpoint["ep"] = QueueStats()
    step = ctl.tick_endpoint("ep", 30.0)
    assert step.action.is_noop and ctl.next_wake_s("ep") == pytest.approx(630.0)
    assert ctl.tick_endpoint("ep", 629.0).action.is_noop  # not before 600 s idle
    step = ctl.tick_endpoint("ep", 630.0)
    assert sorted(step.action.stop) == sorted([first, second]) and backend.workers("ep") == []


def test_request_into_a_warm_idle_worker_starts_nothing() -> None:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = endpoint("fixed_keepalive")
    ctl = Controller([spec], backend, queue, clock)
    queue.by_endpoint["ep"] = QueueStats(in_queue=1)
    ctl.on_job_arrival("ep", 0.0)
    (w,) = backend.workers("ep")
    backend.set_state("ep", w.worker_id, WorkerState.IDLE, idle_since_s=5.0)
    queue.by_endpoint["ep"] = QueueStats(in_queue=1)
    step = ctl.on_job_arrival("ep", 300.0)  # a warm start: 295 s idle < 600 s keep-alive
    assert step is not None and step.action.is_noop and len(backend.workers("ep")) == 1
