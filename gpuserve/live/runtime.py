"""The live runtime: store + worker registry + controller, serving the HTTP routes' calls on asyncio.

Everything here runs on the server's event loop. The waits (parked job-takes, /runsync,
job-stop) are gpuserve.live.waiters, webhook delivery is gpuserve.live.webhooks; one
background task applies deadlines, checks heartbeats, releases the jobs of lost workers
and runs the core Controller over the live backend with a steady clock (gpuserve.live.clock).
A store whose calls are round trips (`JobStore.blocking`: PostgreSQL) is called on a pool of
threads (`Runtime.io`), so the loop serves other requests while one waits on the database and
concurrent commits overlap; a job arrival's Controller pass then reads the queue first, off the
loop, and arrivals that come together share that pass (`_arrivals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gpuserve.controller import Controller
from gpuserve.core.billing import BillingModel
from gpuserve.core.clock import Clock
from gpuserve.core.errors import StoreError
from gpuserve.core.jobs import HANDLER_STUCK_KEY, JobStatus
from gpuserve.core.types import (
    COUNTED_STATES,
    Dispatch,
    EndpointSpec,
    QueueStats,
    ScaleAction,
    WorkerState,
    WorkerView,
)
from gpuserve.live.auth import token_matches
from gpuserve.live.backend import LiveBackend
from gpuserve.live.clock import SteadyClock
from gpuserve.live.deployment import Deployment
from gpuserve.live.lb import LbRouter
from gpuserve.live.lb_health import HealthMonitor
from gpuserve.live.ledger import LiveLedger
from gpuserve.live.registry import LiveWorker, WorkerRegistry
from gpuserve.live.rollout import Member, next_step
from gpuserve.live.settings import ServerSettings
from gpuserve.live.telemetry import ObservedBackend, Telemetry
from gpuserve.live.waiters import DoneWaiters, StopSignals, TakeWaiters
from gpuserve.live.waiting import Waiting, explain_waiting
from gpuserve.live.webhooks import WebhookSender
from gpuserve.live.worker_directory import WorkerDirectory
from gpuserve.schedule import idle_expiry_wake_s, must_consult_on_arrival
from gpuserve.store.base import (
    LEADER_LEASE_S,
    DoneOutcome,
    EndpointChange,
    Job,
    JobStore,
    SweepEvent,
    SweepKind,
    WorkerRecord,
)

__all__ = ["Endpoint", "Runtime"]

log = logging.getLogger("gpuserve.server")

T = TypeVar("T")
# A store's optional `finish_and_take` (PostgresJobStore): job-done's result and the worker's next take in one call.
FinishAndTake = Callable[
    [str, str, dict[str, Any], float, int | None, str, int, Collection[str]],
    tuple[tuple[DoneOutcome, Job | None], list[Job]],
]
# A store's optional `submit_with_stats` (PostgresJobStore): a submit and the queue's stats from its statement.
SubmitWithStats = Callable[..., tuple[Job, QueueStats]]
# Threads for a blocking store's calls: as many as its pool holds connections, so none waits for one.
_STORE_THREADS = 8
# A Job a local result write returned, kept for the /runsync waiting on it (read once, then dropped);
# bounded in case waiters vanish between the release and their wake-up.
_ENDED_KEPT = 10_000
# A shared store's record of a worker nobody has heard from for this long is dropped by a new leader
# that could not adopt it (a process worker whose server was killed, an actor that is gone).
STALE_WORKER_S = 600.0


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as the server serves it: its deployment and the digests of its client keys."""

    deployment: Deployment
    key_hashes: frozenset[str] = frozenset()

    @property
    def endpoint_id(self) -> str:
        return self.deployment.endpoint_id


class _Demand:
    """The Controller's JobQueue: the store for queue endpoints, the router (held + in flight) for load-balancing ones."""

    def __init__(self, store: JobStore, routers: dict[str, LbRouter]) -> None:
        self.store = store
        self.routers = routers
        # Read off the event loop just before a Controller pass (a blocking store), used by that pass only.
        self.prefetched: dict[str, QueueStats] = {}

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        router = self.routers.get(endpoint_id)
        if router is not None:
            return router.stats(now_s)
        cached = self.prefetched.get(endpoint_id)
        return cached if cached is not None else self.store.stats(endpoint_id, now_s)


