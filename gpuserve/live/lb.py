"""Load-balancing endpoints' routing state: which worker gets a request, and the requests held while none has room.

A load-balancing endpoint has no queue: each request is proxied to a worker's own HTTP server.
The registry stays the one table of worker states and in-flight requests (each request is
recorded on its worker like a job, under an id `lb-N`, so IDLE/RUNNING, idle-since and the
controller's views follow it unchanged); the router adds only what routing needs:

- the pick: among ready workers (IDLE or RUNNING, not draining, below `max_concurrency`),
  the one with the fewest requests in flight, ties to the most recently used, so the
  newest-used workers stay busy and the others can reach their idle timeout;
- holding: a request that finds no room waits (FIFO) on a future until a slot frees or a
  worker becomes ready, at most `hold_timeout_s`, then is refused with the reason;
- demand: `stats()` reports held requests as queued and in-flight ones as in progress, so the
  Controller and every policy size a load-balancing endpoint exactly as a queue endpoint.

Runs on the server's event loop (the futures); the registry calls are thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from gpuserve.core.clock import Clock
from gpuserve.core.types import COUNTED_STATES, LoadBalancingSpec, QueueStats, WorkerState
from gpuserve.live.registry import LiveWorker, WorkerRegistry

__all__ = ["LbLease", "LbRouter", "Rejected"]

_READY = (WorkerState.IDLE, WorkerState.RUNNING)


class Rejected(Exception):
    """A request the endpoint gives up on without sending it anywhere; `reason` is said to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LbLease(NamedTuple):
    """One request's slot on one worker, from the pick until `LbRouter.release` (a tuple: one is made per request)."""

    worker_id: str
    upstream_url: str
    request_id: str


@dataclass
class _Held:
    future: asyncio.Future[LbLease]
    since_s: float


