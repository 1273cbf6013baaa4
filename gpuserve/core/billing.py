"""Billing as data: which worker states are billed, prices, rounding, discounts and fees, and the named presets.

A `BillingModel` is a value, not code: the simulator turns its recorded worker intervals
into a ledger with it after the run (gpuserve.sim.billing, vectorised), and `bill_worker`
here is the same rule for one worker in plain Python, the reference the ledger is tested
against and what a live ledger can use.

Two bases:
- `worker_time` (Runpod, a rented GPU): a worker costs price x GPUs for every second it
  spends in a billed state; each worker's billed seconds are rounded up to `rounding_s`
  (Runpod: the second) once, over its whole life; active (`min_workers`) workers are billed
  in every state at `1 - active_discount`.
- `execution` (AWS Lambda): each job costs its execution time, rounded up to `rounding_s`
  (1 ms), times the endpoint's `memory_gb` times `price_usd_per_gb_s`; worker time is free.
Either basis adds `per_request_usd` for each job that started.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import WorkerState

__all__ = [
    "BILLING_PRESETS",
    "CPU_PRICE_KEY",
    "BillingBasis",
    "BillingModel",
    "StateBilling",
    "bill_worker",
    "billing_preset",
    "round_up_s",
]

CPU_PRICE_KEY = "cpu"  # price key for CPU-only endpoints, billed per worker-second


class StateBilling(StrEnum):
    """Whether a worker state is billed: always, never, or only while the worker holds a job."""

    YES = "yes"
    NO = "no"
    WHILE_PROCESSING = "while_processing"


class BillingBasis(StrEnum):
    WORKER_TIME = "worker_time"  # GPU-seconds of worker life in billed states
    EXECUTION = "execution"  # memory GB-seconds of each job's execution


def _states(**by_name: StateBilling) -> Mapping[WorkerState, StateBilling]:
    return MappingProxyType({WorkerState(name.upper()): value for name, value in by_name.items()})


_YES, _NO, _WHILE = StateBilling.YES, StateBilling.NO, StateBilling.WHILE_PROCESSING

# Runpod's pricing page: "billed from when a worker starts until it fully stops, rounded up
# to the nearest second": start-up, execution and the idle-timeout window. A THROTTLED worker
# has no GPU and an UNHEALTHY one is being restarted, as in the worker-state table.
_RUNPOD_STATES = _states(
    initializing=_YES, idle=_YES, running=_YES, throttled=_NO, outdated=_WHILE, unhealthy=_NO
)
# The worker-state table of Runpod's "Workers" page, row for row.
_STATE_TABLE_STATES = _states(
    initializing=_YES, idle=_NO, running=_YES, throttled=_NO, outdated=_WHILE, unhealthy=_NO
)
_ALL_STATES = _states(**{s.value: _YES for s in WorkerState})
_NO_STATES = _states(**{s.value: _NO for s in WorkerState})


def round_up_s(seconds: float, rounding_s: float) -> float:
    """`seconds` rounded up to a whole number of `rounding_s` (0: no rounding): 5.2 s -> 6 s at 1 s.

    A tolerance of 1e-9 of a unit keeps float noise from the sim clock (5.000000000001 s)
    from costing a whole extra second."""
    if rounding_s <= 0 or seconds <= 0:
        return max(0.0, seconds)
    return math.ceil(seconds / rounding_s - 1e-9) * rounding_s


@dataclass(frozen=True)
class BillingModel:
    """How worker time (or job execution) turns into money; the defaults are the `runpod` preset."""

    prices_usd_per_gpu_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    states: Mapping[WorkerState, StateBilling] = field(default_factory=lambda: _RUNPOD_STATES)
    # A worker stopped after its idle timeout whose snapshot is kept for a flash-boot resume
    # holds no GPU; only a rented machine bills that time.
    parked_billed: bool = False
    rounding_s: float = 1.0
    active_discount: float = 0.30  # Runpod: active workers "up to 30%" off
    per_request_usd: float = 0.0
    basis: BillingBasis = BillingBasis.WORKER_TIME
    price_usd_per_gb_s: float = 0.0  # the execution basis: per GB of endpoint memory per second
    preset: str = "runpod"  # the preset this model started from (for the record)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices_usd_per_gpu_s", MappingProxyType(dict(self.prices_usd_per_gpu_s)))
        for key, price in self.prices_usd_per_gpu_s.items():
            _non_negative(f"billing.prices_usd_per_gpu_s.{key}", price)
        states: dict[WorkerState, StateBilling] = dict(_NO_STATES)
        for key, value in self.states.items():
            states[_state(key)] = _state_billing(key, value)
        object.__setattr__(self, "states", MappingProxyType(states))
        try:
            object.__setattr__(self, "basis", BillingBasis(self.basis))
        except ValueError:
            raise ConfigError("billing.basis", self.basis, f"must be one of {[b.value for b in BillingBasis]}") from None
        if not isinstance(self.parked_billed, bool):
            raise ConfigError("billing.parked_billed", self.parked_billed, "must be true or false")
        _non_negative("billing.rounding_s", self.rounding_s)
        _non_negative("billing.per_request_usd", self.per_request_usd)
        _non_negative("billing.price_usd_per_gb_s", self.price_usd_per_gb_s)
        if not (isinstance(self.active_discount, int | float) and 0 <= self.active_discount <= 1):
            raise ConfigError("billing.active_discount", self.active_discount, "must be between 0 and 1")

    def price_usd_per_s(self, gpu_type: str | None) -> float:
        """Per GPU-second (per worker-second for a CPU endpoint); 0 under the execution basis."""
        if self.basis is BillingBasis.EXECUTION:
            return 0.0
        return float(self.prices_usd_per_gpu_s.get(gpu_type or CPU_PRICE_KEY, 0.0))

    def billed(self, state: WorkerState, processing: bool, active: bool = False) -> bool:
        """Whether a second in `state` is billed; an active worker is billed in every state."""
        if self.basis is BillingBasis.EXECUTION:
            return False
        if active:
            return True
        rule = self.states[state]
        return rule is StateBilling.YES or (rule is StateBilling.WHILE_PROCESSING and processing)

    def job_cost_usd(self, execution_s: float, memory_gb: float | None) -> float:
        """One started job: its per-request fee plus, under the execution basis, its GB-seconds."""
        cost = self.per_request_usd
        if self.basis is BillingBasis.EXECUTION:
            cost += round_up_s(execution_s, self.rounding_s) * (memory_gb or 0.0) * self.price_usd_per_gb_s
        return cost

    def describe(self) -> dict[str, Any]:
        """The model as plain data (YAML- and JSON-ready), for results folders and printing."""
        return {
            "preset": self.preset,
            "basis": self.basis.value,
            "prices_usd_per_gpu_s": dict(self.prices_usd_per_gpu_s),
            "price_usd_per_gb_s": self.price_usd_per_gb_s,
            "states": {s.value: self.states[s].value for s in WorkerState},
            "parked_billed": self.parked_billed,
            "rounding_s": self.rounding_s,
            "active_discount": self.active_discount,
            "per_request_usd": self.per_request_usd,
        }


def _non_negative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ConfigError(name, value, "must be a number >= 0")


def _state(key: object) -> WorkerState:
    try:
        return WorkerState(str(key).upper())
    except ValueError:
        raise ConfigError(
            f"billing.states.{key}", key, f"is not a worker state (known: {', '.join(s.value for s in WorkerState)})"
        ) from None


def _state_billing(key: object, value: object) -> StateBilling:
    # YAML reads `yes`/`no` as booleans, so `IDLE: no` is written as in Runpod's table.
    if value is True:
        return StateBilling.YES
    if value is False:
        return StateBilling.NO
    try:
        return StateBilling(str(value))
    except ValueError:
        raise ConfigError(f"billing.states.{key}", value, "must be true, false or 'while_processing'") from None


# Sources:
# runpod             docs.runpod.io/serverless/pricing: "billed from when a worker starts until
#                    it fully stops, rounded up to the nearest second" (start-up, execution and
#                    the idle-timeout window; a worker parked for flash boot is stopped).
# runpod_state_table docs.runpod.io/serverless/workers/overview, "Worker states" (seeds/004).
# always_on          a rented GPU (a pod or a VM): every second from start to stop, parked too.
# aws_lambda         aws.amazon.com/lambda/pricing (x86, first tier): USD 0.0000166667 per
#                    GB-second of duration rounded up to 1 ms, USD 0.20 per million requests.
BILLING_PRESETS: Mapping[str, BillingModel] = MappingProxyType(
    {
        "runpod": BillingModel(),
        "runpod_state_table": BillingModel(states=_STATE_TABLE_STATES, preset="runpod_state_table"),
        "always_on": BillingModel(states=_ALL_STATES, parked_billed=True, active_discount=0.0, preset="always_on"),
        "aws_lambda": BillingModel(
            states=_NO_STATES,
            basis=BillingBasis.EXECUTION,
            rounding_s=0.001,
            active_discount=0.0,
            price_usd_per_gb_s=0.0000166667,
            per_request_usd=0.20 / 1_000_000,
            preset="aws_lambda",
        ),
    }
)


def billing_preset(name: str = "runpod", **overrides: Any) -> BillingModel:
    """A preset with some fields replaced; `states` overrides merge onto the preset's states.

    `billing_preset("runpod_state_table", states={"IDLE": True})` bills idle time too."""
    if name not in BILLING_PRESETS:
        raise ConfigError("billing.preset", name, f"is not a billing preset (known: {', '.join(BILLING_PRESETS)})")
    base = BILLING_PRESETS[name]
    known = {f.name for f in dataclasses.fields(BillingModel)} - {"preset"}
    for key in overrides:
        if key not in known:
            raise ConfigError(f"billing.{key}", overrides[key], f"is not a billing field (known: {', '.join(sorted(known))})")
    if "states" in overrides:
        merged: dict[Any, Any] = dict(base.states)
        for key, value in dict(overrides["states"]).items():
            merged[_state(key)] = _state_billing(key, value)
        overrides = {**overrides, "states": merged}
    return dataclasses.replace(base, **overrides)


def bill_worker(
    model: BillingModel,
    intervals: Iterable[tuple[WorkerState, float, float, bool, bool]],
    gpu_type: str | None,
    gpus: int,
    parked: Iterable[tuple[float, float]] = (),
) -> tuple[float, float]:
    """(billed seconds, cost USD) of one worker under the worker-time basis.

    `intervals` are (state, start_s, end_s, active, processing); `parked` are (start_s, end_s)
    spans of its flash-boot snapshot. The billed seconds are rounded up once, over the worker's
    life: RUNNING 0 -> 2.4 s and RUNNING 7 -> 9.3 s bill 4.7 -> 5 s. The rounding's extra
    fraction is priced like the worker's last billed second."""
    price = model.price_usd_per_s(gpu_type)
    units = max(gpus, 1)  # a CPU worker bills as one unit
    billed_s = 0.0
    cost_usd = 0.0
    last_rate = 0.0
    for state, start_s, end_s, active, processing in intervals:
        if model.billed(state, processing, active):
            rate = price * units * ((1.0 - model.active_discount) if active else 1.0)
            billed_s += end_s - start_s
            cost_usd += (end_s - start_s) * rate
            last_rate = rate
    if model.parked_billed and model.basis is BillingBasis.WORKER_TIME:
        for start_s, end_s in parked:
            billed_s += end_s - start_s
            cost_usd += (end_s - start_s) * price * units
            last_rate = price * units
    rounded_s = round_up_s(billed_s, model.rounding_s)
    return rounded_s, cost_usd + (rounded_s - billed_s) * last_rate
