"""Staged cold-start model: image pull, container start, runtime init, model load, flash-boot resume."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from gpuserve.core.errors import ConfigError

__all__ = ["ColdStartProfile", "ModelSource", "StageTimes", "load_profile"]


class ModelSource(StrEnum):
    HOST_CACHE = "host_cache"  # weights already on the host's local disk
    BAKED_IMAGE = "baked_image"  # weights inside the image: the pull carries them, load is local
    NETWORK_VOLUME = "network_volume"  # weights on a network volume mounted into the worker


@dataclass(frozen=True)
class StageTimes:
    """How one worker's start was spent (seconds); zero where a stage was skipped."""

    image_pull_s: float = 0.0
    container_start_s: float = 0.0
    runtime_init_s: float = 0.0
    model_load_s: float = 0.0
    flash_resume_s: float = 0.0
    platform_start_s: float = 0.0  # the platform's own start-up overhead (calibrated), on every start

    @property
    def before_gpu_s(self) -> float:
        """Stages that need no GPU: the container comes up and imports its runtime first."""
        return self.platform_start_s + self.image_pull_s + self.container_start_s + self.runtime_init_s

    @property
    def total_s(self) -> float:
        return self.before_gpu_s + self.model_load_s + self.flash_resume_s


@dataclass(frozen=True)
class ColdStartProfile:
    """The numbers behind one cold start. Bandwidths are GB/s; sizes GB; times seconds."""

    name: str = "custom"
    image: str = "default"  # image name: hosts cache images by name
    image_size_gb: float = 0.0
    pull_bandwidth_gb_s: float = 1.0
    container_start_s: float = 0.0
    runtime_init_s: float = 0.0
    model_size_gb: float = 0.0
    model_source: ModelSource = ModelSource.HOST_CACHE
    host_cache_bandwidth_gb_s: float = 4.0
    baked_image_bandwidth_gb_s: float = 2.0
    network_volume_bandwidth_gb_s: float = 0.5
    flash_resume_s: float = 2.0
    flash_retention_s: float = 300.0
    # Platform overheads of one host (`gpuserve calibrate`), 0 unless a profile measures them:
    # spawn -> first job-take of a bare worker, added to every start; job submitted -> taken by
    # an idle worker, added to the queue delay; and the per-job cost around the handler (taking,
    # posting the result), added to the execution time.
    platform_start_s: float = 0.0
    dispatch_s: float = 0.0
    result_post_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("bandwidth_gb_s") and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(f.name, value, "must be positive")
            if f.name.endswith(("_s", "_gb")) and not f.name.endswith("bandwidth_gb_s"):
                if not (isinstance(value, int | float) and value >= 0):
                    raise ConfigError(f.name, value, "cannot be negative")
        if not isinstance(self.model_source, ModelSource):
            try:
                object.__setattr__(self, "model_source", ModelSource(self.model_source))
            except ValueError:
                raise ConfigError(
                    "model_source", self.model_source, "must be one of host_cache, baked_image, network_volume"
                ) from None

    @property
    def pulled_gb(self) -> float:
        """A baked image carries the weights, so its pull is bigger."""
        extra = self.model_size_gb if self.model_source is ModelSource.BAKED_IMAGE else 0.0
        return self.image_size_gb + extra

    def load_bandwidth_gb_s(self) -> float:
        return {
            ModelSource.HOST_CACHE: self.host_cache_bandwidth_gb_s,
            ModelSource.BAKED_IMAGE: self.baked_image_bandwidth_gb_s,
            ModelSource.NETWORK_VOLUME: self.network_volume_bandwidth_gb_s,
        }[self.model_source]

    def stages(self, *, image_wait_s: float | None, flash: bool) -> StageTimes:
        """Stage times for one start. `image_wait_s` None means the image must be pulled in full;
        a number is what is left of a pull already under way on that host (0 when cached)."""
        if flash:
            return StageTimes(flash_resume_s=self.flash_resume_s, platform_start_s=self.platform_start_s)
        pull_s = self.pulled_gb / self.pull_bandwidth_gb_s if image_wait_s is None else image_wait_s
        return StageTimes(
            image_pull_s=pull_s,
            container_start_s=self.container_start_s,
            runtime_init_s=self.runtime_init_s,
            model_load_s=self.model_size_gb / self.load_bandwidth_gb_s(),
            platform_start_s=self.platform_start_s,
        )

    @property
    def full_pull_s(self) -> float:
        return self.pulled_gb / self.pull_bandwidth_gb_s


_PROFILE_FIELDS = {f.name for f in fields(ColdStartProfile)}


def profile_from_mapping(raw: dict[str, Any], prefix: str, name: str = "custom") -> ColdStartProfile:
    unknown = sorted(set(raw) - _PROFILE_FIELDS)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", raw[unknown[0]], f"is not a cold-start field (known: {', '.join(sorted(_PROFILE_FIELDS))})")
    values = {"name": name, **raw}
    try:
        return ColdStartProfile(**values)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field}", exc.value, exc.problem) from None


def load_profile(name: str, search_dirs: list[Path], prefix: str = "cold_start.profile") -> dict[str, Any]:
    """Find `<name>.yaml` (or a path) in the search dirs and return its fields as a dict."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    candidates += [d / f"{name}.yaml" for d in search_dirs]
    for path in candidates:
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ConfigError(prefix, name, f"profile file {path} must hold a mapping")
            data.pop("source", None)  # documentation only: where the figures come from
            data.pop("description", None)
            data.setdefault("name", name)
            return data
    raise ConfigError(prefix, name, f"is not a profile (looked in {', '.join(str(d) for d in search_dirs)})")
