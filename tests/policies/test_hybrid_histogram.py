"""Hybrid histogram at explicit times: crafted idle-time sequences give exact pre-warm and keep-alive windows."""

from __future__ import annotations

from typing import Any

import pytest

from gpuserve import policies
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import ManualClock, QueueStats, WorkerState, apply_guardrails
from gpuserve.policies.base import PolicyInstance
from gpuserve.policies.hybrid_histogram import (
    HybridHistogramParams,
    HybridHistogramState,
    forecast_idle_s,
    windows,
)
from tests.policies.policy_snapshots import endpoint, snap, workers

RUN_S = 2.0  # each invocation runs 2 s


def _policy(params: dict[str, Any] | None = None) -> tuple[PolicyInstance, Any]:
    spec = endpoint("hybrid_histogram", params)
    return policies.get("hybrid_histogram", params or {}, spec), spec


def _replay(instance: PolicyInstance, spec: Any, idle_times_s: list[float], *, end_seen_late_s: float = 0.0) -> float:
    """Invocations separated by the given idle times; returns when the last one ended.

    The policy sees each arrival (one running job) and each end (an idle worker, no jobs),
    the end possibly `end_seen_late_s` after it happened.
    """
    t, submitted = 0.0, 0
    for idle_s in [0.0, *idle_times_s]:
        t += idle_s
        submitted += 1
        instance.decide(snap(t, spec, workers(running=1), in_progress=1, submitted_total=submitted, last_arrival_s=t))
        t += RUN_S
        seen = snap(t + end_seen_late_s, spec, workers(idle=1, idle_since_s=t), submitted_total=submitted, last_arrival_s=t - RUN_S)
        instance.decide(seen)
    return t


def _state_with(bins_at: dict[int, int], out_of_range: int = 0, recent: tuple[float, ...] = ()) -> HybridHistogramState:
    bins = [0] * 240
    for index, count in bins_at.items():
        bins[index] = count
    return HybridHistogramState(bins=tuple(bins), out_of_range=out_of_range, recent_idle_s=recent)


P = HybridHistogramParams()


@pytest.mark.parametrize(
    ("state", "prewarm_s", "keep_alive_s", "branch"),
    [
        # 95 ITs of 10 min, 5 of 30 min: 5th pct = bin 10, 99th pct = bin 30.
        (_state_with({10: 95, 30: 5}), 10 * 60 * 0.9, 31 * 60 * 1.1, "histogram"),
        # the 5th percentile lands exactly on a bin edge: 5/100 >= 0.05 -> bin 2.
        (_state_with({2: 5, 20: 95}), 2 * 60 * 0.9, 21 * 60 * 1.1, "histogram"),
        # all in bin 0: pre-warm 0, keep-alive 1 min x 1.1.
        (_state_with({0: 50}), 0.0, 66.0, "histogram"),
        # one IT in each of 120 bins: CV ~ 1.0 < 2, not representative.
        (_state_with(dict.fromkeys(range(120), 1)), 0.0, 4 * 3600.0, "uncertain"),
        (_state_with({}), 0.0, 4 * 3600.0, "uncertain"),  # no data yet
        # out-of-range ITs are half of all: forecast 5 h -> pre-warm 4.25 h, keep-alive 1.5 h.
        (_state_with({10: 2}, out_of_range=2, recent=(18000.0, 18000.0)), 15300.0, 5400.0, "forecast"),
        # just under half out of range: the histogram rules.
        (_state_with({10: 3}, out_of_range=2, recent=(18000.0,)), 540.0, 11 * 60 * 1.1, "histogram"),
    ],
)
def test_windows(state: HybridHistogramState, prewarm_s: float, keep_alive_s: float, branch: str) -> None:
    win = windows(state, P)
    assert win.branch == branch
    assert win.prewarm_s == pytest.approx(prewarm_s)
    assert win.keep_alive_s == pytest.approx(keep_alive_s)


