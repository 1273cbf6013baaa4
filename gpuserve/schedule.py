"""When the Controller must be consulted (arrivals, ticks, wakes): one set of rules for the simulator and live.

The Controller decides *what* to do; this module decides *when* asking it can change
anything. A loop (the simulator's engine, the live runtime) consults the Controller:

1. on a job arrival, unless `must_consult_on_arrival` says the pass would be a no-op;
2. every `ConsultPlan.tick_interval_s` when the policy has a tick (periodic policies);
3. at `next_wake_s` of the last pass: the decision's `wake_at_s` or the guardrails' next
   keep-alive expiry, whichever comes first;
4. at `idle_expiry_wake_s` when a worker goes idle, so the guardrails retire it exactly
   when its keep-alive runs out rather than at the next unrelated event;
5. but a wake that `idle_wake_without_pass` finds no worker due at (its worker took a job
   since) moves on to the next expiry without a pass, for policies that promise enough.

Skipping is what lets a 1e6-request trace take seconds, not minutes: with 0.9 req/s and
a 600-s keep-alive nearly every arrival finds an idle worker, and consulting on each
would cost a full snapshot, decision and guardrail pass per job for nothing.

A policy earns a skip only by declaring it (gpuserve.policies.base.Policy:
`sized_by_demand`, `stateless_no_wake`, `observes_on_tick`); the defaults consult on
every arrival. Pure: standard library and gpuserve.core only, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpuserve.core.guardrails import due_time_s, next_expiry_s
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleAction, ScaleDecision

__all__ = ["ConsultPlan", "consult_plan", "idle_expiry_wake_s", "idle_wake_without_pass", "must_consult_on_arrival", "next_wake_s"]


@dataclass(frozen=True, slots=True)
class ConsultPlan:
    """When one endpoint's policy must be consulted; build it with `consult_plan`.

    - `tick_interval_s`: consult this often with no events (None: event-driven).
    - `skip_served_arrivals`: an arrival that a free slot takes at once, with no other job
      queued, needs no pass (see `must_consult_on_arrival` for why that is safe).
    - `skip_arrivals_at_max`: an arrival that queues while the endpoint already has
      `max_workers` workers needs no pass.
    - `idle_expiry_wakes`: when a worker goes idle, wake at its keep-alive expiry.
    - `skip_idle_wakes`: a wake with nothing queued and no worker due needs no pass
      (`idle_wake_without_pass` says when, and where the next wake goes).
    - `min_workers`, `max_workers`, `idle_timeout_s`, `scale_to_zero_grace_s`: the endpoint's
      scaling limits; `max_workers` includes the extra workers a spike may add (Runpod's
      `extra_workers`).
    """

    tick_interval_s: float | None
    skip_served_arrivals: bool
    skip_arrivals_at_max: bool
    idle_expiry_wakes: bool
    min_workers: int
    max_workers: int
    idle_timeout_s: float
    skip_idle_wakes: bool = False
    scale_to_zero_grace_s: float = 0.0

    def consulting_every_arrival(self) -> ConsultPlan:
        """The same plan with every skip off (the simulator's `consult_on_arrival: always`)."""
        return replace(self, skip_served_arrivals=False, skip_arrivals_at_max=False, skip_idle_wakes=False)


def consult_plan(
    spec: EndpointSpec,
    *,
    tick_interval_s: float | None,
    sized_by_demand: bool = False,
    stateless_no_wake: bool = False,
    observes_on_tick: bool = False,
) -> ConsultPlan:
    """The plan for an endpoint whose bound policy declares these schedule attributes.

    The flags are the policy's declarations already resolved for its params and this spec
    (`Controller.consult_plan` does that). Left at their defaults, every arrival is
    consulted. What each one promises, and so what it allows:

    - `sized_by_demand`: whenever no job is queued, `decide` asks for at most what demand
      needs, ceil(demand / concurrency_per_worker) workers, leaves its state as it was,
      asks for no wake and keeps the same `keep_alive_s`. Allows skipping served
      arrivals, provided the idle-expiry wake is scheduled (it then is, even for a policy
      with a tick, so a skipped pass never delays a retirement).
    - `stateless_no_wake`: `decide` keeps no state that changes, never sets `wake_at_s`,
      and its `keep_alive_s` depends on params only. Allows skipping queued arrivals at
      `max_workers`, where the guardrails can neither start nor stop a worker.
    - `observes_on_tick` (only with a tick): the policy is meant to see the endpoint at
      its ticks, not at every arrival, as Knative's autoscaler scrapes its pods each
      second and the activator pokes it only when no pod can take a request. Allows both
      arrival skips; its records then differ from consulting on every arrival by design.
    """
    ticked = observes_on_tick and tick_interval_s is not None
    lb = spec.load_balancing
    if lb is not None and lb.max_concurrency > lb.concurrency_target:
        # The sizing promise counts concurrency_per_worker slots a worker; a load-balancing
        # worker takes up to max_concurrency, beyond its target, so demand that fits the
        # ready workers can still ask for more of them: served arrivals must be shown.
        sized_by_demand = False
    scaling = spec.scaling
    return ConsultPlan(
        tick_interval_s=tick_interval_s,
        skip_served_arrivals=ticked or sized_by_demand,
        skip_arrivals_at_max=ticked or stateless_no_wake,
        # A tick looks at idle workers at least once an interval. A policy whose served
        # arrivals are skipped on the sizing promise needs the exact wake: with a 2-s tick,
        # a worker due at 10.0 s and an arrival at 10.5 s, consulting every arrival retires
        # it at 10.5 s, and only a wake at 10.0 s makes skipping that arrival change nothing.
        idle_expiry_wakes=tick_interval_s is None or sized_by_demand,
        min_workers=scaling.min_workers,
        # Extra workers start above max_workers on a spike: only past them can no pass start one.
        max_workers=scaling.max_workers + scaling.extra_workers,
        idle_timeout_s=scaling.idle_timeout_s,
        # Both promises, not a tick's: a stateless policy that asks for no wake and never more
        # than demand needs makes a pass with nothing queued and nobody due a no-op.
        skip_idle_wakes=sized_by_demand and stateless_no_wake,
        scale_to_zero_grace_s=scaling.scale_to_zero_grace_s,
    )


def must_consult_on_arrival(
    plan: ConsultPlan, free_slot: bool, workers: int, throttled: int, low_priority: bool = False
) -> bool:
    """Whether a job that just arrived must be shown to the Controller now.

    Arguments (by keyword, or by position on a hot path as the simulator does), as the
    caller sees the endpoint once the job is placed:
    - `free_slot`: a ready worker took the job at once (live: a parked, idle, non-draining
      worker will take it) and no other job is queued. False if the job waits.
    - `workers`: the counted workers (INITIALIZING, IDLE, RUNNING, THROTTLED), what the
      snapshot's `current_workers` would say.
    - `throttled`: how many of them are THROTTLED (up, but no GPU).
    - `low_priority`: Runpod's lowPriority flag; such a job never triggers scaling.

    It is safe to skip (return False) exactly when the pass would change nothing:

    - Served arrival (`free_slot`), plan `skip_served_arrivals`: the queue is empty and
      demand fits the ready workers' slots, so a policy sized by demand asks for no more
      workers than exist (request_count's ceil(demand / per_worker) does only if
      per_worker >= concurrency_per_worker: at per_worker 1 and concurrency 4, 4 jobs on
      one worker ask for 4 workers). All a pass could still do is shrink, and the
      guardrails stop only THROTTLED workers (below) or IDLE ones past their keep-alive.
      A worker is IDLE only while nothing is queued, when such a policy wants fewer
      workers than there are, so the idle-expiry wake retires each one as its keep-alive
      ends (the last worker's grace end is that pass's `next_wake_s`). One kept for
      `min_workers` stays kept until more workers start, and a start needs a queued job,
      which a worker idle that long would have taken. A pass in between finds nobody due.
    - Queued arrival at `max_workers`, plan `skip_arrivals_at_max`: the guardrails cannot
      start (the target is clamped to max) and cannot stop (the job queued, so no worker is
      idle), and a stateless policy that asks for no wake has nothing else to do.
    - Either way, never while a worker is THROTTLED: one is stopped whenever the target is
      below the worker count, not at a wake, so that pass is not a no-op.
    - A lowPriority job is never shown (Runpod: it does not trigger scale-up); the next
      tick or wake sees it like any queued job.

    Everything else is consulted, in particular every arrival that waits below
    `max_workers` (it may need a worker: at zero workers the guardrails start one).
    """
    if low_priority:
        return False
    if throttled:
        return True
    if free_slot:
        return not plan.skip_served_arrivals
    return not (plan.skip_arrivals_at_max and workers >= plan.max_workers)


def idle_expiry_wake_s(
    plan: ConsultPlan, idle_since_s: float, workers: int, keep_alive_s: float | None
) -> float | None:
    """When to consult after a worker went idle at `idle_since_s`, or None if no wake is needed.

    `keep_alive_s` is the last decision's (None: the endpoint's `idle_timeout_s`); a
    worker idle since 22 s with a 30-s keep-alive is due at exactly 52 s (`due_time_s`
    guards the float sum against landing an ulp early). No wake when the plan has none
    (its ticks will look) or when `workers` (counted) is at or below `min_workers`,
    since the guardrails retire nobody then. The wake may come early (the last worker
    also waits out `scale_to_zero_grace_s`); that pass then asks for the exact one.
    """
    if not plan.idle_expiry_wakes or workers <= plan.min_workers:
        return None
    return due_time_s(idle_since_s, plan.idle_timeout_s if keep_alive_s is None else keep_alive_s)


def idle_wake_without_pass(
    plan: ConsultPlan, now_s: float, workers: int, oldest_idle_since_s: float | None, keep_alive_s: float | None
) -> tuple[bool, float | None]:
    """At a wake with nothing queued and no THROTTLED worker: (skip the pass?, the next wake if so).

    `workers` counts the endpoint's workers, `oldest_idle_since_s` is the earliest
    `idle_since_s` of its IDLE workers (None: none is idle), `keep_alive_s` the last
    decision's (None: the idle timeout). A wake at 600 s for a worker idle since 0 s that took
    a job at 300 s and has been idle again since 400 s finds nobody due: no pass, next wake
    at 1000 s.

    Why that equals a pass, under the plan's `skip_idle_wakes` (sized by demand, stateless,
    no wake): with nothing queued the policy asks for at most the workers there are, so the
    guardrails start none (at or above min_workers; a spike's extra target never exceeds
    what demand needs) and can only stop IDLE workers past their keep-alive, the longest
    idle first; if that one is not due, nobody is. The policy's state and keep-alive stay as
    they were, and the pass's next wake would be `next_expiry_s`: the oldest idle worker's
    due time, with the scale-to-zero grace when it is the last worker, none at or below
    min_workers.
    """
    if not plan.skip_idle_wakes or workers < plan.min_workers:
        return False, None
    if workers <= plan.min_workers or oldest_idle_since_s is None:
        return True, None
    after_s = plan.idle_timeout_s if keep_alive_s is None else keep_alive_s
    if workers == 1:
        after_s += plan.scale_to_zero_grace_s
    due_s = due_time_s(oldest_idle_since_s, after_s)
    if now_s >= due_s:
        return False, None  # someone is due: the pass retires it
    return True, due_s


def next_wake_s(snapshot: EndpointSnapshot, decision: ScaleDecision, action: ScaleAction) -> float | None:
    """After a pass: the decision's `wake_at_s` or the next keep-alive expiry, whichever is first.

    The expiry counts only workers the action did not just stop, and only if it lies
    ahead: an expiry at or before `now_s` was acted on by this very pass.
    """
    wake = decision.wake_at_s
    expiry = next_expiry_s(snapshot, decision, action.stop)
    if expiry is not None and expiry > snapshot.now_s:
        wake = expiry if wake is None else min(wake, expiry)
    return wake
