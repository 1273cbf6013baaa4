"""Scenario YAML -> validated pydantic models -> frozen core types and simulator models.

Every error names the field path and the value, e.g.
`endpoints[0].scaling.idle_timeout_s cannot be negative, was -3`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuserve.config.common import (
    BillingConfig,
    EndpointFields,
    billing_model,
    endpoint_spec,
    known_fields,
    yaml_problem,
)
from gpuserve.core.billing import CPU_PRICE_KEY, BillingBasis, BillingModel
from gpuserve.core.errors import ConfigError
from gpuserve.sim.coldstart import ColdStartProfile, load_profile, profile_from_mapping
from gpuserve.sim.engine import SimConfig, SimEndpoint
from gpuserve.sim.failures import FailureModel, HostFailure, Update
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.service import (
    Batched,
    BatchingCurve,
    Constant,
    Empirical,
    Exponential,
    Lognormal,
    ServiceTime,
    Tokens,
    load_samples,
)
from gpuserve.sim.traces import (
    InvocationTable,
    choose_functions,
    read_arrivals_csv,
    read_durations,
    read_invocations,
    read_invocations_2021,
    read_llm_trace,
    read_memory,
)
from gpuserve.sim.workload import AzureCounts, Bursty, Diurnal, Poisson, Replay, TraceReplay, Workload

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
    """Arrival times from a CSV column (numbers times time_scale, or ISO-8601), optionally each with its duration."""

    kind: Literal["csv"]
    path: str
    column: str | None = None
    time_scale: Pos = 1.0
    duration_column: str | None = None
    duration_scale: Pos = 1.0
    start_s: NonNeg = 0.0
    window_s: Pos | None = None
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0


WorkloadModel = Annotated[PoissonModel | BurstyModel | DiurnalModel | CsvModel, Field(discriminator="kind")]


class _ServiceBase(_M):
    # Per-request speed by concurrency on a worker, {concurrency: speed}, e.g. {1: 1.0, 8: 0.6}.
    batching: dict[Annotated[int, Field(ge=1)], Pos] | None = None


class ConstantModel(_ServiceBase):
    kind: Literal["constant"]
    value_s: NonNeg


class ExponentialModel(_ServiceBase):
    kind: Literal["exponential"]
    mean_s: Pos


class LognormalModel(_ServiceBase):
    kind: Literal["lognormal"]
    mean_s: Pos
    sigma: NonNeg = 0.5


class EmpiricalModel(_ServiceBase):
    kind: Literal["empirical"]
    samples_s: list[NonNeg] | None = None
    path: str | None = None


class TokensModel(_ServiceBase):
    """LLM requests timed from their tokens (needs trace format azure_llm)."""

    kind: Literal["tokens"]
    prefill_tokens_per_s: Pos
    decode_tokens_per_s: Pos
    overhead_s: NonNeg = 0.0


ServiceModel = Annotated[
    ConstantModel | ExponentialModel | LognormalModel | EmpiricalModel | TokensModel, Field(discriminator="kind")
]


class StageDistModel(_M):
    """One cold-start stage as a distribution (gpuserve.sim.coldstart.StageDist)."""

    kind: Literal["lognormal", "empirical"]
    median_s: NonNeg | None = None
    sigma: NonNeg = 0.0
    samples_s: list[NonNeg] | None = None


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
    # One-number shorthand: the whole start takes total_s (no image pull, no model load).
    total_s: NonNeg | None = None
    flash_resume_s: NonNeg | None = None
    flash_retention_s: NonNeg | None = None
    platform_start_s: NonNeg | None = None
    dispatch_s: NonNeg | None = None
    result_post_s: NonNeg | None = None
    # stage name -> distribution; replaces the profile's whole `distributions` mapping
    distributions: dict[str, StageDistModel] | None = None


class FailuresModel(_M):
    """How the endpoint's workers crash (gpuserve.sim.failures.FailureModel)."""

    crash_per_start: Annotated[float, Field(ge=0, le=1)] = 0.0
    crash_per_running_hour: NonNeg = 0.0
    crash_times_s: list[NonNeg] = Field(default_factory=list)