@pytest.mark.parametrize(
    ("history_s", "forecast_s"),
    [
        ((), 0.0),
        ((18000.0,), 18000.0),
        ((18000.0, 20000.0), 19000.0),  # two points: the mean
        ((18000.0,) * 5, 18000.0),  # constant series
        # mu = 5.5 h, lag-1 autocorrelation -0.75: 5.5 - 0.75 x 0.5 = 5.125 h.
        ((18000.0, 21600.0, 18000.0, 21600.0), 5.125 * 3600),
        # a rising series: phi clipped to 0.95 keeps the forecast stationary.
        ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0), 3.5 + 0.5 * 2.5),
    ],
)
def test_forecast_is_ar1(history_s: tuple[float, ...], forecast_s: float) -> None:
    assert forecast_idle_s(history_s) == pytest.approx(forecast_s)


def test_representative_histogram_through_decisions() -> None:
    instance, spec = _policy()
    # 95 idle times of 10 min 30 s (bin 10) and 5 of 30 min 30 s (bin 30), interleaved.
    idle = [630.0 if i % 20 else 1830.0 for i in range(100)]
    end = _replay(instance, spec, idle)
    assert sum(instance.state.bins) == 100 and instance.state.bins[10] == 95 and instance.state.bins[30] == 5
    prewarm_s, keep_alive_s = 540.0, 2046.0  # 10 x 60 x 0.9; (30 + 1) x 60 x 1.1
    views = workers(idle=1, idle_since_s=end)

    at_end = instance.decide(snap(end, spec, views, submitted_total=101, last_arrival_s=end - RUN_S))
    assert at_end.desired_workers == 0 and at_end.keep_alive_s == 0.0
    assert at_end.wake_at_s == pytest.approx(end + prewarm_s)
    assert apply_guardrails(snap(end, spec, views), at_end).stop == ("idle0",)  # unloaded at once

    before = instance.decide(snap(end + prewarm_s - 1, spec, (), submitted_total=101))
    assert before.desired_workers == 0
    prewarm = instance.decide(snap(end + prewarm_s, spec, (), submitted_total=101))
    assert prewarm.desired_workers == 1 and prewarm.wake_at_s == pytest.approx(end + prewarm_s + keep_alive_s)
    kept = instance.decide(snap(end + prewarm_s + keep_alive_s - 0.5, spec, workers(idle=1, idle_since_s=end + 600), submitted_total=101))
    assert kept.desired_workers == 1
    gone = snap(end + prewarm_s + keep_alive_s, spec, workers(idle=1, idle_since_s=end + 600), submitted_total=101)
    expired = instance.decide(gone)
    assert expired.desired_workers == 0 and expired.wake_at_s is None
    assert apply_guardrails(gone, expired).stop == ("idle0",)


def test_activity_end_seen_late_is_read_from_idle_since() -> None:
    instance, spec = _policy()
    idle = [630.0 if i % 20 else 1830.0 for i in range(100)]
    end = _replay(instance, spec, idle, end_seen_late_s=25.0)
    assert instance.state.bins[10] == 95 and instance.state.bins[30] == 5  # ITs measured from the true ends
    assert instance.state.activity_end_s == end


def test_not_representative_keeps_alive_for_the_range() -> None:
    instance, spec = _policy()
    end = _replay(instance, spec, [k * 60.0 + 30.0 for k in range(120)])
    assert instance.state.bins[:120] == (1,) * 120
    views = workers(idle=1, idle_since_s=end)
    decision = instance.decide(snap(end, spec, views, submitted_total=121))
    assert decision.desired_workers == 0 and decision.keep_alive_s == 4 * 3600.0
    assert decision.wake_at_s == pytest.approx(end + 4 * 3600.0)
    assert apply_guardrails(snap(end + 4 * 3600.0 - 1, spec, views), decision).stop == ()
    assert apply_guardrails(snap(end + 4 * 3600.0, spec, views), decision).stop == ("idle0",)


