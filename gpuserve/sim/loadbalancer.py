"""Load-balancing endpoints in the simulator: fewest-in-flight routing under a per-worker cap, and held requests.

A load-balancing endpoint has no queue: each request is proxied to one worker's own HTTP
server. The engine (`sim/engine.py`) keeps the events (arrivals, completions, cold starts,
the Controller); this module decides where a request goes and what happens to one that finds
no room. The model, kept simple on purpose:

- A request goes to the ready worker (IDLE or RUNNING) with the fewest requests in flight,
  among those below `max_concurrency`; ties go to the most recently used worker (the one
  given a request last, then the newest), so load packs onto few workers and older ones can
  go idle and reach their idle timeout.
- With no worker that has room, the request is held (FIFO). A worker that gets room (one of
  its requests ends, or it becomes ready after its cold start) takes the oldest held
  requests first; while requests are held every ready worker is at its cap, so that worker
  is the one fewest-in-flight routing would pick anyway. A request still held
  `hold_timeout_s` after its arrival is rejected (status FAILED, `rejected` in the records;
  the live proxy answers 503). A hold timeout of 0 rejects at once.
- Held requests are demand: the JobQueue seam reports them as `in_queue` and requests in
  flight as `in_progress`, so every policy sizes the endpoint unchanged (and sizes it by
  `concurrency_target`, which `EndpointSpec` makes its `concurrency_per_worker`).
- Each request runs its own service time (drawn on arrival, in arrival order, so the k-th
  request has the k-th sample whether or not others are rejected). Concurrent requests on one
  worker do not slow each other down unless the service model has a `batching` curve (the
  engine applies it as for a queue endpoint, up to `max_concurrency`). A request that runs past
  `request_timeout_s`, counted from when a worker takes it, ends TIMED_OUT at that time.
- Cold starts are the engine's: the same profiles, stages and GPU placement as a queue
  endpoint's workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from gpuserve.core.types import LoadBalancingSpec

__all__ = ["LoadBalancer", "Routable"]


class Routable(Protocol):
    """What routing reads of a simulated worker."""

    idx: int  # start order: a higher index is a newer worker
    state: int  # the engine's state code
    in_flight: int
    capacity: int  # max_concurrency on a load-balancing endpoint
    last_used_s: float  # when it was last given a request (its ready time before that)


W = TypeVar("W", bound=Routable)


class LoadBalancer:
    """One load-balancing endpoint's routing rule, limits and the requests it held or rejected."""

    __slots__ = ("held", "hold_timeout_s", "ready_states", "rejected", "request_timeout_s", "service_s", "spec")

    def __init__(self, spec: LoadBalancingSpec, ready_states: Iterable[int]) -> None:
        self.spec = spec
        self.hold_timeout_s = spec.hold_timeout_s
        self.request_timeout_s = spec.request_timeout_s
        self.ready_states = frozenset(ready_states)
        self.held: list[int] = []  # requests that found no room on arrival (job indices)
        self.rejected: list[int] = []  # held requests refused at the hold timeout
        self.service_s: dict[int, float] = {}  # each waiting request's service time, drawn on its arrival

    def route(self, workers: Iterable[W]) -> W | None:
        """The ready worker with room and the fewest in flight (ties: most recently used, then newest)."""
        best: W | None = None
        for w in workers:
            if w.in_flight >= w.capacity or w.state not in self.ready_states:
                continue
            if (
                best is None
                or w.in_flight < best.in_flight
                or (
                    w.in_flight == best.in_flight
                    and (w.last_used_s > best.last_used_s or (w.last_used_s == best.last_used_s and w.idx > best.idx))
                )
            ):
                best = w
        return best
