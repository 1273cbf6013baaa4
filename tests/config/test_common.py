"""The endpoint fields shared by scenario files and endpoints.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuserve.config.common import EndpointFields, endpoint_spec
from gpuserve.config.scenario import scenario_from_dict
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointKind, EndpointSpec, LoadBalancingSpec


@pytest.mark.parametrize(
    ("scaler", "policy"),
    [("queue_delay", "runpod_queue_delay"), ("request_count", "runpod_request_count")],
)
def test_no_policy_named_follows_the_scaler(scaler: str, policy: str) -> None:
    fields = EndpointFields.model_validate({"scaling": {"scaler": scaler}})
    assert endpoint_spec("ep", fields, "endpoints[0]").policy.name == policy


def test_named_policy_wins_over_scaler() -> None:
    fields = EndpointFields.model_validate({"scaling": {"scaler": "queue_delay"}, "policy": {"name": "knative_kpa"}})
    assert endpoint_spec("ep", fields, "endpoints[0]").policy.name == "knative_kpa"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"scaling": {"min_workers": 4, "max_workers": 2}}, "endpoints[0].scaling.max_workers cannot be below min_workers (4), was 2"),
        ({"policy": {"name": "nope"}}, "endpoints[0].policy.name is not a known policy"),
        ({"policy": {"name": "fixed_keepalive", "params": {"keep_alive_s": -1}}}, "endpoints[0].policy.params.keep_alive_s"),
    ],
)
def test_errors_name_the_field_path(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        endpoint_spec("ep", EndpointFields.model_validate(raw), "endpoints[0]")
    assert str(info.value).startswith(message), str(info.value)


# -- load-balancing endpoints -----------------------------------------------------------------


def test_type_defaults_to_queue_with_no_load_balancing() -> None:
    spec = endpoint_spec("ep", EndpointFields.model_validate({}), "endpoints[0]")
    assert spec.kind is EndpointKind.QUEUE
    assert spec.load_balancing is None


def test_load_balancer_gets_runpods_limits_by_default() -> None:
    spec = endpoint_spec("ep", EndpointFields.model_validate({"type": "load_balancer"}), "endpoints[0]")
    assert spec.kind is EndpointKind.LOAD_BALANCER
    assert spec.load_balancing == LoadBalancingSpec(
        concurrency_target=1, max_concurrency=4, hold_timeout_s=120.0, request_timeout_s=330.0
    )


def test_load_balancer_fields_are_mapped() -> None:
    raw = {"type": "load_balancer", "concurrency_target": 2, "max_concurrency": 8, "hold_timeout_s": 30, "request_timeout_s": 60}
    spec = endpoint_spec("ep", EndpointFields.model_validate(raw), "endpoints[0]")
    assert spec.load_balancing == LoadBalancingSpec(2, 8, 30.0, 60.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_concurrency": 4}, "endpoints[0].max_concurrency applies only to `type: load_balancer` endpoints, was 4"),
        ({"type": "queue", "hold_timeout_s": 5}, "endpoints[0].hold_timeout_s applies only to `type: load_balancer` endpoints, was 5.0"),
        ({"type": "load_balancer", "concurrency_target": 0}, "endpoints[0].concurrency_target must be an integer >= 1, was 0"),
        ({"type": "load_balancer", "concurrency_target": 5}, "endpoints[0].max_concurrency cannot be below concurrency_target (5), was 4"),
        ({"type": "load_balancer", "hold_timeout_s": -1}, "endpoints[0].hold_timeout_s cannot be negative, was -1.0"),
        ({"type": "load_balancer", "request_timeout_s": 0}, "endpoints[0].request_timeout_s must be positive, was 0.0"),
    ],
)
def test_load_balancing_errors_name_field_and_value(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        endpoint_spec("ep", EndpointFields.model_validate(raw), "endpoints[0]")
    assert str(info.value) == message


def test_unknown_type_is_refused_in_a_scenario(tmp_path: Path) -> None:
    raw = {"endpoints": [{"id": "a", "type": "proxy", "workload": {"kind": "poisson", "rate_per_s": 1}}]}
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw, tmp_path)
    assert str(info.value).startswith("endpoints[0].type must be 'queue' or 'load_balancer'"), str(info.value)
    assert "'proxy'" in str(info.value)


def test_load_balancing_spec_validates_itself() -> None:
    with pytest.raises(ConfigError, match="max_concurrency cannot be below concurrency_target"):
        LoadBalancingSpec(concurrency_target=3, max_concurrency=2)
    with pytest.raises(ConfigError, match="concurrency_target must be an integer >= 1, was True"):
        LoadBalancingSpec(concurrency_target=True)
    with pytest.raises(ConfigError, match="load_balancing applies only to type: load_balancer"):
        EndpointSpec("ep", load_balancing=LoadBalancingSpec())
    assert EndpointSpec("ep", kind=EndpointKind.LOAD_BALANCER).load_balancing == LoadBalancingSpec()
    assert EndpointSpec("ep", kind="load_balancer").kind is EndpointKind.LOAD_BALANCER  # type: ignore[arg-type]


def test_policies_size_a_load_balancer_by_its_concurrency_target() -> None:
    raw = {"type": "load_balancer", "concurrency_target": 3, "max_concurrency": 6}
    assert endpoint_spec("ep", EndpointFields.model_validate(raw), "endpoints[0]").concurrency_per_worker == 3
    with pytest.raises(ConfigError) as info:
        endpoint_spec("ep", EndpointFields.model_validate({**raw, "concurrency_per_worker": 2}), "endpoints[0]")
    assert str(info.value) == (
        "endpoints[0].concurrency_per_worker is set by concurrency_target (3) on a load-balancing endpoint: "
        "leave it unset, was 2"
    )