class JobsModel(_M):
    """Which fraction of the workload's jobs carries each live job option (gpuserve.sim.joboptions)."""

    execution_timeout_s: Pos | None = None
    execution_timeout_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0
    ttl_s: Pos | None = None
    ttl_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0
    low_priority_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    cancel_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    patience: ServiceModel | None = None  # seconds from submission until the client cancels
    runsync_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    runsync_wait_s: Pos = 90.0


class EndpointTemplate(EndpointFields):
    service: ServiceModel = Field(default_factory=lambda: ExponentialModel(kind="exponential", mean_s=1.0))
    cold_start: ColdStartModel = Field(default_factory=ColdStartModel)
    failures: FailuresModel = Field(default_factory=FailuresModel)
    jobs: JobsModel = Field(default_factory=JobsModel)


class EndpointModel(EndpointTemplate):
    id: Annotated[str, Field(min_length=1)]
    workload: WorkloadModel


class HostModel(_M):
    name: Annotated[str, Field(min_length=1)]
    count: Annotated[int, Field(ge=1)] = 1
    gpus: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    cpu_cores: Annotated[int, Field(ge=1)] | None = None  # shared by concurrent starts' CPU stages
    cpu_background: NonNeg = 0.0  # other runnable processes on those cores


class TraceModel(_M):
    """A real trace file: each function becomes its own endpoint, built from the `endpoint` template.

    Formats (gpuserve.sim.traces): azure2019 (per-minute counts, optionally with the durations
    and memory files), azure2021 (per-invocation rows with durations), azure_llm (requests
    with tokens; one endpoint), csv (arrival times, optional duration and function columns).
    """

    format: Literal["azure2019", "azure2021", "azure_llm", "csv"]
    path: str
    durations_path: str | None = None  # azure2019: function_durations_percentiles.anon.dNN.csv
    memory_path: str | None = None  # azure2019: app_memory_percentiles.anon.dNN.csv
    memory_column: str = "AverageAllocatedMb"
    spread: Literal["uniform", "poisson", "even"] = "uniform"  # azure2019: arrivals within each minute
    start_s: NonNeg = 0.0
    window_s: Pos | None = None
    max_functions: Annotated[int, Field(ge=1)] | None = None
    select: Literal["busiest", "random"] = "busiest"
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0  # the fraction of invocations kept
    min_invocations: Annotated[int, Field(ge=0)] = 1
    id: Annotated[str, Field(min_length=1)] = "trace"  # the endpoint of a one-function trace (azure_llm, csv)
    time_column: str | None = None  # csv
    duration_column: str | None = None  # csv
    function_column: str | None = None  # csv
    time_scale: Pos = 1.0  # csv
    duration_scale: Pos = 1.0  # csv
    endpoint: EndpointTemplate = Field(default_factory=EndpointTemplate)


class AzureTraceModel(_M):
    """Azure Functions 2019 invocation counts (the `trace` format azure2019, windowed in minutes)."""

    path: str
    durations_path: str | None = None
    memory_path: str | None = None
    memory_column: str = "AverageAllocatedMb"
    spread: Literal["uniform", "poisson", "even"] = "uniform"
    start_minute: Annotated[int, Field(ge=0)] = 0
    minutes: Annotated[int, Field(ge=1)] | None = None
    max_functions: Annotated[int, Field(ge=1)] | None = None
    select: Literal["busiest", "random"] = "busiest"
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_invocations: Annotated[int, Field(ge=0)] = 1
    endpoint: EndpointTemplate = Field(default_factory=EndpointTemplate)

    def as_trace(self) -> TraceModel:
        fields = self.model_dump(exclude={"start_minute", "minutes", "endpoint"})
        window = None if self.minutes is None else 60.0 * self.minutes
        return TraceModel(format="azure2019", start_s=60.0 * self.start_minute, window_s=window, endpoint=self.endpoint, **fields)


class HostFailureModel(_M):
    host: Annotated[str, Field(min_length=1)]
    at_s: NonNeg
    down_s: NonNeg = 0.0


class UpdateModel(_M):
    at_s: NonNeg
    endpoint: Annotated[str, Field(min_length=1)]


