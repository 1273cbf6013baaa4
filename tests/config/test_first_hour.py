"""A newcomer's mistakes get answers: unknown fields list the valid names, YAML errors say why and where, defaults are announced."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import gpuserve
from gpuserve.config.endpoints import load_endpoints, parse_endpoints
from gpuserve.config.scenario import load_scenario, scenario_from_dict
from gpuserve.core.errors import ConfigError


def _scenario(**endpoint: object) -> dict[str, object]:
    ep = {"id": "a", "gpu_type": "A100", "workload": {"kind": "poisson", "rate_per_s": 0.1}, **endpoint}
    return {"duration_s": 60, "billing": {"prices_usd_per_gpu_s": {"A100": 0.001}}, "endpoints": [ep]}


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ({"scaling": {"max_worker": 2}}, "endpoints[0].scaling.max_worker is not a known field (known: extra_workers, flash_boot, idle_timeout_s, max_workers,"),
        ({"workload": {"kind": "poisson", "rate": 1}}, "endpoints[0].workload.rate is not a known field (known: kind, rate_per_s)"),
        ({"service": {"kind": "lognormal", "mean": 1}}, "endpoints[0].service.mean is not a known field (known: batching, kind, mean_s, sigma)"),
        ({"cold_start": {"total": 2}}, "endpoints[0].cold_start.total is not a known field (known: baked_image_bandwidth_gb_s,"),
    ],
)
def test_an_unknown_scenario_field_lists_the_valid_names(endpoint: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(_scenario(**endpoint), Path("."))
    assert str(info.value).startswith(message), str(info.value)


def test_an_unknown_top_level_or_billing_field_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"^durations is not a known field \(known: account_max_workers, azure_trace, billing, .*duration_s"):
        scenario_from_dict({**_scenario(), "durations": 5}, Path("."))
    with pytest.raises(ConfigError, match=r"^billing.price is not a known field \(known: active_discount, basis, "):
        scenario_from_dict({**_scenario(), "billing": {"price": 1}}, Path("."))


def test_an_unknown_endpoints_yaml_setting_lists_the_valid_names(tmp_path: Path) -> None:
    handler = tmp_path / "h.py"
    handler.write_text("def handler(job):\n    return 1\n")
    with pytest.raises(ConfigError, match=r"endpoints\[0\].scalng is not a known setting \(known: .*scaling"):
        parse_endpoints({"endpoints": [{"id": "a", "handler": str(handler), "scalng": {}}]}, tmp_path)
    with pytest.raises(ConfigError, match=r"endpoints.a.scaling.max_worker is not a known setting \(known: extra_workers, flash_boot, "):
        parse_endpoints({"endpoints": {"a": {"handler": str(handler), "scaling": {"max_worker": 1}}}}, tmp_path)
    with pytest.raises(ConfigError, match=r"server.prot is not a known setting \(known: .*port"):
        parse_endpoints({"server": {"prot": 1}, "endpoints": [{"id": "a", "handler": str(handler)}]}, tmp_path)


def test_a_yaml_syntax_error_gives_the_reason_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nendpoints:\n  - id: a\n   workload: {kind: poisson}\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: expected <block end>, but found .* at line 4, column 4"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match=r"endpoints file is not valid YAML: .* at line 4, column 4"):
        load_endpoints(bad)


def test_cold_start_total_s_is_the_whole_start_and_refuses_stage_fields() -> None:
    scenario = scenario_from_dict(_scenario(cold_start={"total_s": 2.5}), Path("."))
    profile = scenario.config.endpoints[0].cold_start
    stages = profile.stages(image_wait_s=None, flash=False)
    assert stages.total_s == 2.5 and profile.flash_resume_s == 2.0  # flash boot keeps its default
    with pytest.raises(ConfigError, match=r"endpoints\[0\].cold_start.total_s is the whole cold start: give it without model_size_gb, was 2.5"):
        scenario_from_dict(_scenario(cold_start={"total_s": 2.5, "model_size_gb": 10}), Path("."))


def test_missing_duration_and_prices_are_reported_not_silent() -> None:
    assert scenario_from_dict(_scenario(), Path(".")).warnings == ()
    raw = _scenario()
    raw.pop("duration_s")
    raw["billing"] = {}
    notes = scenario_from_dict(raw, Path(".")).warnings
    assert notes == (
        "duration_s is not set: simulating 3600 s of traffic (set duration_s)",
        "billing.prices_usd_per_gpu_s has no price for A100 (endpoints[0].gpu_type): its workers cost 0 USD",
    )


def test_simulate_warns_and_the_cli_prints_the_warning(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gpuserve.cli import app

    path = tmp_path / "s.yaml"
    path.write_text("endpoints:\n  - {id: a, gpu_type: H100, workload: {kind: poisson, rate_per_s: 0.01}, cold_start: {total_s: 1}}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpuserve.simulate(path, {"duration_s": 60}, plots=False)
    assert [str(w.message) for w in caught] == ["billing.prices_usd_per_gpu_s has no price for H100 (endpoints[0].gpu_type): its workers cost 0 USD"]
    result = CliRunner().invoke(app, ["simulate", str(path), "--out", str(tmp_path / "o"), "--no-plots", "--records", "none"])
    assert result.exit_code == 0, result.output
    assert "warning: duration_s is not set: simulating 3600 s" in result.output
