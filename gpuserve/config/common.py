"""Settings shared by scenario files and endpoints.yaml: scaling, policy, billing, and the frozen types they build."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from gpuserve.core.billing import BILLING_PRESETS, BillingBasis, BillingModel, billing_preset
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import (
    Dispatch,
    EndpointKind,
    EndpointSpec,
    LoadBalancingSpec,
    PolicySpec,
    ScalerType,
    ScalingSpec,
)

__all__ = [
    "LOAD_BALANCING_FIELDS",
    "BillingConfig",
    "EndpointFields",
    "PolicyModel",
    "ScalingModel",
    "billing_model",
    "default_policy_name",
    "endpoint_spec",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScalingModel(_Frozen):
    """Runpod's endpoint scaling settings with Runpod's defaults."""

    min_workers: Annotated[int, Field(ge=0)] = 0
    max_workers: Annotated[int, Field(ge=0)] = 3
    idle_timeout_s: Annotated[float, Field(ge=0)] = 5.0
    scaler: ScalerType = ScalerType.QUEUE_DELAY
    scaler_value: Annotated[float, Field(gt=0)] = 4.0
    flash_boot: bool = True
    scale_to_zero_grace_s: Annotated[float, Field(ge=0)] = 0.0
    extra_workers: Annotated[int, Field(ge=0)] = 2  # Runpod's spike workers above max_workers; 0 opts out


class PolicyModel(_Frozen):
    # None: the Runpod policy that matches the endpoint's scaler (see default_policy_name).
    # A built-in or plug-in name, or your own: `my_module:POLICY`, `path/to/file.py:POLICY`.
    name: str | None = None
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


class EndpointFields(_Frozen):
    """The fields of an endpoint that both the simulator and the live server read."""

    gpu_type: str | None = None
    gpus_per_worker: Annotated[int, Field(ge=0)] = 1
    concurrency_per_worker: Annotated[int, Field(ge=1)] = 1
    execution_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    memory_gb: Annotated[float, Field(gt=0)] | None = None  # billed per GB-second by the aws_lambda preset
    # shared_queue (Runpod): a job waits for whichever worker frees first; bind_to_launch
    # (AWS Lambda, SimFaaS): the job that started a worker waits for that worker.
    dispatch: Dispatch = Dispatch.SHARED_QUEUE
    scaling: ScalingModel = Field(default_factory=ScalingModel)
    policy: PolicyModel = Field(default_factory=PolicyModel)
    # The kind of endpoint; the four settings below apply only to `type: load_balancer` and
    # are refused on a queue endpoint. Unset: LoadBalancingSpec's defaults (Runpod's limits).
    type: EndpointKind = EndpointKind.QUEUE
    concurrency_target: int | None = None
    max_concurrency: int | None = None
    hold_timeout_s: float | None = None
    request_timeout_s: float | None = None


# The load-balancing settings of EndpointFields, named as LoadBalancingSpec names them.
LOAD_BALANCING_FIELDS: tuple[str, ...] = ("concurrency_target", "max_concurrency", "hold_timeout_s", "request_timeout_s")


def _load_balancing(fields: EndpointFields, where: str) -> LoadBalancingSpec | None:
    """The LoadBalancingSpec the fields ask for; None on a queue endpoint, which may set none of them."""
    given = {name: getattr(fields, name) for name in LOAD_BALANCING_FIELDS if getattr(fields, name) is not None}
    if fields.type is EndpointKind.QUEUE:
        if given:
            name, value = next(iter(given.items()))
            raise ConfigError(f"{where}.{name}", value, "applies only to `type: load_balancer` endpoints")
        return None
    try:
        return LoadBalancingSpec(**given)
    except ConfigError as exc:
        raise _prefixed(where, exc) from None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return []
    args = typing.get_args(annotation)
    if origin is Annotated:
        args = args[:1]
    elif origin is dict:
        args = args[1:]
    elif origin not in (list, tuple, typing.Union, types.UnionType, None) and not isinstance(origin, type):
        return []
    return [m for a in args for m in _models_in(a)]


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    return str(args[0]) if args else None


def known_fields(root: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names valid where a pydantic error points (`loc` up to the unknown key), so an
    unknown field can list them: walks list indexes, dict keys and discriminated-union tags."""
    candidates = [root]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        tagged = [m for m in candidates if _tag_of(m) == part]
        if tagged:
            candidates = tagged  # a discriminated union's tag in the location: that member
            continue
        nxt = [m for c in candidates if part in c.model_fields for m in _models_in(c.model_fields[part].annotation)]
        if nxt:
            candidates = nxt  # a field of a model
        # else: a dict key (an endpoint name in endpoints.yaml): the same models apply below it
    return sorted({name for c in candidates for name in c.model_fields})


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's reason and position: `is not valid YAML: could not find expected ':' at line 4, column 3`."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"is not valid YAML: {reason}{where}" + (f" ({context})" if context else "")


