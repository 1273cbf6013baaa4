"""Scenario YAML: shipped files load, overrides apply, and every bad value is named with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuserve.config.scenario import apply_overrides, load_scenario, scenario_from_dict, sweep_points
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import ScalerType
from gpuserve.sim.coldstart import ModelSource
from gpuserve.sim.service import Empirical, Lognormal
from gpuserve.sim.traces.azure2019 import write_synthetic
from gpuserve.sim.workload import AzureCounts, Bursty, Diurnal, Poisson, TraceReplay

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


def _base() -> dict[str, Any]:
    return {
        "name": "t",
        "duration_s": 100,
        "endpoints": [
            {
                "id": "a",
                "gpu_type": "A100",
                "scaling": {"max_workers": 2, "idle_timeout_s": 5, "scaler": "request_count", "scaler_value": 1},
                "workload": {"kind": "poisson", "rate_per_s": 0.5},
                "service": {"kind": "exponential", "mean_s": 2.0},
            }
        ],
    }


@pytest.mark.parametrize("name", ["quickstart", "bursty", "diurnal", "azure_trace", "policy_comparison", "lb_vs_queue"])
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.config.endpoints
    assert scenario.config.duration_s > 0


def test_quickstart_becomes_core_types_and_models() -> None:
    sc = load_scenario(SCENARIOS / "quickstart.yaml")
    (ep,) = sc.config.endpoints
    assert ep.spec.endpoint_id == "chat" and ep.spec.gpu_type == "A100"
    assert ep.spec.scaling.scaler is ScalerType.REQUEST_COUNT and ep.spec.scaling.max_workers == 4
    assert isinstance(ep.workload, Poisson) and isinstance(ep.service, Lognormal)
    assert ep.cold_start.name == "small" and ep.cold_start.model_source is ModelSource.HOST_CACHE
    assert [h.name for h in sc.config.hosts] == ["host"] and sc.config.hosts[0].gpus["A100"] == 4


def test_default_profile_numbers_and_overrides() -> None:
    sc = load_scenario(SCENARIOS / "diurnal.yaml")
    cs = sc.config.endpoints[0].cold_start
    assert cs.name == "default" and cs.image_size_gb == 20.2
    assert cs.model_source is ModelSource.HOST_CACHE  # overridden in the scenario
    stages = cs.stages(image_wait_s=None, flash=False)
    assert stages.model_load_s == pytest.approx(15.0 / 4.5)
    assert stages.image_pull_s == pytest.approx(20.2 / 0.0374)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("endpoints.0.scaling.idle_timeout_s", -3, "endpoints[0].scaling.idle_timeout_s cannot be negative, was -3"),
        ("endpoints.0.scaling.max_workers", -1, "endpoints[0].scaling.max_workers cannot be negative, was -1"),
        ("endpoints.0.scaling.min_workers", 5, "endpoints[0].scaling.max_workers cannot be below min_workers (5), was 2"),
        ("endpoints.0.scaling.scaler", "fastest", "endpoints[0].scaling.scaler must be 'queue_delay' or 'request_count', was 'fastest'"),
        ("endpoints.0.workload.rate_per_s", -1, "endpoints[0].workload.rate_per_s cannot be negative, was -1"),
        ("endpoints.0.workload.kind", "storm", "endpoints[0].workload kind must be one of"),
        ("endpoints.0.service.mean_s", 0, "endpoints[0].service.mean_s must be positive, was 0"),
        ("endpoints.0.concurrency_per_worker", 0, "endpoints[0].concurrency_per_worker must be >= 1, was 0"),
        ("endpoints.0.policy.name", "magic", "endpoints[0].policy.name is not a known policy"),
        ("endpoints.0.policy.params", {"keep": 1}, "endpoints[0].policy.params.keep is not a parameter"),
        ("endpoints.0.cold_start.profile", "nope", "endpoints[0].cold_start.profile is not a profile"),
        ("endpoints.0.cold_start.pull_bandwidth_gb_s", 0, "endpoints[0].cold_start.pull_bandwidth_gb_s must be positive, was 0"),
        ("endpoints.0.colour", "red", "endpoints[0].colour is not a known field (known: cold_start, concurrency_per_worker,"),
        ("billing.active_discount", 1.5, "billing.active_discount must be <= 1.0, was 1.5"),
        ("duration_s", 0, "duration_s must be positive, was 0"),
    ],
)
def test_bad_values_name_the_field_path_and_value(path: str, value: object, message: str) -> None:
    raw = apply_overrides(_base(), [(path, value)])
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw, SCENARIOS)
    assert str(info.value).startswith(message), str(info.value)


def test_gpu_type_no_host_has() -> None:
    raw = _base() | {"hosts": [{"name": "h", "gpus": {"H100": 8}}]}
    with pytest.raises(ConfigError, match=r"endpoints\[0\].gpu_type no host has 1 GPU\(s\) of this type, was 'A100'"):
        scenario_from_dict(raw, SCENARIOS)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        load_scenario(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [\n  - {id: a\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_scenario(bad)


def test_overrides_dotted_wildcard_and_shorthand() -> None:
    raw = _base()
    raw["endpoints"].append(dict(raw["endpoints"][0], id="b"))
    out = apply_overrides(raw, [("endpoints.1.scaling.max_workers", "5"), ("endpoint.scaling.idle_timeout_s", "60")])
    assert out["endpoints"][1]["scaling"]["max_workers"] == 5
    assert [e["scaling"]["idle_timeout_s"] for e in out["endpoints"]] == [60, 60]
    assert raw["endpoints"][0]["scaling"]["idle_timeout_s"] == 5  # the original is untouched
    with pytest.raises(ConfigError, match="is not an index of a list of 2"):
        apply_overrides(raw, [("endpoints.7.scaling.max_workers", "1")])


def test_sweep_points_are_the_product() -> None:
    points = sweep_points({"endpoint.scaling.idle_timeout_s": [5, 60], "endpoint.scaling.max_workers": [1, 2]})
    assert len(points) == 4
    assert points[0] == ("idle_timeout_s=5, max_workers=1", [("endpoint.scaling.idle_timeout_s", 5), ("endpoint.scaling.max_workers", 1)])


def test_workload_and_service_kinds(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n10.0\n12.5\n11.0\n")
    (tmp_path / "s.txt").write_text("seconds\n1.0\n2.0\n")
    raw = _base()
    ep = raw["endpoints"][0]
    raw["endpoints"] = [
        ep | {"id": "b", "workload": {"kind": "bursty", "rate_on_per_s": 2.0}},
        ep | {"id": "d", "workload": {"kind": "diurnal", "mean_rate_per_s": 1.0}},
        ep | {"id": "c", "workload": {"kind": "csv", "path": "t.csv", "column": "timestamp"}, "service": {"kind": "empirical", "path": "s.txt"}},
    ]
    sc = scenario_from_dict(raw, tmp_path)
    b, d, c = sc.config.endpoints
    assert isinstance(b.workload, Bursty) and isinstance(d.workload, Diurnal)
    assert isinstance(c.workload, TraceReplay) and c.workload.times_s.tolist() == [0.0, 1.0, 2.5]
    assert isinstance(c.service, Empirical) and c.service.samples_s == (1.0, 2.0)


def test_azure_trace_rows_become_endpoints(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "inv.csv", n_functions=5, seed=1, minutes=30)
    raw = {
        "azure_trace": {
            "path": "inv.csv",
            "max_functions": 3,
            "endpoint": {"gpu_type": "A10G", "service": {"kind": "constant", "value_s": 1.0}},
        },
        "hosts": [{"name": "n", "count": 2, "gpus": {"A10G": 2}}],
    }
    sc = scenario_from_dict(raw, tmp_path)
    assert len(sc.config.endpoints) == 3
    assert all(isinstance(e.workload, AzureCounts) for e in sc.config.endpoints)
    assert sc.config.duration_s == 30 * 60
    assert [h.name for h in sc.config.hosts] == ["n-0", "n-1"]
    totals = [sum(e.workload.counts_per_minute) for e in sc.config.endpoints]  # type: ignore[attr-defined]
    assert totals == sorted(totals, reverse=True)  # busiest first


def test_azure_header_is_checked(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"azure_trace\.path .*HashOwner"):
        scenario_from_dict({"azure_trace": {"path": "x.csv"}}, tmp_path)


def test_seed_argument_overrides_the_file() -> None:
    raw = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    assert scenario_from_dict(raw, SCENARIOS, seed=99).config.seed == 99


def test_billing_picks_a_preset_and_overrides_fields() -> None:
    from gpuserve.core.billing import BillingBasis, StateBilling
    from gpuserve.core.types import WorkerState

    default = scenario_from_dict(_base(), SCENARIOS).config.billing
    assert default.preset == "runpod" and default.states[WorkerState.IDLE] is StateBilling.YES
    raw = _base()
    # YAML reads `no` as false, so the state table is written as in Runpod's docs.
    raw["billing"] = yaml.safe_load("{preset: always_on, prices_usd_per_gpu_s: {A100: 0.001}, states: {THROTTLED: no}, rounding_s: 60}")
    model = scenario_from_dict(raw, SCENARIOS).config.billing
    assert model.preset == "always_on" and model.parked_billed and model.rounding_s == 60
    assert model.states[WorkerState.THROTTLED] is StateBilling.NO and model.states[WorkerState.IDLE] is StateBilling.YES
    assert model.price_usd_per_s("A100") == 0.001
    raw["billing"] = {"preset": "aws_lambda"}
    raw["endpoints"][0]["memory_gb"] = 10
    lam = scenario_from_dict(raw, SCENARIOS)
    assert lam.config.billing.basis is BillingBasis.EXECUTION and lam.config.endpoints[0].spec.memory_gb == 10


@pytest.mark.parametrize(
    ("billing", "message"),
    [
        ({"preset": "modal"}, "billing.preset is not a billing preset (known: runpod, runpod_state_table, always_on, aws_lambda), was 'modal'"),
        ({"preset": "aws_lambda"}, "endpoints[0].memory_gb is required: billing preset aws_lambda bills GB-seconds of execution"),
        ({"idle_billed": True}, "billing.idle_billed was replaced by billing presets"),
        ({"states": {"PAUSED": True}}, "billing.states.PAUSED is not a worker state"),
        ({"rounding_s": -1}, "billing.rounding_s cannot be negative, was -1"),
    ],
)
def test_bad_billing_is_named(billing: dict[str, Any], message: str) -> None:
    raw = _base()
    raw["billing"] = billing
    with pytest.raises(ConfigError) as err:
        scenario_from_dict(raw, SCENARIOS)
    assert message in str(err.value)
