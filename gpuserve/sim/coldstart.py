"""Staged cold-start model: image pull, container start, runtime init, model load, flash-boot resume.

Each stage is one number by default; a profile's `distributions` make any of them a
distribution instead (lognormal around a median, or empirical: resampled measured samples),
drawn per start from the run's own cold-start stream, so a seed gives the same starts.
How concurrent starts on one host slow each other is gpuserve.sim.hosts' part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import yaml

from gpuserve.core.errors import ConfigError

__all__ = ["STAGES", "ColdStartProfile", "ModelSource", "StageDist", "StageTimes", "load_profile", "stage_dist"]

# The stages a distribution may replace (StageTimes' fields). For the pull and the model load
# the distribution is the time the transfer takes alone on its host (contention stretches it).
STAGES = ("image_pull_s", "container_start_s", "runtime_init_s", "model_load_s", "flash_resume_s", "platform_start_s")


@dataclass(frozen=True)
class StageDist:
    """One stage's time as a distribution (seconds).

    lognormal: median `median_s` (None: the profile's own number for that stage, so `sigma`
    alone adds spread around it) and log-space standard deviation `sigma`.
    empirical: each start draws one of the measured `samples_s` (uniformly, with replacement).
    """

    kind: Literal["lognormal", "empirical"]
    median_s: float | None = None
    sigma: float = 0.0
    samples_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("lognormal", "empirical"):
            raise ConfigError("kind", self.kind, "must be lognormal or empirical")
        if self.median_s is not None and not (math.isfinite(self.median_s) and self.median_s >= 0):
            raise ConfigError("median_s", self.median_s, "must be a non-negative number")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ConfigError("sigma", self.sigma, "must be a non-negative number")
        object.__setattr__(self, "samples_s", tuple(float(x) for x in self.samples_s))
        if self.kind == "empirical":
            if not self.samples_s:
                raise ConfigError("samples_s", [], "an empirical stage needs at least one sample")
            bad = [x for x in self.samples_s if not (math.isfinite(x) and x >= 0)]
            if bad:
                raise ConfigError("samples_s", bad[0], "samples must be non-negative seconds")

    def typical_s(self, base_s: float) -> float:
        """The median: what a start takes when no random stream is given."""
        if self.kind == "empirical":
            return float(np.median(self.samples_s))
        return base_s if self.median_s is None else self.median_s

    def sample_s(self, rng: np.random.Generator, base_s: float) -> float:
        if self.kind == "empirical":
            return self.samples_s[int(rng.integers(len(self.samples_s)))]
        median = self.typical_s(base_s)
        if self.sigma == 0.0 or median == 0.0:
            return median
        return float(median * math.exp(self.sigma * rng.standard_normal()))


def stage_dist(raw: object, field_name: str) -> StageDist:
    """A StageDist from its YAML mapping (or one already built); errors name `field_name`."""
    if isinstance(raw, StageDist):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(field_name, raw, "must be a mapping with kind: lognormal or empirical")
    known = {"kind", "median_s", "sigma", "samples_s"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{field_name}.{unknown[0]}", raw[unknown[0]], f"is not a distribution field (known: {', '.join(sorted(known))})")
    try:
        return StageDist(
            kind=raw.get("kind"),  # type: ignore[arg-type]
            median_s=None if raw.get("median_s") is None else float(raw["median_s"]),
            sigma=float(raw.get("sigma", 0.0)),
            samples_s=tuple(raw.get("samples_s") or ()),
        )
    except ConfigError as exc:  # before ValueError: a ConfigError is one
        raise ConfigError(f"{field_name}.{exc.field}", exc.value, exc.problem) from None
    except (TypeError, ValueError):
        raise ConfigError(field_name, dict(raw), "has a field that is not a number") from None


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
    # A FlashBoot resume (Runpod: 90% of revivals under 2 s), never slower than the cold
    # start it replaces on that host, image cached (`stages`): a 0.15-s start stays 0.15 s.
    flash_resume_s: float = 2.0
    flash_retention_s: float = 300.0
    # Platform overheads of one host (`gpuserve calibrate`), 0 unless a profile measures them:
    # spawn -> first job-take of a bare worker, added to every start; job submitted -> taken by
    # an idle worker, added to the queue delay; and the per-job cost around the handler (taking,
    # posting the result), added to the execution time.
    platform_start_s: float = 0.0
    dispatch_s: float = 0.0
    result_post_s: float = 0.0
    # Stage name (STAGES) -> its distribution; a stage not named keeps its one number.
    distributions: Mapping[str, StageDist] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        dists = {}
        for stage, raw in dict(self.distributions or {}).items():
            if stage not in STAGES:
                raise ConfigError(f"distributions.{stage}", raw, f"is not a stage (known: {', '.join(STAGES)})")
            dists[stage] = stage_dist(raw, f"distributions.{stage}")
        object.__setattr__(self, "distributions", MappingProxyType(dists))
        for f in fields(self):
            if f.name == "distributions":
                continue
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

    def stages(self, *, image_wait_s: float | None, flash: bool, rng: np.random.Generator | None = None) -> StageTimes:
        """Stage times for one start. `image_wait_s` None means the image must be pulled in full;
        a number is what is left of a pull already under way on that host (0 when cached).

        A stage with a distribution is drawn from `rng` (the run's cold-start stream), or is its
        median when no stream is given; a pull already under way is not drawn again.
        """
        if flash:
            times = StageTimes(flash_resume_s=self.flash_resume_s, platform_start_s=self.platform_start_s)
        else:
            pull_s = self.pulled_gb / self.pull_bandwidth_gb_s if image_wait_s is None else image_wait_s
            times = StageTimes(
                image_pull_s=pull_s,
                container_start_s=self.container_start_s,
                runtime_init_s=self.runtime_init_s,
                model_load_s=self.model_size_gb / self.load_bandwidth_gb_s(),
                platform_start_s=self.platform_start_s,
            )
        if not self.distributions:
            return self._capped(times, flash)
        drawn: dict[str, float] = {}
        for stage, dist in self.distributions.items():  # in the profile's order: a seed gives the same draws
            base = getattr(times, stage)
            if stage == "image_pull_s" and image_wait_s is not None:
                continue  # waiting for a pull under way (or none): its time is not this start's draw
            if flash and stage not in ("flash_resume_s", "platform_start_s"):
                continue
            if not flash and stage == "flash_resume_s":
                continue
            drawn[stage] = dist.typical_s(base) if rng is None else dist.sample_s(rng, base)
        return self._capped(replace(times, **drawn), flash)

    def _capped(self, times: StageTimes, flash: bool) -> StageTimes:
        """A resume is never slower than the cold start it replaces on that host (image cached)."""
        if flash and times.flash_resume_s > self.cached_start_s:
            return replace(times, flash_resume_s=self.cached_start_s)
        return times

    def typical_pull_s(self) -> float:
        """A full pull's median time (the distribution's when the pull has one)."""
        dist = self.distributions.get("image_pull_s")
        return self.full_pull_s if dist is None else dist.typical_s(self.full_pull_s)

    @property
    def cached_start_s(self) -> float:
        """A cold start on a host that has the image, without the platform's own overhead."""
        return self.container_start_s + self.runtime_init_s + self.model_size_gb / self.load_bandwidth_gb_s()

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
