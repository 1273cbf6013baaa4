"""Why a queued job is still waiting: a pure function of the endpoint's workers, the job's place in line and the spec.

Computed when asked (a /status of an IN_QUEUE job, /health), never stored per job: the answer
changes with every worker start and every take, and only a waiting client looks at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuserve.core.types import COUNTED_STATES, EndpointSpec, WorkerState, WorkerView

__all__ = ["Waiting", "explain_waiting"]


@dataclass(frozen=True)
class Waiting:
    """A waiting job's reason: `code` for programs (one per kind), `reason` for people, its 1-based `position`."""

    code: str
    reason: str
    position: int

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "position": self.position}


def explain_waiting(
    spec: EndpointSpec, workers: Sequence[WorkerView], position: int, *, low_priority: bool, now_s: float
) -> Waiting:
    """The reason the job at `position` (1 = next to be taken) of `spec`'s queue is not running yet.

    The checks run from the most to the least immediate cause: a worker with room takes it next;
    workers that fail to start or crash (no worker ready) say why, the newest failure's cause
    (`workers failing: image not found (REF), ...`), before a starting one is waited for, since
    the next start will likely fail alike; then what keeps more workers from starting.
    """
    ahead = f", {position - 1} job(s) ahead" if position > 1 else ""

    def says(code: str, reason: str) -> Waiting:
        return Waiting(code, reason + ahead, position)

    # DRAINING/OUTDATED workers take nothing new, so only the counted states can be the one to take it.
    counted = [w for w in workers if w.state in COUNTED_STATES]
    if any(w.state in (WorkerState.IDLE, WorkerState.RUNNING) and w.in_flight < w.capacity for w in counted):
        return says("worker_free", "a worker has room: it takes the job at its next poll")
    busy = sum(1 for w in counted if w.state is WorkerState.RUNNING)
    failing = [w for w in workers if w.state is WorkerState.UNHEALTHY]
    ready = any(w.state in (WorkerState.IDLE, WorkerState.RUNNING) for w in counted)
    if failing and not ready:
        newest = max(failing, key=lambda w: (w.failure is not None, w.created_s))  # the newest known cause
        cause = f"{newest.failure}, " if newest.failure else ""
        return says("workers_failing", f"workers failing: {cause}{len(failing)} unhealthy, restarting with back-off")
    if low_priority:
        # Runpod's lowPriority: the job never makes the autoscaler start a worker; it runs when one is free.
        return says("low_priority", "lowPriority: waiting for a free worker")
    starting = [w for w in counted if w.state is WorkerState.INITIALIZING]
    if starting:
        so_far_s = max(0.0, now_s - min(w.created_s for w in starting))
        return says("cold_start", f"waiting for a worker to start (cold start, {so_far_s:.1f} s so far)")
    if any(w.state is WorkerState.THROTTLED for w in counted):
        return says("throttled", f"no GPU of type {spec.gpu_type or 'any'} free (THROTTLED)")
    max_workers = spec.scaling.max_workers
    if max_workers == 0:
        return says("max_workers", "max_workers is 0: no worker will start")
    if len(counted) >= max_workers:
        return says("max_workers", f"max_workers reached ({busy} busy)")
    return says("scaling", "waiting for the autoscaler to start a worker")
