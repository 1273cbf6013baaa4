"""spare_workers: one worker per concurrency_per_worker jobs in the system, plus N warm spares."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core import ConfigError, EndpointSnapshot, EndpointSpec, ScaleDecision
from gpuserve.policies import Policy, register


@dataclass(frozen=True)
class SpareParams:
    spare_workers: int = 0  # kept on top of what demand needs: 1 -> 3 jobs at 1 slot each want 4

    def __post_init__(self) -> None:
        if isinstance(self.spare_workers, bool) or not isinstance(self.spare_workers, int) or self.spare_workers < 0:
            raise ConfigError("spare_workers", self.spare_workers, "must be an integer >= 0")


@dataclass(frozen=True)
class SpareState:
    """Stateless: everything it needs is in the snapshot."""


def initial_state(_params: SpareParams, _endpoint: EndpointSpec) -> SpareState:
    return SpareState()


def decide(snapshot: EndpointSnapshot, params: SpareParams, state: SpareState) -> tuple[ScaleDecision, SpareState]:
    needed = math.ceil(snapshot.demand / snapshot.endpoint.concurrency_per_worker)
    desired = needed + params.spare_workers
    return ScaleDecision(desired, f"{needed} for demand {snapshot.demand} + {params.spare_workers} spare"), state


POLICY = register(
    Policy(
        name="spare_workers",
        params_type=SpareParams,
        initial_state=initial_state,
        decide=decide,
        # No tick_interval_s: event-driven (arrivals, wakes, idle expiry).
        # With spares it asks for more than demand needs, so the promise holds only without them.
        sized_by_demand=lambda params, _endpoint: params.spare_workers == 0,
        stateless_no_wake=True,  # no state, never a wake_at_s, no keep_alive_s of its own
        doc=__doc__ or "",
    )
)
