"""Hosts with a number of GPUs per type, their image caches, and the workers waiting (THROTTLED) for a GPU."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gpuserve.core.errors import ConfigError

__all__ = ["HostSpec", "HostState"]


@dataclass(frozen=True)
class HostSpec:
    """One host: GPUs per type. `unlimited` hosts have as many GPUs of every type as asked for."""

    name: str
    gpus: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    unlimited: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", MappingProxyType(dict(self.gpus)))
        for gpu_type, count in self.gpus.items():
            if not isinstance(count, int) or count < 0:
                raise ConfigError(f"gpus.{gpu_type}", count, "must be a non-negative integer")

    def has_type(self, gpu_type: str | None) -> bool:
        return self.unlimited or gpu_type is None or gpu_type in self.gpus


class HostState:
    """A host during a run: free GPUs, FIFO of THROTTLED workers per type, images and when they land."""

    __slots__ = ("free", "images", "name", "spec", "waiters")

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.free: dict[str, float] = {t: float(n) for t, n in spec.gpus.items()}
        self.waiters: dict[str, deque[Any]] = {}
        # image name -> time its pull completes (<= now: cached on this host)
        self.images: dict[str, float] = {}

    def free_gpus(self, gpu_type: str | None) -> float:
        if gpu_type is None or self.spec.unlimited:
            return math.inf
        return self.free.get(gpu_type, 0.0)

    def try_acquire(self, gpu_type: str | None, count: int) -> bool:
        if count == 0 or gpu_type is None or self.spec.unlimited:
            return True
        if self.free.get(gpu_type, 0.0) >= count:
            self.free[gpu_type] -= count
            return True
        return False

    def release(self, gpu_type: str | None, count: int) -> None:
        if count and gpu_type is not None and not self.spec.unlimited:
            self.free[gpu_type] += count

    def waiting(self, gpu_type: str | None) -> deque[Any]:
        return self.waiters.setdefault(gpu_type or "", deque())
