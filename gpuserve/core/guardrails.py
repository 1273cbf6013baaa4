"""Guardrails that wrap any policy: min/max clamp, extra workers on spikes, idle timeout, scale-to-zero grace, max step, the account limit.

A policy states only its idea (a desired count). These rules turn that into a safe action
on concrete workers, so every policy gets the same limits without re-implementing them.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from gpuserve.core.types import EndpointSnapshot, ScaleAction, ScaleDecision, WorkerState

__all__ = ["apply_guardrails", "clamp_to_account", "due_time_s", "extra_target", "next_expiry_s"]


def due_time_s(since_s: float, after_s: float) -> float:
    """The first float time t at which `t - since_s >= after_s` holds.

    Guardrails compare `now - idle_since >= keep_alive`; in floats `(a + b) - a` can come
    out one ulp short of b (1019.3122553967629 + 10 - 1019.3122553967629 < 10), and a wake
    at `a + b` would find nobody due and linger. Nudging up by ulps never wakes early and
    keeps whole-number timelines exact (22 + 30 = 52).
    """
    t = since_s + after_s
    while t - since_s < after_s:
        t = math.nextafter(t, math.inf)
    return t


def _keep_alive_s(snapshot: EndpointSnapshot, decision: ScaleDecision) -> float:
    if decision.keep_alive_s is not None:
        return decision.keep_alive_s
    return snapshot.endpoint.scaling.idle_timeout_s


def extra_target(snapshot: EndpointSnapshot, target: int) -> int:
    """Runpod's extra workers: above max_workers, up to `extra_workers` more, while demand exceeds it.

    Only on a spike (the policy wants max_workers or more and the jobs in the system need more
    workers than max_workers can hold) and only when a host has the image cached (a start
    without a pull). An endpoint with 3 max workers of 1 slot, 7 jobs and 2 extra gets 5.
    """
    scaling = snapshot.endpoint.scaling
    extra = scaling.extra_workers
    if extra <= 0 or not snapshot.image_cached or target < scaling.max_workers:
        return target
    capacity = max(1, snapshot.endpoint.concurrency_per_worker)
    needed = -(-snapshot.demand // capacity)
    if needed <= scaling.max_workers:
        return target
    return max(target, min(scaling.max_workers + extra, needed))


def clamp_to_account(action: ScaleAction, in_use: int, limit: int | None) -> ScaleAction:
    """Starts cut to what the account-wide worker limit leaves (Runpod: 5 by default, more with balance).

    `in_use` counts workers across every endpoint of the account: 4 in use under a limit of
    5 let one of three asked-for starts through.
    """
    if limit is None or action.start <= 0:
        return action
    allowed = max(0, limit - in_use)
    if action.start <= allowed:
        return action
    return ScaleAction(
        start=allowed, stop=action.stop, target=action.target, reason=f"{action.reason}; account limit {limit} workers"
    )


def apply_guardrails(
    snapshot: EndpointSnapshot, decision: ScaleDecision, max_step: int | None = None
) -> ScaleAction:
    """Turn a policy decision into a ScaleAction that respects the endpoint's limits.

    - Target is clamped to [min_workers, max_workers]; a hold keeps the current count
      (clamped too, so a hold can still bring an endpoint up to its min). On a spike with
      the image cached, up to `extra_workers` more (see `extra_target`).
    - A job waiting at an endpoint with zero workers gets one (if max_workers allows),
      whatever the policy said: a hold with no data yet, or a wish for zero, would
      otherwise leave it waiting for a worker nobody starts.
    - Scale-up starts `target - current` workers (at most `max_step` per call if given).
    - Scale-down only stops workers that are THROTTLED (useless: no GPU) or IDLE for at
      least the keep-alive; the longest idle go first. The last worker additionally waits
      out `scale_to_zero_grace_s`. A busy worker is never stopped to meet a target.
    """
    scaling = snapshot.endpoint.scaling
    current = snapshot.current_workers
    desired = current if decision.is_hold else decision.desired_workers
    assert desired is not None
    target = max(scaling.min_workers, min(scaling.max_workers, desired))
    reason = decision.reason
    if target == 0 and current == 0 and snapshot.queue.scaling_queue > 0 and scaling.max_workers >= 1:
        # KPA's first arrival has no window sample yet and holds at 0; queue_delay's X = 4 s
        # would keep a job waiting 4 s for no worker at all. lowPriority jobs do not count
        # (Runpod: they never trigger scale-up).
        target, reason = 1, "job arrived at zero workers"
    if scaling.max_workers >= 1 and target >= scaling.max_workers and scaling.extra_workers and snapshot.image_cached:
        spiked = extra_target(snapshot, target)
        if spiked > target:
            target, reason = spiked, f"{reason}; {spiked - scaling.max_workers} extra worker(s) for a spike"
    if target > current:
        start = target - current
        if max_step is not None:
            start = min(start, max_step)
        return ScaleAction(start=start, target=target, reason=reason)
    if target == current:
        return ScaleAction(target=target, reason=reason)

    now_s = snapshot.now_s
    keep_alive_s = _keep_alive_s(snapshot, decision)
    excess = current - target
    throttled = [w.worker_id for w in snapshot.workers if w.state is WorkerState.THROTTLED]
    idle = sorted(
        (w for w in snapshot.workers if w.state is WorkerState.IDLE and w.in_flight == 0),
        key=lambda w: (-w.idle_for_s(now_s), w.worker_id),
    )
    stop: list[str] = throttled[:excess]
    remaining_after = current - len(stop)
    for w in idle:
        if len(stop) >= excess:
            break
        needed_idle_s = keep_alive_s
        if remaining_after == 1:
            needed_idle_s += scaling.scale_to_zero_grace_s
        if w.idle_for_s(now_s) >= needed_idle_s:
            stop.append(w.worker_id)
            remaining_after -= 1
    return ScaleAction(stop=tuple(stop), target=target, reason=reason)


def next_expiry_s(
    snapshot: EndpointSnapshot, decision: ScaleDecision, stopped: Collection[str] = ()
) -> float | None:
    """Earliest time an idle worker above min_workers reaches its keep-alive (for event-driven wakes).

    `stopped` names workers the action just stopped: the wake must come from the workers
    that remain, or stopping the one that was due would leave the others idle forever.
    """
    scaling = snapshot.endpoint.scaling
    remaining = [w for w in snapshot.counted if w.worker_id not in stopped]
    if len(remaining) <= scaling.min_workers:
        return None
    keep_alive_s = _keep_alive_s(snapshot, decision)
    if len(remaining) == 1:
        keep_alive_s += scaling.scale_to_zero_grace_s
    idle_since = [
        w.idle_since_s for w in remaining if w.state is WorkerState.IDLE and w.idle_since_s is not None
    ]
    if not idle_since:
        return None
    return due_time_s(min(idle_since), keep_alive_s)
