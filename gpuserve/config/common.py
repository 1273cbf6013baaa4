"""Settings shared by scenario files and endpoints.yaml: scaling, policy, and the frozen EndpointSpec they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec

__all__ = ["EndpointFields", "PolicyModel", "ScalingModel", "default_policy_name", "endpoint_spec"]


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
    scaling: ScalingModel = Field(default_factory=ScalingModel)
    policy: PolicyModel = Field(default_factory=PolicyModel)


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
        )
    except ConfigError as exc:
        raise _prefixed(f"{where}.scaling" if exc.field in ScalingModel.model_fields else where, exc) from None
    try:
        policies.get(spec.policy.name, spec.policy.params, spec)  # unknown names and bad params fail now
    except ConfigError as exc:
        raise _prefixed(where, exc) from None
    return spec
