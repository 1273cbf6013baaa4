"""endpoints.yaml: valid files become Deployments with hashed keys; every mistake names the field and the value."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpuserve.config.endpoints import load_endpoints, parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import ScalerType

HANDLER = str(Path(__file__).parent / "handlers" / "echo_runpod.py")


def test_list_form_with_defaults_and_hashed_keys(tmp_path):
    (tmp_path / "h.py").write_text("")
    cfg = parse_endpoints(
        {
            "api_keys": ["sk-all"],
            "endpoints": [
                {
                    "id": "echo",
                    "handler": "h.py",
                    "sdk": "runpod",
                    "scaling": {"max_workers": 5, "scaler": "request_count", "scaler_value": 2},
                    "api_keys": ["sk-echo", "sha256:" + "a" * 64],
                }
            ],
        },
        tmp_path,
    )
    (ep,) = cfg.endpoints
    assert ep.deployment.handler_path == str((tmp_path / "h.py").resolve())
    assert ep.deployment.sdk == "runpod"
    assert ep.spec.scaling.max_workers == 5 and ep.spec.scaling.scaler is ScalerType.REQUEST_COUNT
    assert ep.spec.policy.name == "runpod_request_count"
    assert ep.key_hashes == {hashlib.sha256(b"sk-echo").hexdigest(), "a" * 64}
    assert cfg.global_key_hashes == {hashlib.sha256(b"sk-all").hexdigest()}
    assert cfg.server.port == 8000 and cfg.data_dir() == tmp_path.resolve() / ".gpuserve"


def test_mapping_form_and_file_loading(tmp_path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(f"server: {{port: 9000}}\nendpoints:\n  a: {{handler: {HANDLER}}}\n  b: {{handler: {HANDLER}}}\n")
    cfg = load_endpoints(path)
    assert [e.spec.endpoint_id for e in cfg.endpoints] == ["a", "b"] and cfg.server.port == 9000


@pytest.mark.parametrize(
    ("doc", "field", "value"),
    [
        ({"endpoints": [{"id": "x", "handler": HANDLER, "scaling": {"max_workers": -1}}]}, "endpoints[0].scaling.max_workers", "-1"),
        (
            {"endpoints": [{"id": "x", "handler": HANDLER, "scaling": {"min_workers": 2, "max_workers": 1}}]},
            "endpoints[0].scaling.max_workers",
            "1",
        ),
        ({"endpoints": [{"id": "x", "handler": HANDLER, "scalng": {}}]}, "endpoints[0].scalng", "{}"),
        ({"endpoints": [{"id": "x", "handler": HANDLER, "policy": {"name": "nope"}}]}, "endpoints[0].policy.name", "'nope'"),
        ({"endpoints": [{"id": "x"}]}, "endpoints[0].handler", "None"),
        ({"endpoints": [{"id": "x", "handler": "missing.py"}]}, "endpoints[0].handler", "'missing.py'"),
        ({"endpoints": [{"id": "bad id!", "handler": HANDLER}]}, "endpoints[0].id", "'bad id!'"),
        ({"endpoints": {"x": {"handler": HANDLER, "concurrency_per_worker": 0}}}, "endpoints.x.concurrency_per_worker", "0"),
        (
            {"endpoints": [{"id": "x", "handler": HANDLER}, {"id": "x", "handler": HANDLER}]},
            "endpoints[1].id",
            "'x'",
        ),
        ({"endpoints": []}, "endpoints", "[]"),
        ({"server": {"port": 70000}, "endpoints": [{"id": "x", "handler": HANDLER}]}, "server.port", "70000"),
    ],
)
def test_errors_name_the_field_and_the_value(doc, field, value, tmp_path):
    with pytest.raises(ConfigError) as exc:
        parse_endpoints(doc, tmp_path)
    assert exc.value.field == field
    assert str(exc.value).startswith(field) and str(exc.value).endswith(f"was {value}")


def test_unreadable_or_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_endpoints(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_endpoints(bad)


def test_a_billing_section_as_in_a_scenario_prices_the_live_ledger(tmp_path):
    ep = {"id": "x", "handler": HANDLER}
    assert parse_endpoints({"endpoints": [ep]}).billing.preset == "runpod"  # the default
    cfg = parse_endpoints(
        {"billing": {"preset": "runpod_state_table", "prices_usd_per_gpu_s": {"A100": 0.002}, "rounding_s": 0}, "endpoints": [ep]}
    )
    assert cfg.billing.preset == "runpod_state_table" and cfg.billing.rounding_s == 0
    assert cfg.billing.price_usd_per_s("A100") == 0.002
    from gpuserve.platform import Platform

    p = Platform.from_config(cfg, data_dir=tmp_path, backend=None, port=0)
    try:
        assert p.runtime.ledger.model == cfg.billing
    finally:
        p._sock.close()  # never started: nothing else to stop
        p.store.close()
    for billing, field in (
        ({"preset": "nope"}, "billing.preset"),
        ({"prices_usd_per_gpu_s": {"A100": -1}}, "billing.prices_usd_per_gpu_s.A100"),
        ({"preset": "aws_lambda"}, "endpoints[0].memory_gb"),  # GB-seconds need the endpoint's memory
    ):
        with pytest.raises(ConfigError) as exc:
            parse_endpoints({"billing": billing, "endpoints": [ep]})
        assert field in str(exc.value), exc.value
