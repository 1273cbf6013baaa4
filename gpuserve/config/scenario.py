"""Scenario YAML -> validated pydantic models -> frozen core types and simulator models.

Every error names the field path and the value, e.g.
`endpoints[0].scaling.idle_timeout_s cannot be negative, was -3`.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuserve.config.common import EndpointFields, endpoint_spec
from gpuserve.core.billing import BILLING_PRESETS, BillingBasis, BillingModel, billing_preset
from gpuserve.core.errors import ConfigError
from gpuserve.sim.coldstart import ColdStartProfile, load_profile, profile_from_mapping
from gpuserve.sim.engine import SimConfig, SimEndpoint
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.service import Constant, Empirical, Exponential, Lognormal, ServiceTime, load_samples
from gpuserve.sim.workload import (
    AzureCounts,
    Bursty,
    Diurnal,
    Poisson,
    Replay,
    Workload,
    load_azure_functions,
    load_timestamps_csv,
)

__all__ = [
    "Scenario",
    "apply_overrides",
    "load_scenario",
    "parse_assignment",
    "scenario_from_dict",
    "sweep_points",
]

NonNeg = Annotated[float, Field(ge=0)]
Pos = Annotated[float, Field(gt=0)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoissonModel(_M):
    kind: Literal["poisson"]
    rate_per_s: NonNeg


class BurstyModel(_M):
    kind: Literal["bursty"]
    rate_on_per_s: NonNeg
    rate_off_per_s: NonNeg = 0.0
    mean_on_s: Pos = 60.0
    mean_off_s: Pos = 600.0
    start_on: bool = False


class DiurnalModel(_M):
    kind: Literal["diurnal"]
    mean_rate_per_s: NonNeg
    amplitude: Annotated[float, Field(ge=0, le=1)] = 0.8
    period_s: Pos = 86_400.0
    phase_s: float = 0.0


class CsvModel(_M):
    kind: Literal["csv"]
    path: str
    column: str | None = None
    time_scale: Pos = 1.0


WorkloadModel = Annotated[PoissonModel | BurstyModel | DiurnalModel | CsvModel, Field(discriminator="kind")]


class ConstantModel(_M):
    kind: Literal["constant"]
    value_s: NonNeg


class ExponentialModel(_M):
    kind: Literal["exponential"]
    mean_s: Pos


class LognormalModel(_M):
    kind: Literal["lognormal"]
    mean_s: Pos
    sigma: NonNeg = 0.5


class EmpiricalModel(_M):
    kind: Literal["empirical"]
    samples_s: list[NonNeg] | None = None
    path: str | None = None


ServiceModel = Annotated[
    ConstantModel | ExponentialModel | LognormalModel | EmpiricalModel, Field(discriminator="kind")
]


class ColdStartModel(_M):
    """A named profile (scenarios/profiles/NAME.yaml) plus per-field overrides."""

    profile: str | None = None
    image: str | None = None
    image_size_gb: NonNeg | None = None
    pull_bandwidth_gb_s: Pos | None = None
    container_start_s: NonNeg | None = None
    runtime_init_s: NonNeg | None = None
    model_size_gb: NonNeg | None = None
    model_source: Literal["host_cache", "baked_image", "network_volume"] | None = None
    host_cache_bandwidth_gb_s: Pos | None = None
    baked_image_bandwidth_gb_s: Pos | None = None
    network_volume_bandwidth_gb_s: Pos | None = None
    flash_resume_s: NonNeg | None = None
    flash_retention_s: NonNeg | None = None
    platform_start_s: NonNeg | None = None
    dispatch_s: NonNeg | None = None
    result_post_s: NonNeg | None = None


class EndpointTemplate(EndpointFields):
    service: ServiceModel = Field(default_factory=lambda: ExponentialModel(kind="exponential", mean_s=1.0))
    cold_start: ColdStartModel = Field(default_factory=ColdStartModel)


class EndpointModel(EndpointTemplate):
    id: Annotated[str, Field(min_length=1)]
    workload: WorkloadModel


class HostModel(_M):
    name: Annotated[str, Field(min_length=1)]
    count: Annotated[int, Field(ge=1)] = 1
    gpus: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class BillingConfig(_M):
    """A billing preset (gpuserve.core.billing.BILLING_PRESETS) plus any field overridden; unset fields keep the preset's."""

    preset: str = "runpod"
    basis: Literal["worker_time", "execution"] | None = None
    prices_usd_per_gpu_s: dict[str, NonNeg] = Field(default_factory=dict)
    price_usd_per_gb_s: NonNeg | None = None
    # Per worker state: true, false or while_processing; merged onto the preset's table.
    states: dict[str, bool | Literal["while_processing"]] = Field(default_factory=dict)
    parked_billed: bool | None = None
    rounding_s: NonNeg | None = None
    active_discount: Annotated[float, Field(ge=0, le=1)] | None = None
    per_request_usd: NonNeg | None = None