class ScenarioModel(_M):
    name: str = "scenario"
    description: str = ""
    duration_s: Pos | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    replications: Annotated[int, Field(ge=1)] = 1  # runs per setting, seeds derived from `seed`
    consult_on_arrival: Literal["auto", "always"] = "auto"
    drain_limit_s: NonNeg = 3600.0
    # Runpod's account-wide worker limit (flex + active, every endpoint): 5 by default, 10-60
    # with the account's balance; null for none.
    account_max_workers: Annotated[int, Field(ge=0)] | None = 5
    max_retries: Annotated[int, Field(ge=0)] = 3  # requeues after lost workers before FAILED
    host_failures: list[HostFailureModel] = Field(default_factory=list)
    updates: list[UpdateModel] = Field(default_factory=list)
    hosts: list[HostModel] = Field(default_factory=list)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    endpoints: list[EndpointModel] = Field(default_factory=list)
    azure_trace: AzureTraceModel | None = None
    trace: TraceModel | None = None
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
    # What was defaulted that a reader should know (no duration_s, no price for a GPU type).
    warnings: tuple[str, ...] = ()


# -- errors -------------------------------------------------------------------------------


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"poisson", "bursty", "diurnal", "csv", "constant", "exponential", "lognormal", "empirical", "tokens"}:
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
        return f"is not a known field (known: {', '.join(known_fields(ScenarioModel, err['loc']))})"
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
    errors = exc.errors()
    # A misspelt field is reported as unknown (listing the valid names) before the field it was meant to be as missing.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
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
        table = read_arrivals_csv(
            base / model.path, model.column, model.duration_column, None, model.time_scale, model.duration_scale
        ).window(model.start_s, model.window_s, "workload")
        return TraceReplay(table.times_s, dict(table.demand), model.sample)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field.removeprefix('workload.')}", exc.value, exc.problem) from None


def _service(model: Any, base: Path, prefix: str) -> ServiceTime:
    try:
        curve = None if model.batching is None else BatchingCurve(tuple(sorted(model.batching.items())))
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.batching", exc.value, exc.problem) from None
    if isinstance(model, TokensModel):
        return Tokens(model.prefill_tokens_per_s, model.decode_tokens_per_s, model.overhead_s, curve)
    base_model = _base_service(model, base, prefix)
    return base_model if curve is None else Batched(base_model, curve)


def _base_service(model: Any, base: Path, prefix: str) -> ServiceTime:
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


# The stages `total_s` stands for; the rest (flash boot, platform overheads, the image name) still apply.
_TOTAL_REPLACES = ("profile", "image_size_gb", "pull_bandwidth_gb_s", "container_start_s", "runtime_init_s", "model_size_gb", "model_source")


def _cold_start(model: ColdStartModel, base: Path, prefix: str) -> ColdStartProfile:
    fields: dict[str, Any] = {}
    name = "custom"
    if model.total_s is not None:
        clash = [k for k in _TOTAL_REPLACES if getattr(model, k) is not None]
        if clash:
            raise ConfigError(f"{prefix}.total_s", model.total_s, f"is the whole cold start: give it without {', '.join(clash)}")
        rest = {k: v for k, v in model.model_dump(exclude={"total_s"}).items() if v is not None}
        return profile_from_mapping({**rest, "container_start_s": model.total_s}, prefix, name=f"total {model.total_s:g} s")
    if model.profile:
        fields = load_profile(model.profile, _profile_dirs(base), prefix=f"{prefix}.profile")
        name = str(fields.pop("name", model.profile))
    overrides = {k: v for k, v in model.model_dump(exclude={"profile"}, exclude_none=True).items()}
    fields.update(overrides)
    return profile_from_mapping(fields, prefix, name=name)


def _jobs(model: JobsModel, base: Path, prefix: str) -> JobOptions:
    fields = model.model_dump(exclude={"patience"})
    patience = _service(model.patience, base, f"{prefix}.patience") if model.patience is not None else None
    try:
        return JobOptions(**fields, patience=patience)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field.removeprefix('jobs.')}", exc.value, exc.problem) from None


def _sim_endpoint(eid: str, model: EndpointTemplate, workload: Workload, base: Path, prefix: str) -> SimEndpoint:
    spec = endpoint_spec(eid, model, prefix, base)
    f = model.failures
    return SimEndpoint(
        spec=spec,
        workload=workload,
        service=_service(model.service, base, f"{prefix}.service"),
        cold_start=_cold_start(model.cold_start, base, f"{prefix}.cold_start"),
        failures=FailureModel(f.crash_per_start, f.crash_per_running_hour, tuple(f.crash_times_s)),
        jobs=_jobs(model.jobs, base, f"{prefix}.jobs"),
    )


