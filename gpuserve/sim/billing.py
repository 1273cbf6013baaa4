"""Billing: price per GPU-second by type, Runpod's billed states, active-worker discount, idle-billed switch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import WorkerState, is_billed

__all__ = ["CPU_PRICE_KEY", "BillingModel"]

CPU_PRICE_KEY = "cpu"  # price key for CPU-only endpoints, billed per worker-second


@dataclass(frozen=True)
class BillingModel:
    """How worker time turns into money.

    Flex workers pay per second in billed states (gpuserve.core.is_billed: RUNNING yes,
    OUTDATED while processing, the rest no; IDLE too when `idle_billed`). Active (min)
    workers are always on and pay for every second of their life at `1 - active_discount`
    (Runpod: "up to 30%" off).
    """

    prices_usd_per_gpu_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    active_discount: float = 0.30
    idle_billed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices_usd_per_gpu_s", MappingProxyType(dict(self.prices_usd_per_gpu_s)))
        for key, price in self.prices_usd_per_gpu_s.items():
            if not (isinstance(price, int | float) and price >= 0):
                raise ConfigError(f"billing.prices_usd_per_gpu_s.{key}", price, "cannot be negative")
        if not (isinstance(self.active_discount, int | float) and 0 <= self.active_discount <= 1):
            raise ConfigError("billing.active_discount", self.active_discount, "must be between 0 and 1")

    def price_usd_per_s(self, gpu_type: str | None) -> float:
        return float(self.prices_usd_per_gpu_s.get(gpu_type or CPU_PRICE_KEY, 0.0))

    def billed_mask(self, states: np.ndarray, processing: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Vectorised is_billed over interval columns (string states), plus always-billed active workers."""
        table = {s.value: (is_billed(s, False, idle_billed=self.idle_billed), is_billed(s, True, idle_billed=self.idle_billed)) for s in WorkerState}
        idle_or_not = np.array([table[s][0] for s in states], dtype=bool) if states.size else np.zeros(0, bool)
        when_processing = np.array([table[s][1] for s in states], dtype=bool) if states.size else np.zeros(0, bool)
        mask: np.ndarray = np.where(processing, when_processing, idle_or_not) | active
        return mask
