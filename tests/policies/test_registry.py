"""Every policy the issue names is registered, ticks as documented, and rejects bad params by field and value."""

from __future__ import annotations

from typing import Any

import pytest

from gpuserve import policies
from gpuserve.core import ConfigError
from tests.policies.policy_snapshots import endpoint, snap

ISSUE_POLICIES = {
    "runpod_request_count": None,
    "runpod_queue_delay": None,
    "fixed_keepalive": None,
    "knative_kpa": 2.0,
    "ray_serve": 1.0,
    "hybrid_histogram": None,
}


def test_every_issue_policy_is_registered() -> None:
    assert set(ISSUE_POLICIES) <= set(policies.available())


@pytest.mark.parametrize(("name", "tick_s"), sorted(ISSUE_POLICIES.items()))
def test_tick_interval(name: str, tick_s: float | None) -> None:
    spec = endpoint(name)
    assert policies.get(name, {}, spec).tick_interval_s == tick_s


@pytest.mark.parametrize("name", sorted(ISSUE_POLICIES))
def test_empty_endpoint_asks_for_nothing(name: str) -> None:
    spec = endpoint(name)
    instance = policies.get(name, {}, spec)
    decision = instance.decide(snap(0.0, spec))
    assert decision.is_hold or decision.desired_workers == 0


@pytest.mark.parametrize(
    ("name", "params", "field", "value"),
    [
        ("runpod_request_count", {"requests_per_worker": -1}, "requests_per_worker", "-1"),
        ("runpod_queue_delay", {"queue_delay_s": -2}, "queue_delay_s", "-2"),
        ("runpod_queue_delay", {"queue_delay_s": "soon"}, "queue_delay_s", "'soon'"),
        ("fixed_keepalive", {"keep_alive_s": -600}, "keep_alive_s", "-600"),
        ("knative_kpa", {"max_scale_down_rate": 0.5}, "max_scale_down_rate", "0.5"),
        ("knative_kpa", {"max_scale_up_rate": 1}, "max_scale_up_rate", "1"),
        ("knative_kpa", {"target_utilization": 1.5}, "target_utilization", "1.5"),
        ("knative_kpa", {"panic_window_pct": 0}, "panic_window_pct", "0"),
        ("knative_kpa", {"stable_window_s": -60}, "stable_window_s", "-60"),
        ("ray_serve", {"target_ongoing_requests": 0}, "target_ongoing_requests", "0"),
        ("ray_serve", {"downscale_to_zero_delay_s": -1}, "downscale_to_zero_delay_s", "-1"),
        ("ray_serve", {"downscale_to_zero_delay_s": "later"}, "downscale_to_zero_delay_s", "'later'"),
        ("ray_serve", {"upscale_delay_s": -30}, "upscale_delay_s", "-30"),
        ("hybrid_histogram", {"bin_s": 0}, "bin_s", "0"),
        ("hybrid_histogram", {"history_len": 0}, "history_len", "0"),
        ("hybrid_histogram", {"tail_pct": 120}, "tail_pct", "120"),
        ("hybrid_histogram", {"bin_s": 600, "range_s": 60}, "bin_s", "600"),
        ("hybrid_histogram", {"prewarm": 1}, "prewarm", "1"),
    ],
)
def test_bad_params_name_field_and_value(name: str, params: dict[str, Any], field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        policies.get(name, params, endpoint(name))
    assert info.value.field == f"policy.params.{field}"
    message = str(info.value)
    assert message.startswith(f"policy.params.{field} ")
    assert value in message


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("runpod_queue_delay", {"queue_delay_s": 2}),
        ("fixed_keepalive", {"keep_alive_s": 60}),
        ("knative_kpa", {"target": 5, "stable_window_s": 30}),
        ("ray_serve", {"downscale_to_zero_delay_s": 120, "upscaling_factor": 2}),
        ("hybrid_histogram", {"range_s": 7200, "busy_poll_s": 0}),
    ],
)
def test_good_params_build(name: str, params: dict[str, Any]) -> None:
    instance = policies.get(name, params, endpoint(name))
    for key, value in params.items():
        assert getattr(instance.params, key) == value