class AzureTraceModel(_M):
    """Azure Functions 2019 invocation counts: each function (row) becomes its own endpoint."""

    path: str
    spread: Literal["uniform", "poisson", "even"] = "uniform"
    start_minute: Annotated[int, Field(ge=0)] = 0
    minutes: Annotated[int, Field(ge=1)] | None = None
    max_functions: Annotated[int, Field(ge=1)] | None = None
    min_invocations: Annotated[int, Field(ge=0)] = 1
    endpoint: EndpointTemplate = Field(default_factory=EndpointTemplate)


class ScenarioModel(_M):
    name: str = "scenario"
    description: str = ""
    duration_s: Pos | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    replications: Annotated[int, Field(ge=1)] = 1  # runs per setting, seeds derived from `seed`
    consult_on_arrival: Literal["auto", "always"] = "auto"
    drain_limit_s: NonNeg = 3600.0
    hosts: list[HostModel] = Field(default_factory=list)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    endpoints: list[EndpointModel] = Field(default_factory=list)
    azure_trace: AzureTraceModel | None = None
    sweep: dict[str, list[Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the simulator config plus what the CLI needs around it."""

    name: str
    description: str
    config: SimConfig
    sweep: dict[str, list[Any]]
    raw: dict[str, Any]
    base_dir: Path
    replications: int = 1


# -- errors -------------------------------------------------------------------------------


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"poisson", "bursty", "diurnal", "csv", "constant", "exponential", "lognormal", "empirical"}:
            continue  # discriminated-union tag pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out or "scenario"


def _problem(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "greater_than_equal":
        return "cannot be negative" if ctx.get("ge") == 0 else f"must be >= {ctx.get('ge')}"
    if kind == "greater_than":
        return "must be positive" if ctx.get("gt") == 0 else f"must be > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"kind must be one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "needs a 'kind'"
    return str(err["msg"]).replace("Input should be", "must be").replace("Value error, ", "")


def _from_validation(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    value = err.get("input")
    if err["type"] == "missing":
        value = None
    return ConfigError(_loc_path(err["loc"]), value, _problem(err))


def _prefixed(prefix: str, exc: ConfigError) -> ConfigError:
    field = exc.field if exc.field.startswith(prefix) else f"{prefix}.{exc.field}"
    return ConfigError(field, exc.value, exc.problem)


# -- overrides (--set / --sweep) ----------------------------------------------------------


def parse_assignment(text: str, flag: str = "--set") -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(flag, text, "must look like key=value (e.g. endpoints.0.scaling.max_workers=5)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(flag, text, "has an empty key")
    return key, value


def _parse_value(text: str) -> Any:
    # YAML scalars: 5 -> int, 0.5 -> float, true -> bool, anything else stays a string.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_path(node: Any, parts: list[str], value: Any, key: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head == "*":
            targets = list(range(len(node)))
        elif re.fullmatch(r"\d+", head) and int(head) < len(node):
            targets = [int(head)]
        else:
            raise ConfigError(key, head, f"is not an index of a list of {len(node)}")
        for i in targets:
            if rest:
                _set_path(node[i], rest, value, key)
            else:
                node[i] = value
        return
    if not isinstance(node, dict):
        raise ConfigError(key, head, "cannot be set: its parent is not a mapping")
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if child is None:
        child = node[head] = {}
    _set_path(child, rest, value, key)


def apply_overrides(raw: dict[str, Any], assignments: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Set dotted paths in a copy of the raw scenario (`endpoints.0.scaling.max_workers`;
    `endpoints.*.x` sets x on every endpoint; `endpoint.x` is short for `endpoints.*.x`)."""
    out = copy.deepcopy(raw)
    for key, value in assignments:
        path = key
        if path.startswith("endpoint."):
            path = "endpoints.*." + path[len("endpoint.") :]
        parsed = _parse_value(value) if isinstance(value, str) else value
        _set_path(out, path.split("."), parsed, key)
    return out


def sweep_points(sweep: dict[str, list[Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The cartesian product of swept values: (label, assignments) per point."""
    if not sweep:
        return []
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        if len(keys) == 1:
            label = str(combo[0])
        else:
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, combo, strict=True))
        points.append((label, list(zip(keys, combo, strict=True))))
    return points


# -- building -----------------------------------------------------------------------------


def _workload(model: Any, base: Path, prefix: str) -> Workload:
    try:
        if isinstance(model, PoissonModel):
            return Poisson(model.rate_per_s)
        if isinstance(model, BurstyModel):
            return Bursty(model.rate_on_per_s, model.rate_off_per_s, model.mean_on_s, model.mean_off_s, model.start_on)
        if isinstance(model, DiurnalModel):
            return Diurnal(model.mean_rate_per_s, model.amplitude, model.period_s, model.phase_s)
        assert isinstance(model, CsvModel)
        return Replay(load_timestamps_csv(base / model.path, model.column, model.time_scale))
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field.removeprefix('workload.')}", exc.value, exc.problem) from None


def _service(model: Any, base: Path, prefix: str) -> ServiceTime:
    if isinstance(model, ConstantModel):
        return Constant(model.value_s)
    if isinstance(model, ExponentialModel):
        return Exponential(model.mean_s)
    if isinstance(model, LognormalModel):
        return Lognormal(model.mean_s, model.sigma)
    assert isinstance(model, EmpiricalModel)
    if (model.samples_s is None) == (model.path is None):
        raise ConfigError(f"{prefix}.samples_s", model.samples_s, "give exactly one of samples_s or path")
    try:
        samples = tuple(model.samples_s) if model.samples_s is not None else load_samples(base / str(model.path))
        return Empirical(samples)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field.removeprefix('service.')}", exc.value, exc.problem) from None


def _profile_dirs(base: Path) -> list[Path]:
    dirs = [base / "profiles", base.parent / "profiles", Path.cwd() / "scenarios" / "profiles"]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _cold_start(model: ColdStartModel, base: Path, prefix: str) -> ColdStartProfile:
    fields: dict[str, Any] = {}
    name = "custom"
    if model.profile:
        fields = load_profile(model.profile, _profile_dirs(base), prefix=f"{prefix}.profile")
        name = str(fields.pop("name", model.profile))
    overrides = {k: v for k, v in model.model_dump(exclude={"profile"}).items() if v is not None}
    fields.update(overrides)
    return profile_from_mapping(fields, prefix, name=name)


def _sim_endpoint(eid: str, model: EndpointTemplate, workload: Workload, base: Path, prefix: str) -> SimEndpoint:
    spec = endpoint_spec(eid, model, prefix, base)
    return SimEndpoint(
        spec=spec,
        workload=workload,
        service=_service(model.service, base, f"{prefix}.service"),
        cold_start=_cold_start(model.cold_start, base, f"{prefix}.cold_start"),
    )


def _billing(config: BillingConfig, endpoints: Sequence[SimEndpoint], listed: int) -> BillingModel:
    """The preset with the scenario's overrides; `listed` endpoints come from `endpoints:`, the rest from azure_trace."""
    if config.preset not in BILLING_PRESETS:
        raise ConfigError("billing.preset", config.preset, f"is not a billing preset (known: {', '.join(BILLING_PRESETS)})")
    overrides = {k: v for k, v in config.model_dump(exclude={"preset"}).items() if v is not None and v != {}}
    model = billing_preset(config.preset, **overrides)
    if model.basis is BillingBasis.EXECUTION:
        for i, ep in enumerate(endpoints):
            if ep.spec.memory_gb is None:
                raise ConfigError(
                    f"endpoints[{i}].memory_gb" if i < listed else "azure_trace.endpoint.memory_gb",
                    None, f"is required: billing preset {config.preset} bills GB-seconds of execution"
                )
    return model


def scenario_from_dict(raw: dict[str, Any], base_dir: Path, seed: int | None = None) -> Scenario:
    if not isinstance(raw, dict):
        raise ConfigError("scenario", raw, "must be a mapping at the top level")
    billing_raw = raw.get("billing")
    if isinstance(billing_raw, dict) and "idle_billed" in billing_raw:
        raise ConfigError(
            "billing.idle_billed",
            billing_raw["idle_billed"],
            "was replaced by billing presets: the default preset runpod bills the idle-timeout window; "
            "`preset: runpod_state_table` never bills IDLE; `states: {IDLE: true}` overrides one state",
        )
    try:
        model = ScenarioModel.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    endpoints: list[SimEndpoint] = []
    for i, ep in enumerate(model.endpoints):
        prefix = f"endpoints[{i}]"
        endpoints.append(_sim_endpoint(ep.id, ep, _workload(ep.workload, base_dir, f"{prefix}.workload"), base_dir, prefix))
    duration_s = model.duration_s
    if model.azure_trace is not None:
        trace = model.azure_trace
        functions = load_azure_functions(base_dir / trace.path)
        end_minute = None if trace.minutes is None else trace.start_minute + trace.minutes
        chosen = []
        for fn in functions:
            counts = fn.counts_per_minute[trace.start_minute : end_minute]
            if sum(counts) >= max(1, trace.min_invocations):
                chosen.append((fn, counts))
        chosen.sort(key=lambda fc: -sum(fc[1]))  # busiest functions first
        if trace.max_functions is not None:
            chosen = chosen[: trace.max_functions]
        if not chosen:
            raise ConfigError("azure_trace.min_invocations", trace.min_invocations, "leaves no function to simulate")
        for fn, counts in chosen:
            eid = f"fn-{fn.function[:10]}"
            while any(e.spec.endpoint_id == eid for e in endpoints):
                eid += "x"
            endpoints.append(_sim_endpoint(eid, trace.endpoint, AzureCounts(counts, trace.spread), base_dir, "azure_trace.endpoint"))
        if duration_s is None:
            duration_s = 60.0 * len(chosen[0][1])
    if not endpoints:
        raise ConfigError("endpoints", [], "needs at least one endpoint (or an azure_trace)")
    if duration_s is None:
        replay_ends = [max(e.workload.times_s, default=0.0) for e in endpoints if isinstance(e.workload, Replay)]
        duration_s = max(replay_ends) + 1e-6 if replay_ends and len(replay_ends) == len(endpoints) else 3600.0
    hosts: list[HostSpec] = []
    for h in model.hosts:
        for k in range(h.count):
            hosts.append(HostSpec(h.name if h.count == 1 else f"{h.name}-{k}", h.gpus))
    billing = _billing(model.billing, endpoints, len(model.endpoints))
    config = SimConfig(
        endpoints=tuple(endpoints),
        hosts=tuple(hosts),
        billing=billing,
        duration_s=duration_s,
        seed=model.seed if seed is None else seed,
        consult_on_arrival=model.consult_on_arrival,
        drain_limit_s=model.drain_limit_s,
    )
    return Scenario(model.name, model.description, config, dict(model.sweep), raw, base_dir, model.replications)


def load_scenario(
    path: Path, overrides: Sequence[tuple[str, Any]] = (), seed: int | None = None
) -> Scenario:
    """Read, override (--set), validate and build a scenario file."""
    if not path.is_file():
        raise ConfigError("scenario", str(path), "is not a file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise ConfigError(f"scenario {where}", str(path), "is not valid YAML") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("scenario", type(raw).__name__, "must be a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    return scenario_from_dict(raw, path.parent, seed=seed)