def default_policy_name(scaler: ScalerType) -> str:
    """An endpoint that names no policy scales the way its Runpod scaler type says."""
    return "runpod_queue_delay" if scaler is ScalerType.QUEUE_DELAY else "runpod_request_count"


def _prefixed(prefix: str, exc: ConfigError) -> ConfigError:
    field = exc.field if exc.field.startswith(prefix) else f"{prefix}.{exc.field}"
    return ConfigError(field, exc.value, exc.problem)


def endpoint_spec(endpoint_id: str, fields: EndpointFields, where: str, base_dir: Path | None = None) -> EndpointSpec:
    """Build the frozen EndpointSpec and validate its policy; errors are prefixed with `where`.

    A policy named by file (`policies/spare.py:POLICY`) is resolved against `base_dir`, the
    folder of the file that names it, so the spec names the same file from any process."""
    from gpuserve import policies

    load_balancing = _load_balancing(fields, where)
    policy_name = fields.policy.name or default_policy_name(fields.scaling.scaler)
    policy_name = policies.resolve_reference(policy_name, base_dir)
    s = fields.scaling
    try:
        scaling = ScalingSpec(
            min_workers=s.min_workers,
            max_workers=s.max_workers,
            idle_timeout_s=s.idle_timeout_s,
            scaler=s.scaler,
            scaler_value=s.scaler_value,
            flash_boot=s.flash_boot,
            scale_to_zero_grace_s=s.scale_to_zero_grace_s,
            extra_workers=s.extra_workers,
        )
        spec = EndpointSpec(
            endpoint_id=endpoint_id,
            scaling=scaling,
            policy=PolicySpec(policy_name, fields.policy.params),
            gpu_type=fields.gpu_type,
            gpus_per_worker=fields.gpus_per_worker,
            concurrency_per_worker=fields.concurrency_per_worker,
            execution_timeout_s=fields.execution_timeout_s,
            memory_gb=fields.memory_gb,
            kind=fields.type,
            load_balancing=load_balancing,
            dispatch=fields.dispatch,
        )
    except ConfigError as exc:
        raise _prefixed(f"{where}.scaling" if exc.field in ScalingModel.model_fields else where, exc) from None
    try:
        policies.get(spec.policy.name, spec.policy.params, spec)  # unknown names and bad params fail now
    except ConfigError as exc:
        raise _prefixed(where, exc) from None
    return spec


_NonNeg = Annotated[float, Field(ge=0)]


class BillingConfig(_Frozen):
    """A billing preset (gpuserve.core.billing.BILLING_PRESETS) plus any field overridden; unset fields keep the preset's."""

    preset: str = "runpod"
    basis: Literal["worker_time", "execution"] | None = None
    prices_usd_per_gpu_s: dict[str, _NonNeg] = Field(default_factory=dict)
    price_usd_per_gb_s: _NonNeg | None = None
    # Per worker state: true, false or while_processing; merged onto the preset's table.
    states: dict[str, bool | Literal["while_processing"]] = Field(default_factory=dict)
    parked_billed: bool | None = None
    rounding_s: _NonNeg | None = None
    active_discount: Annotated[float, Field(ge=0, le=1)] | None = None
    per_request_usd: _NonNeg | None = None


def billing_model(config: BillingConfig, endpoints: Sequence[tuple[str, EndpointSpec]]) -> BillingModel:
    """The preset with the file's overrides; `endpoints` are (field path, spec), for the memory_gb the execution basis needs."""
    if config.preset not in BILLING_PRESETS:
        raise ConfigError("billing.preset", config.preset, f"is not a billing preset (known: {', '.join(BILLING_PRESETS)})")
    overrides = {k: v for k, v in config.model_dump(exclude={"preset"}).items() if v is not None and v != {}}
    model = billing_preset(config.preset, **overrides)
    if model.basis is BillingBasis.EXECUTION:
        for where, spec in endpoints:
            if spec.memory_gb is None:
                raise ConfigError(
                    f"{where}.memory_gb", None, f"is required: billing preset {config.preset} bills GB-seconds of execution"
                )
    return model