class LbRouter:
    """Routing and holding for one load-balancing endpoint."""

    def __init__(
        self,
        endpoint_id: str,
        spec: LoadBalancingSpec,
        registry: WorkerRegistry,
        clock: Clock,
        max_workers: Callable[[], int],
        on_release: Callable[[str, float], None] | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.spec = spec
        self.registry = registry
        self.clock = clock
        self._max_workers = max_workers
        self._on_release = on_release
        self._held: deque[_Held] = deque()
        self._ids = itertools.count(1)
        self._uses = itertools.count(1)
        self._last_used: dict[str, int] = {}  # worker -> order of its latest pick (ties go to the highest)
        self.submitted_total = 0
        self.last_arrival_s: float | None = None
        self.rejected_total = 0

    # -- the pick ---------------------------------------------------------------------------------

    def try_acquire(self, now_s: float) -> LbLease | None:
        """A slot on the best worker with room now, recorded in the registry; None when none has room."""
        best: LiveWorker | None = None
        best_key = (0, 0)
        cap = self.spec.max_concurrency
        last_used = self._last_used
        for w in self.registry.all(self.endpoint_id):  # ready, not draining, below max_concurrency
            n = len(w.in_flight)
            if n >= cap or w.state not in _READY or w.draining or w.upstream_url is None:
                continue
            key = (n, -last_used.get(w.worker_id, 0))
            if best is None or key < best_key:
                best, best_key = w, key
        if best is None or best.upstream_url is None:
            return None
        request_id = f"lb-{next(self._ids)}"
        self.registry.on_take(best.worker_id, [request_id], now_s)
        last_used[best.worker_id] = next(self._uses)
        return LbLease(best.worker_id, best.upstream_url, request_id)

    def acquire_nowait(self) -> LbLease | None:
        """A slot at once when a worker has room and no request is held; None: `await acquire()` instead.

        The common case without a coroutine per request; a request served here counts as an
        arrival exactly as one served by `acquire`."""
        if self._held:  # FIFO: a newcomer does not overtake requests already waiting
            return None
        now = self.clock.now_s()
        lease = self.try_acquire(now)
        if lease is not None:
            self.submitted_total += 1
            self.last_arrival_s = now
        return lease

    async def acquire(self, on_hold: Callable[[], None] | None = None) -> LbLease:
        """A slot for one request: at once when a worker has room, else held up to `hold_timeout_s`.

        `on_hold` runs once the request is held (the runtime consults the Controller then, so a
        held request at zero workers starts one at once). Raises `Rejected` with the reason.
        """
        now = self.clock.now_s()
        self.submitted_total += 1
        self.last_arrival_s = now
        if not self._held:  # FIFO: a newcomer does not overtake requests already waiting
            lease = self.try_acquire(now)
            if lease is not None:
                return lease
        if self.spec.hold_timeout_s <= 0:
            raise self._reject(0.0)
        entry = _Held(asyncio.get_running_loop().create_future(), now)
        self._held.append(entry)
        if on_hold is not None:
            on_hold()
        try:
            async with asyncio.timeout(self.spec.hold_timeout_s):
                return await entry.future
        except TimeoutError:
            if entry.future.done() and not entry.future.cancelled():
                return entry.future.result()  # handed a slot just as the wait ran out: use it
            raise self._reject(self.spec.hold_timeout_s) from None
        except asyncio.CancelledError:
            if entry.future.done() and not entry.future.cancelled():
                self.release(entry.future.result())
            raise
        finally:
            if entry in self._held:
                self._held.remove(entry)
            if not entry.future.done():
                entry.future.cancel()

    def release(self, lease: LbLease) -> None:
        """The request ended (answered, failed or cut): free its slot and hand it to the oldest held request."""
        now = self.clock.now_s()
        self.registry.on_job_end(lease.worker_id, lease.request_id, now)
        if self._held:
            self.dispatch(now)
        if self._on_release is not None:
            self._on_release(lease.worker_id, now)

    def dispatch(self, now_s: float | None = None) -> None:
        """Give free slots to held requests, oldest first (a slot freed, a worker became ready)."""
        now = self.clock.now_s() if now_s is None else now_s
        while self._held:
            entry = self._held[0]
            if entry.future.done():  # timed out or cancelled meanwhile
                self._held.popleft()
                continue
            lease = self.try_acquire(now)
            if lease is None:
                return
            self._held.popleft()
            entry.future.set_result(lease)

    def prune(self) -> None:
        """Forget the pick order of workers that are gone (the maintenance pass calls this)."""
        present = {w.worker_id for w in self.registry.all(self.endpoint_id)}
        for worker_id in [wid for wid in self._last_used if wid not in present]:
            del self._last_used[worker_id]

    def reject_held(self, reason: str) -> None:
        """Answer every held request now (the server is shutting down): none would get a worker."""
        self.rejected_total += sum(1 for e in self._held if not e.future.done())
        for entry in self._held:
            if not entry.future.done():
                entry.future.set_exception(Rejected(reason))
        self._held.clear()

    # -- what it says about itself ------------------------------------------------------------------

    def _reject(self, waited_s: float) -> Rejected:
        self.rejected_total += 1
        workers = self.registry.all(self.endpoint_id)
        ready = [w for w in workers if w.state in _READY and not w.draining]
        counted = sum(1 for w in workers if w.state in COUNTED_STATES and not w.draining)
        cap = self._max_workers()
        if cap == 0:
            return Rejected("max_workers is 0: the endpoint may run no worker")
        if ready and counted >= cap:
            return Rejected(
                f"max_workers reached ({counted} workers, each at max_concurrency {self.spec.max_concurrency})"
                f" for {waited_s:g} s"
            )
        if not ready:
            return Rejected(f"no healthy worker within {waited_s:g} s")
        return Rejected(f"no worker had room within {waited_s:g} s")

    @property
    def held(self) -> int:
        return sum(1 for e in self._held if not e.future.done())

    def in_flight(self) -> int:
        return sum(len(w.in_flight) for w in self.registry.all(self.endpoint_id))

    def stats(self, now_s: float) -> QueueStats:
        """Held requests as the queue, in-flight ones as in progress: what the Controller sizes the endpoint by."""
        waiting = [e for e in self._held if not e.future.done()]
        return QueueStats(
            in_queue=len(waiting),
            in_progress=self.in_flight(),
            oldest_queued_age_s=max(0.0, now_s - waiting[0].since_s) if waiting else 0.0,
            submitted_total=self.submitted_total,
            last_arrival_s=self.last_arrival_s,
        )
