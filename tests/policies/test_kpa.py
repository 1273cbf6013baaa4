"""Knative KPA at explicit times: windows, panic entry/extension/exit, rate limits, no-data hold, zero grace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gpuserve import policies
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import ManualClock, QueueStats, ScaleDecision, apply_guardrails
from gpuserve.policies.base import PolicyInstance
from gpuserve.policies.kpa import KpaState, observe
from tests.policies.policy_snapshots import endpoint, snap, workers


def _kpa(params: dict[str, Any] | None = None, **spec_kwargs: Any) -> tuple[PolicyInstance, Any]:
    params = {"target": 10.0} if params is None else params
    spec = endpoint("knative_kpa", params, **spec_kwargs)
    return policies.get("knative_kpa", params, spec), spec


def _drive(
    instance: PolicyInstance,
    spec: Any,
    demand_at: Callable[[float], int],
    ready: int,
    times: list[float],
) -> dict[float, tuple[ScaleDecision, KpaState]]:
    out: dict[float, tuple[ScaleDecision, KpaState]] = {}
    for t in times:
        decision = instance.decide(snap(t, spec, workers(running=ready), in_progress=demand_at(t)))
        out[t] = (decision, instance.state)
    return out


def _ticks(start: float, stop: float) -> list[float]:
    return [start + 2.0 * i for i in range(int((stop - start) / 2.0) + 1)]


@pytest.mark.parametrize(
    ("concurrency", "params", "target"),
    [(1, {}, 0.7), (4, {}, 2.8), (10, {"target_utilization": 0.5}, 5.0), (4, {"target": 3}, 3.0)],
)
def test_target_defaults_to_concurrency_times_utilization(concurrency: int, params: dict[str, Any], target: float) -> None:
    instance, _ = _kpa(params, concurrency=concurrency)
    assert instance.state.target == pytest.approx(target)


def test_no_data_is_an_explicit_hold() -> None:
    instance, spec = _kpa()
    first = instance.decide(snap(0.0, spec, workers(running=1), in_progress=50))
    assert first.is_hold and "no concurrency data" in first.reason
    assert instance.decide(snap(0.5, spec, workers(running=1), in_progress=50)).is_hold  # no whole second yet
    assert instance.decide(snap(1.0, spec, workers(running=1), in_progress=50)).desired_workers == 5


def test_per_second_samples_are_time_weighted() -> None:
    state = KpaState(target=1.0)
    state = observe(state, 0.0, 0.0, 60.0)
    state = observe(state, 10.5, 4.0, 60.0)  # demand 0 until 10.5, then 4
    state = observe(state, 12.0, 4.0, 60.0)
    assert state.samples[-3:] == ((10.0, 0.0), (11.0, 2.0), (12.0, 4.0))
    assert len(state.samples) == 12
    # A long silent stretch keeps only the stable window's worth of seconds.
    state = observe(state, 100_000.0, 0.0, 60.0)
    assert len(state.samples) == 60 and state.samples[-1] == (100_000.0, 4.0)


def test_stable_mode_follows_stable_window() -> None:
    instance, spec = _kpa()
    out = _drive(instance, spec, lambda t: 25, ready=3, times=_ticks(0.0, 60.0))
    decision, state = out[60.0]
    assert decision.desired_workers == 3 and state.panic_time_s is None  # ceil(25/10)
    assert decision.keep_alive_s == 0.0


def _surge(t: float) -> int:
    # 20 in flight until t=60, 60 during [60, 70), then nothing.
    return 20 if t < 60 else 60 if t < 70 else 0


def test_panic_entry_extension_and_exit_after_stable_window() -> None:
    instance, spec = _kpa()
    out = _drive(instance, spec, _surge, ready=2, times=_ticks(0.0, 140.0))
    # t=60: P = 20 -> ceil(2)/2 = 1 < 2: calm.
    assert out[60.0][1].panic_time_s is None and out[60.0][0].desired_workers == 2
    # t=62: P = (4x20 + 2x60)/6 = 33.3 -> ceil(3.33) = 4, 4/2 >= 2: panic. S = 21.3 -> 3; desired max(3, 4).
    assert out[62.0][1].panic_time_s == 62.0 and out[62.0][0].desired_workers == 4
    # t=64: P = 46.7 -> 5, extends the panic.
    assert out[64.0][1].panic_time_s == 64.0 and out[64.0][0].desired_workers == 5
    assert out[66.0][0].desired_workers == 6  # P = 60
    # t=72 is the last tick over the threshold (P = 40 -> 4); t=74 has P = 20.
    assert out[72.0][1].panic_time_s == 72.0 and out[74.0][1].panic_time_s == 72.0
    # Still in panic at 72 + 60 (Knative needs panic_time + stable_window < now); out at the next tick.
    assert out[132.0][1].panic_time_s == 72.0 and out[132.0][0].desired_workers == 6
    assert out[134.0][1].panic_time_s is None and out[134.0][1].max_panic_workers == 0
    # Out of panic the stable window rules, with the down rate: floor(2/2) = 1.
    assert out[134.0][0].desired_workers == 1


def test_never_scales_down_in_panic() -> None:
    instance, spec = _kpa()
    out = _drive(instance, spec, _surge, ready=2, times=_ticks(0.0, 140.0))
    in_panic = [out[t][0].desired_workers or 0 for t in sorted(out) if out[t][1].panic_time_s is not None]
    assert len(in_panic) == (132 - 62) // 2 + 1
    assert in_panic == sorted(in_panic)  # non-decreasing while panicking
    assert max(in_panic) == 6 and in_panic[-1] == 6


@pytest.mark.parametrize(
    ("params", "ready", "demand", "desired"),
    [
        ({"target": 10.0, "max_scale_up_rate": 2.0}, 1, 100, 2),  # ceil(2 x 1)
        ({"target": 10.0, "max_scale_up_rate": 2.0}, 2, 100, 4),  # ceil(2 x 2)
        ({"target": 10.0}, 1, 100, 10),  # default rate 1000 does not bind
        ({"target": 10.0}, 10, 0, 5),  # floor(10 / 2)
        ({"target": 10.0, "max_scale_down_rate": 4.0}, 10, 0, 2),  # floor(10 / 4)
        ({"target": 10.0}, 0, 0, 0),  # R = max(1, 0): floor(1/2) = 0
    ],
)
def test_max_scale_up_and_down_rates(params: dict[str, Any], ready: int, demand: int, desired: int) -> None:
    instance, spec = _kpa(params)
    out = _drive(instance, spec, lambda t: demand, ready=ready, times=_ticks(0.0, 10.0))
    assert out[10.0][0].desired_workers == desired


def test_scale_to_zero_grace_holds_the_last_worker() -> None:
    instance, spec = _kpa()
    views = workers(idle=1, idle_since_s=0.0)
    decisions = {t: instance.decide(snap(t, spec, views)) for t in _ticks(0.0, 40.0)}
    assert decisions[0.0].is_hold
    # t=2: the first wish for zero starts the 30-s grace.
    assert decisions[2.0].desired_workers == 1 and decisions[2.0].wake_at_s == 32.0
    assert decisions[30.0].desired_workers == 1
    assert decisions[32.0].desired_workers == 0
    s = snap(32.0, spec, views)
    assert apply_guardrails(s, decisions[32.0]).stop == ("idle0",)


def test_grace_restarts_after_demand_returns() -> None:
    instance, spec = _kpa()
    views = workers(idle=1, idle_since_s=0.0)
    instance.decide(snap(0.0, spec, views))
    assert instance.decide(snap(2.0, spec, views)).wake_at_s == 32.0
    # One job in flight from t=4 (seen from then on): seconds 5 and 6 carry it.
    instance.decide(snap(4.0, spec, workers(running=1), in_progress=1))
    busy = instance.decide(snap(6.0, spec, workers(running=1), in_progress=0))
    assert busy.desired_workers == 1 and busy.wake_at_s is None and instance.state.zero_since_s is None
    # Second 6 leaves the 60-s stable window at t=66: a fresh 30-s grace starts there.
    later = {t: instance.decide(snap(t, spec, views)) for t in _ticks(8.0, 100.0)}
    assert all(later[t].desired_workers == 1 and later[t].wake_at_s is None for t in _ticks(8.0, 64.0))
    assert later[66.0].desired_workers == 1 and later[66.0].wake_at_s == 96.0
    assert later[94.0].desired_workers == 1 and later[96.0].desired_workers == 0


def test_kpa_through_controller_cold_start_and_ticks() -> None:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = endpoint("knative_kpa", {"target": 1.0})
    ctl = Controller([spec], backend, queue, clock)
    assert ctl.tick_interval_s("ep") == 2.0
    queue.by_endpoint["ep"] = QueueStats(in_queue=3)
    step = ctl.on_job_arrival("ep", 0.0)
    # No window data yet: the KPA holds, and the controller still starts one worker for the waiting job.
    assert step is not None and step.decision.is_hold and step.action.start == 1
    step = ctl.tick_endpoint("ep", 2.0)
    assert step.decision.desired_workers == 3 and step.action.start == 2  # ceil(3 / 1)
