"""Rolling updates: which workers of an old version to retire next, and when to start a replacement first (pure).

A change to what an endpoint's workers run (handler, image, env) gives it a new version. The
runtime then asks `next_step` on every maintenance pass until no worker of an old version is
left. The rule keeps the endpoint's serving capacity:

1. Old workers that serve nothing yet (INITIALIZING, THROTTLED) are retired at once.
2. While a new-version worker is starting, wait for it.
3. Otherwise, when a surge worker started for this purpose has come up (or waits THROTTLED for
   the GPU an old one holds), retire one serving old worker (IDLE first, the longest idle, then
   RUNNING): it turns OUTDATED, finishes the jobs it holds and takes no more, so the
   replacement took over its slot before it left. A surge worker that failed (UNHEALTHY: an
   image that cannot be pulled, a handler that exits) retires nobody: the old workers keep
   serving while it is listed failing, and once it is gone another surge tries again, so a bad
   version never takes a serving endpoint down.
4. Otherwise start one surge worker of the new version if there is room (the account-wide
   worker limit); with no room, retire one old worker without a surge and let the Controller
   replace it through the normal cold start (capacity one lower for that one cold start).

One worker at a time, like Kubernetes' maxSurge 1 / maxUnavailable 0: an endpoint may run one
worker above its size (and its max_workers) while it rolls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpuserve.core.types import WorkerState

__all__ = ["Member", "RolloutStep", "next_step"]

_NOT_SERVING = (WorkerState.INITIALIZING, WorkerState.THROTTLED)
_SERVING = (WorkerState.IDLE, WorkerState.RUNNING)


@dataclass(frozen=True)
class Member:
    """One worker as the rollout sees it."""

    worker_id: str
    state: WorkerState
    version: str
    draining: bool = False  # already on its way out (OUTDATED, stopPod, scale-down)
    idle_since_s: float | None = None


@dataclass(frozen=True)
class RolloutStep:
    """What to do now: retire these workers (OUTDATED), start `surge` new ones, or nothing; `done` when no old worker is left."""

    retire: tuple[str, ...] = ()
    surge: int = 0
    done: bool = False
    surged: int = 0  # surge workers started and not yet matched by a retirement (the caller keeps it)


def next_step(members: Sequence[Member], version: str, *, surged: int, surge_room: bool) -> RolloutStep:
    """The next move of a rolling update to `version`; `surged` is the previous step's, `surge_room` whether one more worker may start."""
    old = [m for m in members if m.version != version and not m.draining and m.state in (*_NOT_SERVING, *_SERVING)]
    if not old:
        return RolloutStep(done=True)
    unready = tuple(sorted(m.worker_id for m in old if m.state in _NOT_SERVING))
    if unready:
        return RolloutStep(retire=unready, surged=surged)
    starting = [m for m in members if m.version == version and not m.draining and m.state is WorkerState.INITIALIZING]
    if starting:
        return RolloutStep(surged=surged)
    if surged > 0:
        new = [m for m in members if m.version == version and not m.draining]
        if not any(m.state in (*_SERVING, WorkerState.THROTTLED) for m in new):
            if any(m.state is WorkerState.UNHEALTHY for m in new):
                return RolloutStep(surged=surged)  # the replacement failed: keep serving on the old version
            surged = 0  # it failed and is gone: start another (below), or retire without one
    if surged <= 0 and surge_room:
        return RolloutStep(surge=1, surged=1)
    # Idle ones first (no job cut short, none waiting on them), the longest idle first; then busy ones.
    idle = sorted((m for m in old if m.state is WorkerState.IDLE), key=lambda m: (m.idle_since_s or 0.0, m.worker_id))
    busy = sorted((m for m in old if m.state is WorkerState.RUNNING), key=lambda m: m.worker_id)
    pick = (idle + busy)[0]
    return RolloutStep(retire=(pick.worker_id,), surged=max(0, surged - 1))
