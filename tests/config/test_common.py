"""The endpoint fields shared by scenario files and endpoints.yaml."""

from __future__ import annotations

import pytest

from gpuserve.config.common import EndpointFields, endpoint_spec
from gpuserve.core.errors import ConfigError


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
