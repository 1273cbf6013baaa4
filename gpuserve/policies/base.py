"""The policy contract and the registry that lets scenario files name policies.

A policy is pure: `decide(snapshot, params, state) -> (ScaleDecision, new_state)`, with
frozen params (validated once from the scenario's dict) and a frozen state. It never reads
a clock, sleeps or does I/O; time arrives as `snapshot.now_s`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision

__all__ = [
    "Policy",
    "PolicyInstance",
    "ScheduleFlag",
    "available",
    "build_params",
    "check_number",
    "get",
    "register",
]

P = TypeVar("P")
S = TypeVar("S")


# A schedule attribute is a fixed answer or, when it depends on the params or the endpoint,
# a function of both: request_count at 1 request per worker and 4 slots per worker can ask
# for 4 workers while 4 jobs run on one, so it is sized by demand only at per_worker >= slots.
ScheduleFlag = bool | Callable[[P, EndpointSpec], bool]


def _event_driven(_params: object) -> float | None:
    return None


@dataclass(frozen=True)
class Policy(Generic[P, S]):
    """A registered policy: its params type, initial state and pure decide function.

    `tick_interval_s` is how often the controller must consult it with no events (Knative
    ticks every 2 s); None (the default) means it is event-driven (consulted on arrivals
    and at the `wake_at_s` it asks for), which lets the simulator skip idle stretches entirely.

    The schedule attributes are promises that let the loop skip controller passes that
    could change nothing (gpuserve.schedule states each argument). Each defaults to False,
    the safe answer: the controller is consulted on every arrival.
    - `sized_by_demand`: whenever no job is queued, `decide` asks for at most
      ceil(demand / concurrency_per_worker) workers, keeps its state as it was, asks for
      no wake and keeps the same `keep_alive_s`. Arrivals a free slot takes at once are
      then not shown to it.
    - `stateless_no_wake`: `decide` keeps no state that changes, never sets `wake_at_s`
      and its `keep_alive_s` depends on params only. Arrivals that queue while the
      endpoint has `max_workers` workers are then not shown to it.
    - `observes_on_tick`: with a tick, the policy is meant to see the endpoint at its
      ticks (as Knative's autoscaler does), so both kinds of arrival above are not shown
      to it, by design rather than because the pass would be a no-op.
    """

    name: str
    params_type: type[P]
    initial_state: Callable[[P, EndpointSpec], S]
    decide: Callable[[EndpointSnapshot, P, S], tuple[ScaleDecision, S]]
    tick_interval_s: Callable[[P], float | None] = _event_driven
    doc: str = ""
    sized_by_demand: ScheduleFlag[P] = False
    stateless_no_wake: ScheduleFlag[P] = False
    observes_on_tick: ScheduleFlag[P] = False


def _flag(flag: ScheduleFlag[Any], params: Any, endpoint: EndpointSpec | None) -> bool:
    if isinstance(flag, bool):
        return flag
    return endpoint is not None and bool(flag(params, endpoint))


@dataclass
class PolicyInstance:
    """A policy bound to one endpoint's params, carrying its evolving state."""

    policy: Policy[Any, Any]
    params: Any
    state: Any

    @property
    def tick_interval_s(self) -> float | None:
        return self.policy.tick_interval_s(self.params)

    # The schedule attributes for this params and `endpoint`. None: the state no longer
    # belongs to one spec (kept across a spec swap), so only a fixed True still holds.
    def sized_by_demand(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.sized_by_demand, self.params, endpoint)

    def stateless_no_wake(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.stateless_no_wake, self.params, endpoint)

    def observes_on_tick(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.observes_on_tick, self.params, endpoint)

    def decide(self, snapshot: EndpointSnapshot) -> ScaleDecision:
        decision, self.state = self.policy.decide(snapshot, self.params, self.state)
        return decision


def check_number(name: str, value: object, *, positive: bool = False) -> float:
    """Reject a non-number, NaN or a negative (or, with `positive`, a zero) parameter value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(name, value, "must be a number")
    if positive and value <= 0:
        raise ConfigError(name, value, "must be positive")
    if value < 0:
        raise ConfigError(name, value, "cannot be negative")
    return float(value)


_REGISTRY: dict[str, Policy[Any, Any]] = {}


def register(policy: Policy[P, S]) -> Policy[P, S]:
    if policy.name in _REGISTRY:
        raise ValueError(f"policy {policy.name!r} is registered twice")
    _REGISTRY[policy.name] = policy
    return policy


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_params(params_type: type[P], raw: Mapping[str, Any], prefix: str = "policy.params") -> P:
    """Build a frozen params dataclass from a dict, naming any unknown or invalid field."""
    fields = {f.name: f for f in dataclasses.fields(params_type)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}", raw[key], f"is not a parameter (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        default = fields[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{prefix}.{key}", value, "must be true or false")
        elif isinstance(default, int | float) and not isinstance(value, bool):
            if not isinstance(value, int | float):
                raise ConfigError(f"{prefix}.{key}", value, "must be a number")
            if isinstance(default, float):
                value = float(value)
        kwargs[key] = value
    try:
        return params_type(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field}", exc.value, exc.problem) from None


def get(name: str, raw_params: Mapping[str, Any], endpoint: EndpointSpec) -> PolicyInstance:
    """Look up a policy by name and bind it to an endpoint; unknown names list the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError("policy.name", name, f"is not a known policy (known: {', '.join(sorted(_REGISTRY))})")
    policy = _REGISTRY[name]
    params = build_params(policy.params_type, raw_params)
    return PolicyInstance(policy=policy, params=params, state=policy.initial_state(params, endpoint))


def _load_builtin() -> None:
    # Importing the package registers every built-in policy module exactly once.
    import gpuserve.policies  # noqa: F401