class Runtime:
    """Owns the waits and the background loop; the HTTP routes are thin wrappers over it."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        store: JobStore,
        registry: WorkerRegistry,
        backend: LiveBackend | None = None,
        clock: Clock | None = None,
        settings: ServerSettings | None = None,
        global_key_hashes: frozenset[str] = frozenset(),
        billing: BillingModel | None = None,
        admin_key_hashes: frozenset[str] = frozenset(),
        admin_key_names: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = {e.endpoint_id: e for e in endpoints}
        self.store = store
        self.registry = registry
        self.backend = backend
        # On a shared store: this server's workers recorded for the others, and theirs recognised here.
        self.directory = WorkerDirectory(store, registry)
        self.guests_admitted = 0  # other servers' workers recognised here (entered as guests)
        self._next_guest_check_s = 0.0
        self._closing = False  # set by drain_workers: no new jobs, long polls answer at once
        self._drain_ends_s = 0.0  # event-loop time the drain gives up on running jobs
        self.clock = clock or SteadyClock()
        self.settings = settings or ServerSettings()
        self.global_key_hashes = global_key_hashes
        self.admin_key_hashes = admin_key_hashes  # the operator routes' keys (server/http.py admin_auth)
        self.admin_key_names = admin_key_names or {}  # digest -> the name the endpoint history records
        # What the workers cost, from their registry states (the simulator's billing rule).
        self.ledger = LiveLedger(billing or BillingModel(), self.clock, self._spec_of).attach(registry)
        self.telemetry = Telemetry().attach(registry)  # what /metrics reports
        self.controller: Controller | None = None
        # Load-balancing endpoints: a router each (no queue), and one health monitor for their workers.
        self.lb: dict[str, LbRouter] = {}
        for e in self.endpoints.values():
            self._add_router(e)
        self.health_monitor = HealthMonitor(set(self.lb), registry, self.settings, self.clock, self._lb_ready)
        self._health_task: asyncio.Task[None] | None = None
        self._demand = _Demand(store, self.lb)
        # A blocking store is called on these threads (see `io`); a local one inline.
        self._executor = (
            ThreadPoolExecutor(_STORE_THREADS, thread_name_prefix="gpuserve-store") if getattr(store, "blocking", False) else None
        )
        self._arrivals_due: dict[str, list[tuple[bool, str | None, QueueStats | None]]] = {}  # endpoint -> arrivals not yet shown
        self._tasks: set[asyncio.Task[None]] = set()  # arrival passes and requeues under way (drained at stop)
        self._ended: dict[str, Job] = {}  # job id -> the Job its local end returned, for its /runsync waiter
        if backend is not None:
            self.controller = Controller(
                [e.deployment.spec for e in self.endpoints.values()],
                ObservedBackend(backend, self.telemetry),
                self._demand,
                self.clock,
                account_max_workers=self.settings.account_max_workers,
            )
        self.takers = TakeWaiters()
        self.done_waiters = DoneWaiters()
        self.stops = StopSignals()
        self.webhooks = WebhookSender(self.settings)
        self._loop_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._next_tick_s = 0.0
        self._next_poll_s = 0.0
        self._next_fallback_s = 0.0
        self._next_lead_s = 0.0
        self._next_changes_s = 0.0
        self._leading: set[str] = set()  # endpoints whose Controller runs here (the store's leader lease)
        self._idle_wakes: dict[str, float] = {}  # endpoint -> when a worker that went idle may expire
        # bind_to_launch: job id -> the worker its arrival started, the only one that may take it.
        self._reserved: dict[str, str] = {}
        # Rolling updates under way (gpuserve.live.rollout): endpoint -> surge workers not yet matched by a retirement.
        self._rolling: dict[str, int] = {}
        # Endpoint changes other servers on a shared store made: the newest change seen, this server's own
        # (already applied), and what turns stored changes into endpoints (the Platform's EndpointBook).
        self.changes_seq = 0
        self._own_changes: set[int] = set()
        self.endpoint_changes: Callable[[list[EndpointChange]], list[tuple[str, Endpoint | None]]] | None = None
        # Arrivals shown to the controller and skipped by the consult schedule; with
        # consult_on_arrival="verify", what a skipped pass would have done (it must be nothing).
        self.arrivals_consulted = 0
        self.arrivals_skipped = 0
        self.skip_divergences: list[str] = []
        # Write first, then tell: while the store cannot write (a full disk), why; the server is
        # read-only then (no new jobs, reads served) and probes the store until a write succeeds.
        self.read_only: str | None = None
        self._next_probe_s = 0.0
        # Jobs released from lost workers whose requeue could not be written: tried again once it can.
        self._unrequeued: list[tuple[str, list[str], str]] = []

    # -- the store, off the loop --------------------------------------------------------------------

    @property
    def offloaded(self) -> bool:
        """Whether store calls run on threads (a blocking store) rather than inline."""
        return self._executor is not None

    async def io(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)`, a store call: on the store's threads for a blocking store, else inline."""
        if self._executor is None:
            return call(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.backend is not None:
            for ep in self.endpoints.values():
                self.backend.configure(ep.deployment)
        self._loop_task = asyncio.create_task(self._background(), name="gpuserve-maintenance")
        if self.lb and self.backend is not None:
            self._health_task = asyncio.create_task(self.health_monitor.run(), name="gpuserve-lb-health")
        self._lead(self.clock.now_s())
        self.webhooks.start(self.store, self.clock, self.io)  # the outbox: rows a previous life left due go out now
        # Other servers on a shared store: their submits wake this one's parked takes, their results its waiters.
        self.store.listen(self._from_loop(self._queued_elsewhere), self._from_loop(self._ended_elsewhere))
        # Jobs recovered from a previous life need a worker now, not at the next tick.
        for eid in self.endpoints:
            if self.store.stats(eid, self.clock.now_s()).in_queue:
                self._arrival(eid, low_priority=False)

    def _lead(self, now_s: float) -> None:
        """Renew (or try to take) each endpoint's leader lease: only the leader's Controller scales it."""
        self._next_lead_s = now_s + 1.0
        if self.controller is not None:
            leading = self._lead_terms(now_s)
            self._adopt(leading - self._leading, now_s)
            self._now_leading(leading)

    def _lead_terms(self, now_s: float) -> set[str]:
        """The store's side of `_lead` (no runtime state: it may run on a store thread)."""
        leading = set()
        for eid in self.endpoints:
            try:
                if self.store.lead(eid, now_s, LEADER_LEASE_S) is not None:
                    leading.add(eid)
            except Exception:
                log.exception("could not renew the leader lease of %s", eid)  # not leading, then
        return leading

    def _now_leading(self, leading: set[str]) -> None:
        for eid in leading - self._leading:
            log.info("leading %s: this server's Controller scales it", eid)
        self._leading = leading

    # -- workers other servers started (a shared store) -------------------------------------------

    def _adopt(self, endpoint_ids: set[str], now_s: float) -> None:
        """Newly led endpoints: adopt the workers a previous leader left running, before this Controller counts any.

        Each recorded worker is entered as a guest (with the jobs the store says it holds) and offered
        to the backend, which takes it over if it still runs (Ray actors do; process workers died with
        their server). A record nobody has heard from for STALE_WORKER_S is dropped. Store and backend
        calls only (it may run on a store thread).
        """
        if not endpoint_ids or not self.directory.shared or self.backend is None:
            return
        for eid in sorted(endpoint_ids):
            try:
                records = self.store.workers_of(eid)
                held = self._held_by(eid)
            except Exception:
                log.exception("could not read the workers of %s from the store", eid)
                continue
            adopted = []
            for rec in records:
                mine = self.registry.get(rec.worker_id)
                if mine is not None and not mine.guest:
                    continue
                self._enter_guest(rec, held.get(rec.worker_id, {}), now_s)
                try:
                    ok = self.backend.adopt(rec, now_s)
                except Exception:
                    log.exception("adopting worker %s failed", rec.worker_id)
                    ok = False
                if ok:
                    adopted.append(rec.worker_id)
                elif now_s - (rec.seen_s if rec.seen_s is not None else rec.registered_s) > STALE_WORKER_S:
                    self.registry.forget_guest(rec.worker_id)
                    with contextlib.suppress(Exception):
                        self.store.drop_worker(rec.worker_id)
            if adopted:
                log.info("leading %s: adopted %d running workers %s", eid, len(adopted), ", ".join(adopted))

    def _held_by(self, endpoint_id: str) -> dict[str, dict[str, int]]:
        """worker id -> {job id: attempt} of the endpoint's running jobs, as the store holds them."""
        held: dict[str, dict[str, int]] = {}
        for job in self.store.in_progress(endpoint_id):
            if job.worker_id is not None:
                held.setdefault(job.worker_id, {})[job.id] = job.attempt
        return held

    def _enter_guest(self, rec: WorkerRecord, held: dict[str, int], now_s: float) -> LiveWorker:
        return self.registry.add_guest(
            rec.worker_id, rec.endpoint_id, rec.token_hash, now_s,
            capacity=rec.capacity, spec_version=rec.spec_version, seen=rec.seen_s is not None, held=held,
            lists_jobs=rec.lists_jobs,
        )

    async def authenticate_worker(self, endpoint_id: str, worker_id: str, token: str) -> LiveWorker | None:
        """The worker whose token this is, or None. On a shared store a worker another server started is
        recognised by its record there and entered as a guest; this server adopts it if it leads its endpoint."""
        worker = self.registry.authenticate(worker_id, token)
        if worker is not None or not self.directory.shared or self.registry.get(worker_id) is not None:
            return worker
        rec = await self.io(self.store.find_worker, worker_id)
        if rec is None or rec.endpoint_id != endpoint_id or not token_matches(rec.token_hash, token):
            return None
        held = (await self.io(self._held_by, endpoint_id)).get(worker_id, {})
        now = self.clock.now_s()
        self._enter_guest(rec, held, now)
        self.guests_admitted += 1
        if endpoint_id in self._leading and self.backend is not None:
            try:
                await asyncio.to_thread(self.backend.adopt, rec, now)
            except Exception:
                log.exception("adopting worker %s failed", worker_id)
        return self.registry.authenticate(worker_id, token)

    async def _heard_elsewhere(self, now_s: float) -> None:
        """What other servers heard, from the store's records: before silent workers are declared lost, their
        heartbeats elsewhere count too (a proxy spreads a worker's calls over the replicas); and, once a
        second, whether a guest holding jobs lists its jobs in heartbeats (learnt wherever it did first),
        without which a job whose take reply it never got would never be released here."""
        silent = self.registry.silent_since(now_s, self.settings.liveness_timeout_s)
        unsure = []
        if now_s >= self._next_guest_check_s:
            self._next_guest_check_s = now_s + 1.0
            unsure = [w for w in self.registry.guests() if w.in_flight and not w.lists_jobs]
        if not silent and not unsure:
            return
        try:
            records = await self.io(lambda: [self.store.find_worker(w.worker_id) for w in silent + unsure])
        except Exception:
            log.exception("could not read worker records from the store")
            return
        for w, rec in zip(silent + unsure, records, strict=True):
            if rec is None:
                continue
            if rec.seen_s is not None and w.last_seen_s is not None and rec.seen_s > w.last_seen_s:
                self.registry.heard_from(w.worker_id, rec.seen_s)
            if rec.lists_jobs:
                self.registry.lists_jobs(w.worker_id)

    def _ended_elsewhere(self, job_id: str) -> None:
        """A job ended (here or on another server): its /runsync waiters wake, and a worker here holds it no more."""
        self.done_waiters.release(job_id)
        holder = self.registry.holder_of(job_id)
        if holder is not None:
            self.registry.on_job_end(holder, job_id, self.clock.now_s())

    def _from_loop(self, call: Callable[[str], None]) -> Callable[[str], None]:
        """`call`, run on the event loop from the store's thread (dropped once the loop has closed)."""
        loop = self.loop
        assert loop is not None

        def soon(arg: str) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(call, arg)

        return soon

    def _queued_elsewhere(self, endpoint_id: str) -> None:
        """Another server queued a job here ("": anything may have changed): wake a take, show the arrival."""
        for eid in [endpoint_id] if endpoint_id else list(self.endpoints):
            if eid in self.endpoints and not self._closing:
                self.takers.wake(eid, 1)
                self._arrival(eid, low_priority=False)

    @property
    def closing(self) -> bool:
        """Shutting down: /run and /runsync are refused (503), no job is handed out."""
        return self._closing

    def drain_left_s(self) -> float:
        """Seconds the drain still gives running jobs (0 when not draining)."""
        if not self._closing or self.loop is None:
            return 0.0
        return max(0.0, self._drain_ends_s - self.loop.time())

    async def drain_workers(self) -> None:
        """SIGTERM: take no new jobs, let running ones finish for `drain_timeout_s`, requeue the rest.

        Runs while the HTTP socket is still open, so workers can post results and exit cleanly
        (uvicorn closes its listening socket before the app's lifespan ends; stopping workers
        only then would refuse their pings, mark them UNHEALTHY and end them with SIGKILL).
        A /runsync caller whose job is queued learns its id and IN_QUEUE at once (no worker will
        start it now); one whose job runs waits for it, at most until the drain ends, and then
        gets its result or its id and IN_QUEUE.
        """
        if self._closing:  # already drained (the server's shutdown runs before the app's lifespan end)
            return
        self._closing = True
        for eid in sorted(self._leading):  # another server's Controller takes over at once
            with contextlib.suppress(Exception):
                self.store.resign(eid)
        self._leading = set()
        self._drain_ends_s = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        if self._loop_task is not None:  # no more scaling: nothing may replace a stopping worker
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        self.takers.wake_all()
        self.stops.wake_all()
        for router in self.lb.values():  # no worker will start for them now
            router.reject_held("the server is shutting down")
        for job_id in self.done_waiters.job_ids():
            job = await self.io(self.store.get, job_id)
            if job is None or job.status is not JobStatus.IN_PROGRESS:
                self.done_waiters.release(job_id)
        if self.backend is not None:
            await asyncio.to_thread(self.backend.shutdown)
        if self._tasks:  # requeues and arrival passes under way finish before what is left is requeued
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._requeue_unfinished()  # the drain's last step: inline, nothing else is served now
        for job_id in self.done_waiters.job_ids():
            self.done_waiters.release(job_id)

    def _requeue_unfinished(self) -> None:
        """After the drain: jobs still running go back to the queue, durably, with the attempt counted.

        Without this, a job cut by the shutdown would restart with the retry count it had, and a
        job that kills its worker at every start would never reach max_retries.
        """
        now = self.clock.now_s()
        reason = "the server shut down before the job ended"
        for worker_id in sorted({w.worker_id for w in self.registry.all()} | set(self.registry.orphaned())):
            held = self.registry.release_jobs(worker_id, now)
            if held:
                self._requeue_stored(worker_id, held, reason, now)
        # Held by no registered worker (e.g. one added by hand); on a shared store, other servers' workers hold those.
        for job in self.store.in_progress() if self.store.poll_fallback_s is None else []:
            if job.worker_id is not None:
                self._requeue_stored(job.worker_id, [job.id], reason, now)

    async def stop(self) -> None:
        await self.drain_workers()
        await self.webhooks.close()
        await self.health_monitor.aclose()
        await asyncio.to_thread(self.directory.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- endpoints changed at run time (gpuserve endpoints update / add / remove) ---------------------

    def set_endpoint(self, endpoint: Endpoint, *, configured: bool = False) -> str | None:
        """Add an endpoint, or change a running one in place; returns the version it replaced (None: added).

        Scaling, policy and limits apply at once, without touching a worker. A new version (what
        the workers run: handler, image, env) starts a rolling update (gpuserve.live.rollout).
        Raises ConfigError (nothing changed) when the backend refuses the deployment;
        `configured`: the caller has had the backend accept it already (off the event loop).
        """
        eid = endpoint.endpoint_id
        old = self.endpoints.get(eid)
        if self.backend is not None and not configured:
            self.backend.configure(endpoint.deployment)  # validates first: a refusal changes nothing
        spec = endpoint.deployment.spec
        self.endpoints[eid] = endpoint
        if old is None:
            if self.controller is not None:
                self.controller.add_endpoint(spec)
            if self._add_router(endpoint) and self.backend is not None and self.loop is not None:
                self.health_monitor.endpoint_ids.add(eid)
                if self._health_task is None:
                    self._health_task = self.loop.create_task(self.health_monitor.run(), name="gpuserve-lb-health")
            self._lead(self.clock.now_s())
            log.info("endpoint %s added (version %s)", eid, endpoint.deployment.version)
            return None
        router = self.lb.get(eid)
        if router is not None and spec.load_balancing is not None:
            router.spec = spec.load_balancing
        if self.controller is not None:
            self.controller.update_endpoint(spec)
        before = old.deployment.version
        if endpoint.deployment.version != before:
            log.info("endpoint %s: version %s -> %s, rolling update", eid, before, endpoint.deployment.version)
            self._rolling.setdefault(eid, 0)
            self._roll(eid, self.clock.now_s())
        self._consult(eid)  # a new max_workers or policy acts now, not at the next tick
        return before

    def own_change(self, seq: int) -> None:
        """A change this server stored and applied itself: not to be applied again when the store lists it."""
        self._own_changes.add(seq)

    def _stored_changes(self, changes: list[EndpointChange]) -> None:
        """Changes other servers on the shared store made since the last look: applied here too."""
        if not changes:
            return
        self.changes_seq = max(self.changes_seq, max(c.seq for c in changes))
        fresh = [c for c in changes if c.seq not in self._own_changes]
        self._own_changes = {seq for seq in self._own_changes if seq > self.changes_seq}
        if not fresh or self.endpoint_changes is None:
            return
        try:
            updated = self.endpoint_changes(fresh)
        except Exception:
            log.exception("could not apply endpoint changes made on another server")
            return
        for eid, endpoint in updated:
            try:
                if endpoint is None:
                    self.remove_endpoint(eid)
                else:
                    self.set_endpoint(endpoint)
                log.info("endpoint %s changed on another server: applied here", eid)
            except Exception:
                log.exception("could not apply the change to %s made on another server", eid)

    def remove_endpoint(self, endpoint_id: str) -> int:
        """Stop serving an endpoint: its queued jobs are deleted (how many returned), its workers finish what they run and stop."""
        ep = self.endpoints.pop(endpoint_id, None)
        if ep is None:
            return 0
        if self.controller is not None:
            self.controller.remove_endpoint(endpoint_id)
        self._leading.discard(endpoint_id)
        self._idle_wakes.pop(endpoint_id, None)
        self._rolling.pop(endpoint_id, None)
        with contextlib.suppress(Exception):
            self.store.resign(endpoint_id)
        router = self.lb.pop(endpoint_id, None)
        if router is not None:
            router.reject_held(f"endpoint {endpoint_id!r} was removed")
            self.health_monitor.endpoint_ids.discard(endpoint_id)
        purged = self.store.purge(endpoint_id)
        for w in self.registry.all(endpoint_id):
            self.recycle(w.worker_id)  # draining: no new job; the backend stops it once its jobs end
        self.takers.wake_all()
        log.info("endpoint %s removed: %d queued job(s) deleted, its workers drain", endpoint_id, purged)
        return purged

    def _add_router(self, e: Endpoint) -> bool:
        lb = e.deployment.spec.load_balancing
        if lb is None:
            return False
        eid = e.endpoint_id
        self.lb[eid] = LbRouter(
            eid,
            lb,
            self.registry,
            self.clock,
            max_workers=functools.partial(self._max_workers, eid),
            on_release=functools.partial(self._idle_wake, eid),
        )
        return True

    def _consult(self, endpoint_id: str) -> None:
        if self.controller is None or self._closing or endpoint_id not in self._leading:
            return
        try:
            self.controller.tick_endpoint(endpoint_id, self.clock.now_s())
        except Exception:
            log.exception("controller failed after a change to %s", endpoint_id)

    def rolling(self, endpoint_id: str) -> bool:
        """Whether a rolling update of the endpoint is under way."""
        return endpoint_id in self._rolling

    def _roll(self, endpoint_id: str, now_s: float) -> None:
        """One step of an endpoint's rolling update (gpuserve.live.rollout): retire old workers, or start a surge one."""
        ep = self.endpoints.get(endpoint_id)
        if ep is None or self.backend is None or self._closing:
            self._rolling.pop(endpoint_id, None)
            return
        if endpoint_id not in self._leading:
            return
        members = [
            Member(w.worker_id, w.state, w.spec_version, w.draining, w.idle_since_s) for w in self.registry.all(endpoint_id)
        ]
        room = True
        if self.controller is not None and self.settings.account_max_workers is not None:
            room = self.controller.account_workers() < self.settings.account_max_workers
        step = next_step(members, ep.deployment.version, surged=self._rolling.get(endpoint_id, 0), surge_room=room)
        if step.done:
            self._rolling.pop(endpoint_id, None)
            log.info("endpoint %s: rolling update to %s done", endpoint_id, ep.deployment.version)
            return
        self._rolling[endpoint_id] = step.surged
        for worker_id in step.retire:
            # OUTDATED: takes no new job, finishes what it holds; the backend stops it then.
            self.registry.set_state(worker_id, WorkerState.OUTDATED, now_s)
            self.recycle(worker_id)
        if step.surge:
            action = ScaleAction(start=step.surge, reason=f"rolling update to {ep.deployment.version}: a replacement first")
            try:
                self.backend.apply(ep.deployment.spec, action, now_s)
            except Exception:
                log.exception("could not start a replacement worker for %s", endpoint_id)
        if step.retire:
            self._consult(endpoint_id)  # the Controller replaces them now if the endpoint needs them

    # -- load-balancing endpoints --------------------------------------------------------------------

    def _max_workers(self, endpoint_id: str) -> int:
        if self.controller is not None:
            return self.controller.spec(endpoint_id).scaling.max_workers
        return self.endpoints[endpoint_id].deployment.spec.scaling.max_workers

    def queue_stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        """What the Controller sees of an endpoint's queue: the store's, or a load-balancing endpoint's held and in-flight requests."""
        router = self.lb.get(endpoint_id)
        return self.store.stats(endpoint_id, now_s) if router is None else router.stats(now_s)

    def lb_held(self, endpoint_id: str) -> None:
        """A request is held (no worker had room): show the Controller at once, so a worker starts for it."""
        if self.controller is None or self._closing or endpoint_id not in self._leading:
            return
        self.arrivals_consulted += 1
        try:
            self.controller.tick_endpoint(endpoint_id, self.clock.now_s())
        except Exception:
            log.exception("controller failed on a held request for %s", endpoint_id)

    def _lb_ready(self, endpoint_id: str) -> None:
        router = self.lb.get(endpoint_id)
        if router is not None:
            router.dispatch()

    # -- client side -------------------------------------------------------------------------------

    async def submit(
        self,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        low_priority: bool,
        execution_timeout_s: float,
        ttl_s: float,
        retention_s: float,
    ) -> Job:
        kwargs = {"now_s": self.clock.now_s(), "low_priority": low_priority, "execution_timeout_s": execution_timeout_s,
                  "ttl_s": ttl_s, "retention_s": retention_s}
        # A store that can read the queue in the submit's own statement (PostgreSQL) does, when the arrival's
        # Controller pass would read it next.
        with_stats: SubmitWithStats | None = getattr(self.store, "submit_with_stats", None)
        stats: QueueStats | None = None
        if with_stats is not None and self._arrival_reads_queue(endpoint_id, low_priority):
            job, stats = await self.io(with_stats, endpoint_id, payload, **kwargs)
        else:
            job = await self.io(self.store.submit, endpoint_id, payload, **kwargs)
        self.telemetry.job_submitted(job)
        # Scale first, then wake: a flash-boot revival clears its worker's drain inside
        # _arrival, so its parked take (skipped while draining) can receive this job
        # (a deferred pass, on a blocking store, wakes a take again when it starts or revives one).
        self._arrival(endpoint_id, low_priority, free_slot=self.takers.has_free(endpoint_id), job_id=job.id, stats=stats)
        self.takers.wake(endpoint_id, 1)
        return job

    def _arrival_reads_queue(self, endpoint_id: str, low_priority: bool) -> bool:
        """Whether a job arriving now would have its Controller pass read the queue from a blocking store."""
        return (
            self.controller is not None and self.backend is not None and not self._closing and self.offloaded
            and endpoint_id in self._leading and not low_priority and not self._skips_any_arrival(endpoint_id)
        )

    def _arrival(
        self, endpoint_id: str, low_priority: bool, *, free_slot: bool = False, job_id: str | None = None,
        stats: QueueStats | None = None,
    ) -> None:
        """Show a new (or requeued) job to the controller, unless gpuserve.schedule proves the pass a no-op.

        `free_slot`: a parked, idle worker will take the job at once. The schedule's other
        inputs are read here: the counted workers and the THROTTLED ones among them, and
        whether anything else waits in the queue (then the job did not find a free slot).
        `stats`: the queue as the job's own submit read it (this job in it), if it did.
        """
        controller = self.controller
        if controller is None or self.backend is None or self._closing or endpoint_id not in self._leading:
            return
        if low_priority:  # Runpod: a lowPriority job never triggers scaling; the next tick or wake sees it
            self.arrivals_skipped += 1
            return
        if self.offloaded:  # the queue is read off the loop first; arrivals meanwhile share that pass
            due = self._arrivals_due.setdefault(endpoint_id, [])
            due.append((free_slot, job_id, stats))
            if len(due) == 1:
                self._spawn(self._arrivals(endpoint_id))
            return
        self._consult_arrival(endpoint_id, free_slot, job_id)

    async def _arrivals(self, endpoint_id: str) -> None:
        """A blocking store: show the arrivals due on an endpoint to the Controller, the queue read off the loop.

        The first arrival of a batch starts the task; arrivals before it runs share its pass (one read,
        made after all of them), those during its read start the next batch, so every pass reads the queue
        after the jobs it shows (a batch of one job whose submit read the queue uses that read).
        bind_to_launch passes one per job, since each may start the worker its job waits for.
        """
        controller = self.controller
        try:
            while due := self._arrivals_due.pop(endpoint_id, []):
                assert controller is not None
                if self._skips_any_arrival(endpoint_id):  # no read needed: every such pass is a no-op
                    self.arrivals_skipped += len(due)
                    continue
                read = due[0][2] if len(due) == 1 else None
                stats = read if read is not None else await self.io(self.store.stats, endpoint_id, self.clock.now_s())
                if self._closing or endpoint_id not in self._leading:
                    return
                if controller.spec(endpoint_id).dispatch is Dispatch.BIND_TO_LAUNCH:
                    passes = due
                else:
                    passes = [(all(free for free, _, _ in due), None, None)]
                self._demand.prefetched[endpoint_id] = stats
                try:
                    for free_slot, job_id, _ in passes:
                        if self._consult_arrival(endpoint_id, free_slot, job_id):
                            self.takers.wake(endpoint_id, 1)  # a started or revived worker's take may be parked
                finally:
                    self._demand.prefetched.pop(endpoint_id, None)
        except Exception:
            log.exception("controller failed on job arrivals for %s", endpoint_id)

    def _skips_any_arrival(self, endpoint_id: str) -> bool:
        """Whether the schedule skips an arrival now whether or not it found a free slot (e.g. at max_workers)."""
        assert self.controller is not None and self.backend is not None
        if self.settings.consult_on_arrival != "auto":
            return False
        plan = self.controller.consult_plan(endpoint_id)
        if not (plan.skip_served_arrivals and plan.skip_arrivals_at_max):
            return False
        counted = [v for v in self.backend.workers(endpoint_id) if v.state in COUNTED_STATES]
        throttled = sum(1 for v in counted if v.state is WorkerState.THROTTLED)
        return not any(must_consult_on_arrival(plan, free, len(counted), throttled) for free in (True, False))

    def _consult_arrival(self, endpoint_id: str, free_slot: bool, job_id: str | None) -> bool:
        """One arrival shown to the Controller (unless the schedule proves it a no-op); whether it acted."""
        controller = self.controller
        assert controller is not None and self.backend is not None
        now = self.clock.now_s()
        mode = self.settings.consult_on_arrival
        try:
            plan = controller.consult_plan(endpoint_id)
            # Reading the workers costs about a third of a pass; do it only when the plan may skip.
            if mode != "always" and (plan.skip_served_arrivals or plan.skip_arrivals_at_max):
                views = self.backend.workers(endpoint_id)
                counted = [v for v in views if v.state in COUNTED_STATES]
                throttled = sum(1 for v in counted if v.state is WorkerState.THROTTLED)
                served = free_slot and self._demand.stats(endpoint_id, now).in_queue <= 1
                if not must_consult_on_arrival(plan, served, len(counted), throttled):
                    self.arrivals_skipped += 1
                    if mode == "verify":
                        self._verify_skip(endpoint_id, now)
                    return False
            self.arrivals_consulted += 1
            bind = job_id is not None and controller.spec(endpoint_id).dispatch is Dispatch.BIND_TO_LAUNCH
            before = {w.worker_id for w in self.registry.all(endpoint_id)} if bind else set()
            step = controller.tick_endpoint(endpoint_id, now)
            if bind and step.action.start and job_id is not None:
                self._reserve(endpoint_id, job_id, before)
            return not step.action.is_noop
        except Exception:
            log.exception("controller failed on a job arrival for %s", endpoint_id)
            return False

    def _reserve(self, endpoint_id: str, job_id: str, before: set[str]) -> None:
        """bind_to_launch: the job whose arrival started a worker waits for that worker (AWS Lambda's model)."""
        taken = set(self._reserved.values())
        started = sorted(w.worker_id for w in self.registry.all(endpoint_id) if w.worker_id not in before and w.worker_id not in taken)
        if started:
            self._reserved[job_id] = started[0]

    def _skip_for(self, worker_id: str) -> frozenset[str]:
        """Jobs reserved for other workers; a reservation ends when its worker is gone or unhealthy."""
        if not self._reserved:
            return frozenset()
        for job_id, holder in list(self._reserved.items()):
            w = self.registry.get(holder)
            if w is None or w.state is WorkerState.UNHEALTHY or w.draining:
                del self._reserved[job_id]
        return frozenset(j for j, holder in self._reserved.items() if holder != worker_id)

    def _taken(self, jobs: list[Job]) -> None:
        if self._reserved:
            for job in jobs:
                self._reserved.pop(job.id, None)

    def _idle_wake(self, endpoint_id: str, worker_id: str, now_s: float) -> None:
        """A worker may just have gone idle: consult again when its keep-alive could expire.

        The schedule's argument for skipping served arrivals needs this exact wake (the
        simulator's too): a worker idle past its keep-alive is retired at its expiry, so a
        later arrival's skipped pass finds nobody due.
        """
        controller = self.controller
        w = self.registry.get(worker_id)
        if controller is None or self.backend is None or w is None or w.state is not WorkerState.IDLE:
            return
        if endpoint_id not in self.endpoints:  # removed at run time: its workers drain, nothing scales it
            return
        last = controller.last_step(endpoint_id)
        keep_alive_s = last.decision.keep_alive_s if last is not None else None
        # Registered workers, a cheap upper bound of the counted ones: at worst one extra pass.
        registered = self.registry.count(endpoint_id)
        wake = idle_expiry_wake_s(controller.consult_plan(endpoint_id), now_s, registered, keep_alive_s)
        if wake is not None and wake < self._idle_wakes.get(endpoint_id, float("inf")):
            self._idle_wakes[endpoint_id] = wake

    def _verify_skip(self, endpoint_id: str, now_s: float) -> None:
        assert self.controller is not None
        step, state_changed = self.controller.preview(endpoint_id, now_s)
        if not step.action.is_noop or state_changed:
            self.skip_divergences.append(
                f"{endpoint_id} at {now_s:.3f}: skipped a pass that would have "
                + (f"applied {step.action}" if not step.action.is_noop else "changed the policy's state")
            )

    async def wait_done(self, job_id: str, timeout_s: float, submitted: Job | None = None) -> Job | None:
        """The job once it reaches a terminal state, or as it is after `timeout_s`; None if it disappeared.

        `submitted`: the job as this caller just stored it (queued), so the first read is skipped. A job
        this server ends is handed to its waiter as the result write returned it, without a read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # A shared store: another server may end the job and its notification may be lost, so look again
        # every poll_fallback_s; otherwise this server ends it and releases the wait itself.
        slice_s = self.store.poll_fallback_s or timeout_s
        job = submitted
        while True:
            if job is None:
                job = self._ended.pop(job_id, None) or await self.io(self.store.get, job_id)
            remaining = deadline - loop.time()
            if job is None or job.status.is_terminal or remaining <= 0:
                return job
            if self._closing and (job.status is JobStatus.IN_QUEUE or self.drain_left_s() <= 0):
                return job  # the drain answers queued jobs at once and running ones when it ends
            await self.done_waiters.wait(job_id, min(remaining, slice_s))
            job = None

    async def cancel(self, job_id: str) -> Job | None:
        result = await self.io(self.store.cancel, job_id, self.clock.now_s())
        if result is None:
            return None
        job, before = result
        if before is JobStatus.IN_PROGRESS and job.status is JobStatus.CANCELLED:
            self._job_ended(job, job.worker_id, stop_worker_job=True)
        elif before is JobStatus.IN_QUEUE and job.status is JobStatus.CANCELLED:
            self._job_ended(job, None)
        return job

    async def retry(self, job_id: str) -> Job:
        job = await self.io(self.store.retry, job_id, self.clock.now_s())
        self._arrival(job.endpoint_id, job.low_priority)
        self.takers.wake(job.endpoint_id, 1)
        return job

    def _spec_of(self, endpoint_id: str) -> EndpointSpec | None:
        ep = self.endpoints.get(endpoint_id)
        return ep.deployment.spec if ep is not None else None

    def worker_views(self, endpoint_id: str) -> Sequence[WorkerView]:
        if self.backend is not None:
            return self.backend.workers(endpoint_id)
        return self.registry.views(endpoint_id)

    async def health(self, endpoint_id: str) -> dict[str, Any]:
        workers = {"idle": 0, "running": 0, "initializing": 0, "throttled": 0, "unhealthy": 0, "outdated": 0}
        for view in self.worker_views(endpoint_id):
            workers[view.state.value.lower()] = workers.get(view.state.value.lower(), 0) + 1
        router = self.lb.get(endpoint_id)
        if router is not None:  # no jobs: requests, in flight on workers and held waiting for one
            return {
                "workers": workers,
                "requests": {
                    "in_flight": router.in_flight(),
                    "held": router.held,
                    "total": router.submitted_total,
                    "rejected": router.rejected_total,
                },
            }
        now_s = self.clock.now_s()
        counts, stats = await self.io(lambda: (self.store.health(endpoint_id), self.store.stats(endpoint_id, now_s)))
        body: dict[str, Any] = {"jobs": counts, "workers": workers}
        if stats.in_queue:  # why the head of the queue waits: what every queued job waits on first
            spec = self.endpoints[endpoint_id].deployment.spec
            low = stats.in_queue_scaling == 0  # only lowPriority jobs queued: the head is one
            head = explain_waiting(spec, self.worker_views(endpoint_id), 1, low_priority=low, now_s=now_s)
            body["waiting"] = {"code": head.code, "reason": head.reason, "inQueue": stats.in_queue}
        return body

    async def waiting(self, job: Job) -> Waiting | None:
        """Why a queued job is not running yet, from the workers now and its place in line (None unless IN_QUEUE)."""
        ep = self.endpoints.get(job.endpoint_id)
        if job.status is not JobStatus.IN_QUEUE or ep is None:
            return None
        position = await self.io(self.store.queue_position, job)
        return explain_waiting(
            ep.deployment.spec,
            self.worker_views(job.endpoint_id),
            position,
            low_priority=job.low_priority,
            now_s=self.clock.now_s(),
        )

    # -- worker side -------------------------------------------------------------------------------

    async def take(self, worker: LiveWorker, max_jobs: int) -> list[Job]:
        """Long poll: jobs at once if any are queued, else wait for a submit or the poll timeout."""
        loop = asyncio.get_running_loop()
        eid = worker.endpoint_id
        self.registry.on_take(worker.worker_id, [], self.clock.now_s())
        deadline = loop.time() + self.settings.poll_timeout_s
        while True:
            if not worker.draining and not self._closing:
                skip = self._skip_for(worker.worker_id)
                if skip:
                    jobs = await self.io(self.store.take, eid, worker.worker_id, max_jobs, self.clock.now_s(), skip=skip)
                else:
                    jobs = await self.io(self.store.take, eid, worker.worker_id, max_jobs, self.clock.now_s())
                if jobs:
                    self._taken(jobs)
                    self._took(worker.worker_id, jobs, self.clock.now_s())
                    return jobs
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return []
            await self.takers.park(worker, remaining)

    def _take_skip(self, worker: LiveWorker, max_jobs: int) -> frozenset[str] | None:
        """What a take handing the worker up to `max_jobs` queued jobs now must skip (None: it may take none)."""
        if max_jobs < 1 or worker.draining or self._closing:
            return None
        return self._skip_for(worker.worker_id)

    def _given(self, worker: LiveWorker, jobs: list[Job], now_s: float) -> list[Job]:
        if jobs:
            self._taken(jobs)
            self._took(worker.worker_id, jobs, now_s)
        return jobs

    def _took(self, worker_id: str, jobs: list[Job], now_s: float) -> None:
        # Each take's attempt is the lease's fencing token: the worker's later posts carry it to the store.
        self.registry.on_take(worker_id, [j.id for j in jobs], now_s, attempts={j.id: j.attempt for j in jobs})
        for job in jobs:
            self.telemetry.job_taken(job)

    async def job_done(self, worker: LiveWorker, job_id: str, body: Any, take: int = 0) -> tuple[str, list[Job]]:
        """A worker's result (or progress); with `take` >= 1 also up to that many queued jobs for it (gpuserve_take),
        both in one store call. Returns the outcome and the jobs handed over."""
        now = self.clock.now_s()
        attempt = self.registry.attempt_of(worker.worker_id, job_id)
        if not isinstance(body, dict):
            reason = f"worker posted a result that is not a JSON object: {body!r:.200}"
            job = await self.io(self.store.fail, job_id, worker.worker_id, reason, now, attempt)
            if job is not None:
                self._job_ended(job, worker.worker_id)
            return "FAILED", []
        if body.get(HANDLER_STUCK_KEY) is True:  # not a result: the stopped job's handler would not return
            return await self._handler_stuck(worker, job_id, body), []
        # The next jobs may go out only with a final result, and not to a worker this result stops.
        final = body.get("status") != "IN_PROGRESS" and body.get("stopPod") is not True
        skip = self._take_skip(worker, take) if final else None
        # A store that can end the job and take the next ones in one statement (PostgreSQL) does.
        both: FinishAndTake | None = getattr(self.store, "finish_and_take", None)
        eid, wid = worker.endpoint_id, worker.worker_id

        def store_calls() -> tuple[tuple[DoneOutcome, Job | None], list[Job]]:
            if skip is not None and both is not None:
                return both(job_id, wid, body, now, attempt, eid, take, skip)
            done = self.store.finish(job_id, wid, body, now, attempt)
            if skip is None or done[0] is DoneOutcome.PROGRESS:
                return done, []
            return done, self.store.take(eid, wid, take, now, skip=skip) if skip else self.store.take(eid, wid, take, now)

        (outcome, job), jobs = await self.io(store_calls)
        if outcome in ("COMPLETED", "FAILED") and job is not None:
            self._job_ended(job, worker.worker_id)
        else:
            self.registry.heard_from(worker.worker_id, now)
        jobs = self._given(worker, jobs, now)
        if body.get("stopPod") is True:
            self.recycle(worker.worker_id)
        return outcome.value, jobs

    async def _handler_stuck(self, worker: LiveWorker, job_id: str, body: dict[str, Any]) -> str:
        """A worker is replaced because a job it was told to stop kept its handler running: the job's status says so."""
        error = body.get("error")
        note = error[:500] if isinstance(error, str) and error else "its handler did not stop, so its worker was replaced"
        noted = await self.io(self.store.note_stopped, job_id, worker.worker_id, note)
        log.warning("worker %s is replaced: job %s %s", worker.worker_id, job_id, note)
        self.registry.heard_from(worker.worker_id, self.clock.now_s())
        if body.get("stopPod") is True:
            self.recycle(worker.worker_id)
        return "NOTED" if noted else "IGNORED"

    async def job_failed_unparsable(self, worker: LiveWorker, job_id: str, reason: str) -> None:
        attempt = self.registry.attempt_of(worker.worker_id, job_id)
        job = await self.io(self.store.fail, job_id, worker.worker_id, reason, self.clock.now_s(), attempt)
        if job is not None:
            self._job_ended(job, worker.worker_id)

    def recycle(self, worker_id: str) -> None:
        """stopPod: hand this worker nothing more; the backend replaces it once its jobs end."""
        self.registry.set_draining(worker_id, True)
        if self.backend is None:
            return
        try:
            self.backend.recycle(worker_id)
        except Exception:
            log.exception("backend could not recycle worker %s", worker_id)

    async def stream_chunk(self, worker: LiveWorker, job_id: str, chunk: Any) -> bool:
        attempt = self.registry.attempt_of(worker.worker_id, job_id)
        return await self.io(self.store.add_chunk, job_id, worker.worker_id, chunk, attempt)

    async def ping(self, worker: LiveWorker, job_ids: list[str], unhealthy_reason: str | None) -> None:
        """A heartbeat: the worker is alive, and what it lists is reconciled with what it holds (a lease).

        A held job it stopped listing goes back to the queue (its take reply was lost, or its
        result); a job it lists but does not hold (requeued meanwhile, given to another worker,
        unknown here) is told to stop, and a late result for it is ignored (`JobStore._owned`).
        """
        now = self.clock.now_s()
        wid = worker.worker_id
        self.directory.saw(wid, now, bool(job_ids))
        beat = self.registry.on_ping(wid, job_ids, now, self.settings.take_lease_grace_s)
        held = self.registry.jobs_of(wid)
        if held:  # the heartbeat renews the store's lease on what the registry says the worker holds
            await self.io(self.store.renew, wid, held, now)
        if beat.unlisted:
            self._requeue(
                wid,
                list(beat.unlisted),
                f"worker {wid}'s heartbeats stopped listing the job (a lost job-take reply or result)",
                now,
            )
        self.stops.resend_listed(wid, job_ids)
        for job_id in beat.strangers:
            job = await self.io(self.store.get, job_id)
            if self.directory.shared and job is not None and job.worker_id == wid and job.status is JobStatus.IN_PROGRESS:
                # Taken through another server (or before this one adopted the worker): held, not a stranger.
                self.registry.hold(wid, job_id, job.attempt, now)
                continue
            # A heartbeat built before this worker's own result was stored is no stranger.
            crossed = job is not None and job.worker_id == wid and job.status.is_terminal
            if not crossed and not self.stops.told(wid, job_id):
                self.stops.signal(wid, job_id)
        if unhealthy_reason is not None:
            self.lose_worker(worker.worker_id, f"worker {worker.worker_id} reported unhealthy: {unhealthy_reason}")

    async def stop_signals(self, worker: LiveWorker) -> list[str]:
        """Long poll for the job-stop channel: ids of this worker's jobs that were cancelled or timed out."""
        return await self.stops.wait(worker.worker_id, self.settings.poll_timeout_s, self._closing)

    def lose_worker(self, worker_id: str, reason: str) -> None:
        """A worker is gone or unfit: mark it UNHEALTHY and requeue (or fail) what it held."""
        now = self.clock.now_s()
        # The reason without "worker <id> " is what waiting jobs and /health show.
        self.registry.set_state(worker_id, WorkerState.UNHEALTHY, now, reason=reason.removeprefix(f"worker {worker_id} "))
        self._requeue(worker_id, self.registry.release_jobs(worker_id, now), reason, now)

    def _requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float) -> None:
        """Jobs the registry released from a worker go back to the queue (attempt counted), or FAILED past max_retries.

        On a blocking store the write runs off the loop, in a task the drain waits for. A write that fails is
        tried again once the store writes again (the registry has let the jobs go; the store still shows them running)."""
        if not job_ids:
            return
        if self.offloaded:
            self._spawn(self._requeue_async(worker_id, job_ids, reason, now_s))
        else:
            self._requeue_stored(worker_id, job_ids, reason, now_s)

    async def _requeue_async(self, worker_id: str, job_ids: list[str], reason: str, now_s: float) -> None:
        try:
            jobs = await self.io(self.store.requeue, worker_id, job_ids, reason, now_s, self.settings.max_retries)
        except StoreError as exc:
            self.store_failed(exc.reason)
            self._unrequeued.append((worker_id, job_ids, reason))
            return
        except Exception:
            # The leases still expire in `sweep`, which requeues the jobs then.
            log.exception("could not requeue %d job(s) of worker %s", len(job_ids), worker_id)
            return
        self._requeued(jobs, reason)

    def _requeue_stored(self, worker_id: str, job_ids: list[str], reason: str, now_s: float) -> None:
        try:
            jobs = self.store.requeue(worker_id, job_ids, reason, now_s, self.settings.max_retries)
        except StoreError as exc:
            self.store_failed(exc.reason)
            self._unrequeued.append((worker_id, job_ids, reason))
            return
        self._requeued(jobs, reason)

    def _requeued(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            if job.status.is_terminal:
                self._job_ended(job, None)
            else:
                self.takers.wake(job.endpoint_id, 1)
                self._arrival(job.endpoint_id, job.low_priority)
        if jobs:
            log.warning("%s; %d job(s) requeued or failed", reason, len(jobs))

    # -- job ends ------------------------------------------------------------------------------

    def _job_ended(self, job: Job, worker_id: str | None, *, stop_worker_job: bool = False) -> None:
        self.telemetry.job_ended(job)
        if worker_id is not None:
            now = self.clock.now_s()
            self.registry.on_job_end(worker_id, job.id, now)
            self._idle_wake(job.endpoint_id, worker_id, now)
            if stop_worker_job:
                self.stops.signal(worker_id, job.id)
        if self.offloaded and self.done_waiters.waited_on(job.id):
            if len(self._ended) >= _ENDED_KEPT:
                self._ended.clear()
            self._ended[job.id] = job  # its /runsync answers from this, not from another read
        self.done_waiters.release(job.id)
        if job.webhook and job.status.is_terminal:
            self.webhooks.kick()  # the store wrote its outbox row with the end

    # -- a store that cannot write -------------------------------------------------------------

    def store_failed(self, reason: str) -> None:
        """A write failed (nothing changed): read-only until a probe write succeeds."""
        if self.read_only is None:
            log.warning("the job store cannot write (%s): read-only, no new jobs until it can", reason)
            self._next_probe_s = 0.0
        self.read_only = reason

    def _probe(self, now_s: float) -> None:
        if now_s < self._next_probe_s:
            return
        self._next_probe_s = now_s + 1.0
        try:
            self.store.probe()
        except StoreError as exc:
            self.read_only = exc.reason
            return
        log.warning("the job store writes again: accepting jobs")
        self.read_only = None
        pending, self._unrequeued = self._unrequeued, []
        for worker_id, job_ids, reason in pending:
            self._requeue(worker_id, job_ids, reason, now_s)

    # -- background ---------------------------------------------------------------------------------

    async def _background(self) -> None:
        while True:
            try:
                if self.offloaded:
                    await self._maintain_offloaded()
                else:
                    self.maintain()
            except StoreError as exc:  # the deadlines stay due; the next pass tries again
                self.store_failed(exc.reason)
            except Exception:
                log.exception("maintenance pass failed")
            await asyncio.sleep(self.settings.maintenance_interval_s)

    async def _maintain_offloaded(self) -> None:
        """`maintain` on a blocking store: its reads (deadlines, leader leases, queue stats) first, off the loop."""
        now = self.clock.now_s()
        try:
            events = await self.io(self.store.sweep, now)
        except StoreError as exc:  # nothing applied: the deadlines stay due for the next pass
            self.store_failed(exc.reason)
            events = []
        if self.controller is not None and now >= self._next_lead_s:
            self._next_lead_s = now + 1.0
            leading = await self.io(self._lead_terms, now)
            if leading - self._leading and self.directory.shared:
                await self.io(self._adopt, leading - self._leading, now)
            self._now_leading(leading)
        if self.store.poll_fallback_s is not None and now >= self._next_changes_s:
            # Another server may have changed an endpoint (gpuserve endpoints update): look once a second.
            self._next_changes_s = now + 1.0
            try:
                self._stored_changes(await self.io(self.store.changes, None, self.changes_seq))
            except Exception:
                log.exception("could not read endpoint changes from the store")
        if self.directory.shared:
            await self._heard_elsewhere(now)
        if self.controller is not None and self._tick_due(now):
            queues = [eid for eid in self.controller.endpoint_ids if eid in self._leading and eid not in self.lb]
            self._demand.prefetched = await self.io(lambda: {eid: self.store.stats(eid, now) for eid in queues})
        try:
            self.maintain(now, swept=events)
        finally:
            self._demand.prefetched = {}

    def _tick_due(self, now_s: float) -> bool:
        assert self.controller is not None
        wake = [self.controller.next_wake_s(eid) for eid in self.controller.endpoint_ids]
        due = min([w for w in wake if w is not None] + list(self._idle_wakes.values()), default=None)
        return now_s >= self._next_tick_s or (due is not None and now_s >= due)

    def maintain(self, now_s: float | None = None, swept: list[SweepEvent] | None = None) -> None:
        """One pass: deadlines, heartbeats, backend poll and (when due) a controller tick.

        `swept`: the deadlines' events, already applied by the caller off the loop (a blocking store)."""
        now = self.clock.now_s() if now_s is None else now_s
        if self.read_only is not None:
            self._probe(now)
        fallback_s = self.store.poll_fallback_s
        if fallback_s is not None and now >= self._next_fallback_s:
            # A shared store's notifications may be lost (a pooler drops them): parked takes look again.
            self._next_fallback_s = now + fallback_s
            for eid in self.endpoints:
                if self.takers.parked(eid):
                    self.takers.wake(eid, 1)
        if swept is None:
            try:
                swept = self.store.sweep(now)
            except StoreError as exc:  # nothing applied: the deadlines stay due for the next pass
                self.store_failed(exc.reason)
                swept = []
        for event in swept:
            job = event.job
            if event.kind is SweepKind.TIMED_OUT:
                self._job_ended(job, event.worker_id, stop_worker_job=event.worker_id is not None)
            elif event.kind is SweepKind.TTL_EXPIRED:
                if event.worker_id is not None:
                    self.registry.on_job_end(event.worker_id, job.id, now)
                    self.stops.signal(event.worker_id, job.id)
                self.telemetry.job_expired(job)
                self.done_waiters.release(job.id)
            elif event.kind is SweepKind.LEASE_EXPIRED:
                # No heartbeat renewed it (its server died, or its worker went silent): requeued or FAILED.
                if event.worker_id is not None and self.registry.get(event.worker_id) is not None:
                    self.registry.on_job_end(event.worker_id, job.id, now)
                    self.stops.signal(event.worker_id, job.id)
                if job.status.is_terminal:
                    self._job_ended(job, None)
                else:
                    self.takers.wake(job.endpoint_id, 1)
                    self._arrival(job.endpoint_id, job.low_priority)
        for worker_id in self.registry.silent_guests(now, self.settings.liveness_timeout_s):
            self.registry.forget_guest(worker_id)  # calling another server now, or gone: its leases decide
        for worker in self.registry.silent_since(now, self.settings.liveness_timeout_s):
            self.lose_worker(
                worker.worker_id,
                f"worker {worker.worker_id} missed {self.settings.missed_heartbeats} heartbeats",
            )
        # Jobs held by workers the backend has reaped (crash, SIGKILL) or marked UNHEALTHY.
        for worker_id in self.registry.orphaned():
            self.lose_worker(worker_id, f"worker {worker_id} exited")
        for worker_id in self.registry.unhealthy_holding_jobs():
            w = self.registry.get(worker_id)
            cause = w.failure if w is not None and w.failure else "crashed or turned unhealthy"
            self.lose_worker(worker_id, f"worker {worker_id} {cause} while running it")
        # Held requests get slots a pass could have missed (a worker revived, a state set by hand).
        for router in self.lb.values():
            router.dispatch(now)
            router.prune()
        # Stop channels of workers that are gone (a few entries per worker: cheap every pass).
        if self.stops.size():
            self.stops.forget_except(self.registry.ids())
        if self.backend is not None and self.controller is not None:
            if now >= self._next_poll_s:
                self._next_poll_s = now + min(0.25, self.settings.tick_interval_s)
                try:
                    self.backend.poll(now)
                except Exception:
                    log.exception("backend poll failed")
                for eid in list(self._rolling):
                    try:
                        self._roll(eid, now)
                    except Exception:
                        log.exception("rolling update of %s failed", eid)
            if now >= self._next_lead_s:
                self._lead(now)
            if self._tick_due(now):
                self._next_tick_s = now + self._tick_interval_s()
                self._idle_wakes.clear()  # this pass sees every idle worker; it sets the next wake itself
                try:
                    for eid in self.controller.endpoint_ids:
                        if eid in self._leading:
                            self.controller.tick_endpoint(eid, now)
                except Exception:
                    log.exception("controller tick failed")

    def _tick_interval_s(self) -> float:
        assert self.controller is not None
        intervals = [self.controller.tick_interval_s(eid) for eid in self.controller.endpoint_ids]
        return min([i for i in intervals if i is not None] + [self.settings.tick_interval_s])