def _unique_id(base_id: str, taken: set[str]) -> str:
    eid = base_id
    while eid in taken:
        eid += "x"
    taken.add(eid)
    return eid


def _trace_endpoints(trace: TraceModel, base: Path, taken: set[str], seed: int) -> tuple[list[SimEndpoint], float]:
    """One endpoint per chosen function of the trace, and the trace window's length in seconds."""
    where = "trace"
    template = _sim_endpoint("trace-template", trace.endpoint, Replay(()), base, f"{where}.endpoint")
    if trace.format != "azure2019" and (trace.durations_path or trace.memory_path):
        raise ConfigError(f"{where}.durations_path", trace.durations_path or trace.memory_path, "is read only with format azure2019")
    if trace.format != "csv":
        for name in ("time_column", "duration_column", "function_column"):
            if getattr(trace, name) is not None:
                raise ConfigError(f"{where}.{name}", getattr(trace, name), "is read only with format csv")
    # Random selection is part of the scenario, so it follows the run's seed like every draw.
    pick_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 - 1,)))
    endpoints: list[SimEndpoint] = []

    def add(name: str, workload: Workload, service: ServiceTime | None = None, memory_gb: float | None = None) -> None:
        eid = _unique_id(trace.id if name == "" else f"fn-{name[:10]}", taken)
        spec = dataclasses.replace(template.spec, endpoint_id=eid, memory_gb=memory_gb or template.spec.memory_gb)
        endpoints.append(dataclasses.replace(template, spec=spec, workload=workload, service=service or template.service))

    if trace.format == "azure2019":
        inv = read_invocations(base / trace.path, f"{where}.path")
        if trace.start_s % 60 or (trace.window_s or 0) % 60:
            raise ConfigError(f"{where}.start_s", [trace.start_s, trace.window_s], "azure2019 counts are per minute: use multiples of 60 s")
        counts = inv.window(int(trace.start_s // 60), None if trace.window_s is None else int(trace.window_s // 60))
        chosen = choose_functions(counts.sum(axis=1), trace.min_invocations, trace.max_functions, trace.select, pick_rng, where)
        durations = read_durations(base / trace.durations_path, f"{where}.durations_path") if trace.durations_path else {}
        memory = read_memory(base / trace.memory_path, trace.memory_column, f"{where}.memory_path") if trace.memory_path else {}
        for f in chosen.tolist():
            key = (inv.owners[f], inv.apps[f], inv.functions[f])
            # A function the durations file lacks keeps the template's service model.
            add(inv.functions[f], AzureCounts(counts[f], trace.spread, trace.sample), durations.get(key), memory.get(key[:2]))
        return endpoints, 60.0 * counts.shape[1]
    table: InvocationTable
    if trace.format == "azure2021":
        table = read_invocations_2021(base / trace.path, f"{where}.path")
    elif trace.format == "azure_llm":
        table = read_llm_trace(base / trace.path, f"{where}.path")
    else:
        table = read_arrivals_csv(
            base / trace.path, trace.time_column, trace.duration_column, trace.function_column,
            trace.time_scale, trace.duration_scale, where,
        )
    table = table.window(trace.start_s, trace.window_s, where)
    chosen = choose_functions(table.counts(), trace.min_invocations, trace.max_functions, trace.select, pick_rng, where)
    one = len(table.functions) == 1 and trace.function_column is None
    for rows in table.split(chosen):
        add("" if one else rows.name, TraceReplay(rows.times_s, rows.demand, trace.sample))
    span_s = trace.window_s if trace.window_s is not None else (float(table.times_s[-1]) + 1e-6 if table.times_s.size else 1.0)
    return endpoints, span_s


def _replay_end_s(workload: Workload) -> float | None:
    if isinstance(workload, Replay):
        return max(workload.times_s, default=0.0)
    if isinstance(workload, TraceReplay):
        return workload.end_s
    return None


def _billing(config: BillingConfig, endpoints: Sequence[SimEndpoint], listed: int, trace_key: str = "azure_trace") -> BillingModel:
    """The preset with the scenario's overrides; `listed` endpoints come from `endpoints:`, the rest from azure_trace."""
    where = [f"endpoints[{i}]" if i < listed else f"{trace_key}.endpoint" for i in range(len(endpoints))]
    return billing_model(config, [(w, ep.spec) for w, ep in zip(where, endpoints, strict=True)])


def _unpriced(billing: BillingModel, endpoints: Sequence[SimEndpoint], listed: int, trace_key: str = "azure_trace") -> list[str]:
    """A GPU type the endpoints use that has no price costs 0 USD: say so rather than bill nothing silently."""
    if billing.basis is not BillingBasis.WORKER_TIME:
        return []
    notes: list[str] = []
    for i, ep in enumerate(endpoints):
        key = ep.spec.gpu_type or CPU_PRICE_KEY
        if key not in billing.prices_usd_per_gpu_s:
            where = f"endpoints[{i}].gpu_type" if i < listed else f"{trace_key}.endpoint.gpu_type"
            note = f"billing.prices_usd_per_gpu_s has no price for {key} ({where}): its workers cost 0 USD"
            if not any(n.startswith(note.split(" (")[0]) for n in notes):
                notes.append(note)
    return notes


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
    if model.azure_trace is not None and model.trace is not None:
        raise ConfigError("azure_trace", model.azure_trace.path, "give either azure_trace or trace, not both")
    trace = model.trace if model.trace is not None else (model.azure_trace.as_trace() if model.azure_trace is not None else None)
    listed = len(endpoints)
    if trace is not None:
        prefix = "trace" if model.trace is not None else "azure_trace"
        try:
            traced, span_s = _trace_endpoints(trace, base_dir, {e.spec.endpoint_id for e in endpoints}, model.seed if seed is None else seed)
        except ConfigError as exc:
            raise ConfigError(prefix + exc.field.removeprefix("trace") if exc.field.startswith("trace") else exc.field, exc.value, exc.problem) from None
        endpoints.extend(traced)
        if duration_s is None:
            duration_s = span_s
    if not endpoints:
        raise ConfigError("endpoints", [], "needs at least one endpoint (or a trace)")
    notes: list[str] = []
    if duration_s is None:
        replay_ends = [_replay_end_s(e.workload) for e in endpoints]
        known = [end for end in replay_ends if end is not None]
        duration_s = max(known) + 1e-6 if known and len(known) == len(endpoints) else 3600.0
        if duration_s == 3600.0:
            notes.append("duration_s is not set: simulating 3600 s of traffic (set duration_s)")
    hosts: list[HostSpec] = []
    for h in model.hosts:
        for k in range(h.count):
            hosts.append(HostSpec(h.name if h.count == 1 else f"{h.name}-{k}", h.gpus, cpu_cores=h.cpu_cores, cpu_background=h.cpu_background))
    trace_key = "trace" if model.trace is not None else "azure_trace"
    billing = _billing(model.billing, endpoints, listed, trace_key)
    notes += _unpriced(billing, endpoints, listed, trace_key)
    config = SimConfig(
        endpoints=tuple(endpoints),
        hosts=tuple(hosts),
        billing=billing,
        duration_s=duration_s,
        seed=model.seed if seed is None else seed,
        consult_on_arrival=model.consult_on_arrival,
        drain_limit_s=model.drain_limit_s,
        account_max_workers=model.account_max_workers,
        max_retries=model.max_retries,
        host_failures=tuple(HostFailure(h.host, h.at_s, h.down_s) for h in model.host_failures),
        updates=tuple(Update(u.at_s, u.endpoint) for u in model.updates),
    )
    return Scenario(model.name, model.description, config, dict(model.sweep), raw, base_dir, model.replications, tuple(notes))


def load_scenario(
    path: Path, overrides: Sequence[tuple[str, Any]] = (), seed: int | None = None
) -> Scenario:
    """Read, override (--set), validate and build a scenario file."""
    if not path.is_file():
        raise ConfigError("scenario", str(path), "is not a file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("scenario", str(path), yaml_problem(exc)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("scenario", type(raw).__name__, "must be a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    return scenario_from_dict(raw, path.parent, seed=seed)