def test_out_of_range_branch_forecasts() -> None:
    instance, spec = _policy()
    end = _replay(instance, spec, [5 * 3600.0] * 3)
    assert instance.state.out_of_range == 3 and sum(instance.state.bins) == 0
    decision = instance.decide(snap(end, spec, workers(idle=1, idle_since_s=end), submitted_total=4))
    # IT forecast 5 h: pre-warm 0.85 x 5 h = 15300 s, then keep-alive 0.3 x 5 h = 5400 s.
    assert decision.desired_workers == 0 and decision.wake_at_s == pytest.approx(end + 15300.0)
    prewarm = instance.decide(snap(end + 15300.0, spec, (), submitted_total=4))
    assert prewarm.desired_workers == 1 and prewarm.wake_at_s == pytest.approx(end + 15300.0 + 5400.0)


def test_active_scales_per_request_and_polls_for_the_end() -> None:
    instance, spec = _policy()
    decision = instance.decide(snap(10.0, spec, workers(running=2), in_queue=3, in_progress=2, submitted_total=5, last_arrival_s=10.0))
    assert decision.desired_workers == 5 and decision.wake_at_s == 11.0
    instance_no_poll, spec2 = _policy({"busy_poll_s": 0})
    quiet = instance_no_poll.decide(snap(10.0, spec2, workers(running=1), in_progress=1, submitted_total=1))
    assert quiet.wake_at_s is None


def test_arrivals_seen_through_last_arrival_when_submissions_are_not_counted() -> None:
    instance, spec = _policy()
    t = 0.0
    for _ in range(4):
        instance.decide(snap(t, spec, workers(running=1), in_progress=1, last_arrival_s=t))
        instance.decide(snap(t + RUN_S, spec, workers(idle=1, idle_since_s=t + RUN_S), last_arrival_s=t))
        t += RUN_S + 300.0
    assert instance.state.bins[5] == 3  # three 300-s idle times


def test_hybrid_through_controller_prewarms_a_periodic_app() -> None:
    """A job every 10.5 min: after the first, each arrival finds a pre-warmed worker; none idles between."""
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = endpoint("hybrid_histogram")
    ctl = Controller([spec], backend, queue, clock)

    def ready_all(at_s: float) -> None:
        for w in backend.workers("ep"):
            if w.state is WorkerState.INITIALIZING:
                backend.set_state("ep", w.worker_id, WorkerState.IDLE, idle_since_s=at_s)  # instant boot

    def run_wakes_until(t_s: float) -> None:
        while (wake := ctl.next_wake_s("ep")) is not None and wake <= t_s:
            ctl.tick_endpoint("ep", wake)
            ready_all(wake)

    cold, t = 0, 0.0
    for i in range(12):
        run_wakes_until(t)
        if i > 1:
            # Between invocations the worker was unloaded, then pre-warmed just before this arrival.
            (w,) = backend.workers("ep")
            assert w.state is WorkerState.IDLE and w.idle_since_s is not None and w.idle_since_s > t - 630.0
        queue.by_endpoint["ep"] = QueueStats(in_queue=1, submitted_total=i + 1, last_arrival_s=t)
        step = ctl.on_job_arrival("ep", t)
        assert step is not None
        cold += step.action.start
        ready_all(t)
        (w,) = backend.workers("ep")
        backend.set_state("ep", w.worker_id, WorkerState.RUNNING, in_flight=1)
        queue.by_endpoint["ep"] = QueueStats(in_progress=1, submitted_total=i + 1, last_arrival_s=t)
        run_wakes_until(t + RUN_S)  # busy polls
        backend.set_state("ep", w.worker_id, WorkerState.IDLE, idle_since_s=t + RUN_S)
        queue.by_endpoint["ep"] = QueueStats(submitted_total=i + 1, last_arrival_s=t)
        step = ctl.tick_endpoint("ep", t + RUN_S + 0.5)  # the next busy poll sees the end
        if i > 0:
            assert step.action.stop == (w.worker_id,)  # pre-warm 540 s > 0: unloaded at once
            assert ctl.next_wake_s("ep") == pytest.approx(t + RUN_S + 540.0)
        t += RUN_S + 630.0
    # Only the first arrival is cold: with no history yet the 4-h keep-alive held the worker for the second.
    assert cold == 1
