"""The live runtime: store + worker registry + controller, serving the HTTP routes' calls on asyncio.

Everything here runs on the server's event loop. The waits (parked job-takes, /runsync,
job-stop) are gpuserve.live.waiters, webhook delivery is gpuserve.live.webhooks; one
background task applies deadlines, checks heartbeats, releases the jobs of lost workers
and runs the core Controller over the live backend with a steady clock (gpuserve.live.clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpuserve.controller import Controller
from gpuserve.core.clock import Clock
from gpuserve.core.jobs import JobStatus
from gpuserve.core.types import COUNTED_STATES, WorkerState, WorkerView
from gpuserve.live.backend import LiveBackend
from gpuserve.live.clock import SteadyClock
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import LiveWorker, WorkerRegistry
from gpuserve.live.settings import ServerSettings
from gpuserve.live.waiters import DoneWaiters, StopSignals, TakeWaiters
from gpuserve.live.webhooks import WebhookSender
from gpuserve.schedule import idle_expiry_wake_s, must_consult_on_arrival
from gpuserve.store.base import Job, JobStore, SweepKind

__all__ = ["Endpoint", "Runtime"]

log = logging.getLogger("gpuserve.server")


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as the server serves it: its deployment and the digests of its client keys."""

    deployment: Deployment
    key_hashes: frozenset[str] = frozenset()

    @property
    def endpoint_id(self) -> str:
        return self.deployment.endpoint_id


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
    ) -> None:
        self.endpoints = {e.endpoint_id: e for e in endpoints}
        self.store = store
        self.registry = registry
        self.backend = backend
        self._closing = False  # set by drain_workers: no new jobs, long polls answer at once
        self._drain_ends_s = 0.0  # event-loop time the drain gives up on running jobs
        self.clock = clock or SteadyClock()
        self.settings = settings or ServerSettings()
        self.global_key_hashes = global_key_hashes
        self.controller: Controller | None = None
        if backend is not None:
            self.controller = Controller(
                [e.deployment.spec for e in self.endpoints.values()], backend, store, self.clock
            )
        self.takers = TakeWaiters()
        self.done_waiters = DoneWaiters()
        self.stops = StopSignals()
        self.webhooks = WebhookSender(self.settings)
        self._loop_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._next_tick_s = 0.0
        self._next_poll_s = 0.0
        self._idle_wakes: dict[str, float] = {}  # endpoint -> when a worker that went idle may expire
        # Arrivals shown to the controller and skipped by the consult schedule; with
        # consult_on_arrival="verify", what a skipped pass would have done (it must be nothing).
        self.arrivals_consulted = 0
        self.arrivals_skipped = 0
        self.skip_divergences: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.backend is not None:
            for ep in self.endpoints.values():
                self.backend.configure(ep.deployment)
        self._loop_task = asyncio.create_task(self._background(), name="gpuserve-maintenance")
        # Jobs recovered from a previous life need a worker now, not at the next tick.
        for eid in self.endpoints:
            if self.store.stats(eid, self.clock.now_s()).in_queue:
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
        self._drain_ends_s = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        if self._loop_task is not None:  # no more scaling: nothing may replace a stopping worker
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        self.takers.wake_all()
        self.stops.wake_all()
        for job_id in self.done_waiters.job_ids():
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.IN_PROGRESS:
                self.done_waiters.release(job_id)
        if self.backend is not None:
            await asyncio.to_thread(self.backend.shutdown)
        self._requeue_unfinished()
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
                self._requeue(worker_id, held, reason, now)
        for job in self.store.in_progress():  # held by no registered worker (e.g. one added by hand)
            if job.worker_id is not None:
                self._requeue(job.worker_id, [job.id], reason, now)

    async def stop(self) -> None:
        await self.drain_workers()
        await self.webhooks.close()

    # -- client side -------------------------------------------------------------------------------

    def submit(
        self,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        low_priority: bool,
        execution_timeout_s: float,
        ttl_s: float,
        retention_s: float,
    ) -> Job:
        job = self.store.submit(
            endpoint_id,
            payload,
            now_s=self.clock.now_s(),
            low_priority=low_priority,
            execution_timeout_s=execution_timeout_s,
            ttl_s=ttl_s,
            retention_s=retention_s,
        )
        # Scale first, then wake: a flash-boot revival clears its worker's drain inside
        # _arrival, so its parked take (skipped while draining) can receive this job.
        self._arrival(endpoint_id, low_priority, free_slot=self.takers.has_free(endpoint_id))
        self.takers.wake(endpoint_id, 1)
        return job

    def _arrival(self, endpoint_id: str, low_priority: bool, *, free_slot: bool = False) -> None:
        """Show a new (or requeued) job to the controller, unless gpuserve.schedule proves the pass a no-op.

        `free_slot`: a parked, idle worker will take the job at once. The schedule's other
        inputs are read here: the counted workers and the THROTTLED ones among them, and
        whether anything else waits in the queue (then the job did not find a free slot).
        """
        controller = self.controller
        if controller is None or self.backend is None or self._closing:
            return
        if low_priority:  # Runpod: a lowPriority job never triggers scaling; the next tick or wake sees it
            self.arrivals_skipped += 1
            return
        now = self.clock.now_s()
        mode = self.settings.consult_on_arrival
        try:
            plan = controller.consult_plan(endpoint_id)
            # Reading the workers costs about a third of a pass; do it only when the plan may skip.
            if mode != "always" and (plan.skip_served_arrivals or plan.skip_arrivals_at_max):
                views = self.backend.workers(endpoint_id)
                counted = [v for v in views if v.state in COUNTED_STATES]
                throttled = sum(1 for v in counted if v.state is WorkerState.THROTTLED)
                served = free_slot and self.store.stats(endpoint_id, now).in_queue <= 1
                if not must_consult_on_arrival(plan, served, len(counted), throttled):
                    self.arrivals_skipped += 1
                    if mode == "verify":
                        self._verify_skip(endpoint_id, now)
                    return
            self.arrivals_consulted += 1
            controller.tick_endpoint(endpoint_id, now)
        except Exception:
            log.exception("controller failed on a job arrival for %s", endpoint_id)

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

    async def wait_done(self, job_id: str, timeout_s: float) -> None:
        """Return when the job reaches a terminal state (or disappears), or after `timeout_s`."""
        job = self.store.get(job_id)
        if job is None or job.status.is_terminal:
            return
        await self.done_waiters.wait(job_id, timeout_s)

    def cancel(self, job_id: str) -> Job | None:
        result = self.store.cancel(job_id, self.clock.now_s())
        if result is None:
            return None
        job, before = result
        if before is JobStatus.IN_PROGRESS and job.status is JobStatus.CANCELLED:
            self._job_ended(job, job.worker_id, stop_worker_job=True)
        elif before is JobStatus.IN_QUEUE and job.status is JobStatus.CANCELLED:
            self._job_ended(job, None)
        return job

    def retry(self, job_id: str) -> Job:
        job = self.store.retry(job_id, self.clock.now_s())
        self._arrival(job.endpoint_id, job.low_priority)
        self.takers.wake(job.endpoint_id, 1)
        return job

    def worker_views(self, endpoint_id: str) -> Sequence[WorkerView]:
        if self.backend is not None:
            return self.backend.workers(endpoint_id)
        return self.registry.views(endpoint_id)

    def health(self, endpoint_id: str) -> dict[str, Any]:
        workers = {"idle": 0, "running": 0, "initializing": 0, "throttled": 0, "unhealthy": 0, "outdated": 0}
        for view in self.worker_views(endpoint_id):
            workers[view.state.value.lower()] = workers.get(view.state.value.lower(), 0) + 1
        return {"jobs": self.store.health(endpoint_id), "workers": workers}

    # -- worker side -------------------------------------------------------------------------------

    async def take(self, worker: LiveWorker, max_jobs: int) -> list[Job]:
        """Long poll: jobs at once if any are queued, else wait for a submit or the poll timeout."""
        loop = asyncio.get_running_loop()
        eid = worker.endpoint_id
        self.registry.on_take(worker.worker_id, [], self.clock.now_s())
        deadline = loop.time() + self.settings.poll_timeout_s
        while True:
            if not worker.draining and not self._closing:
                jobs = self.store.take(eid, worker.worker_id, max_jobs, self.clock.now_s())
                if jobs:
                    self.registry.on_take(worker.worker_id, [j.id for j in jobs], self.clock.now_s())
                    return jobs
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return []
            await self.takers.park(worker, remaining)

    def take_now(self, worker: LiveWorker, max_jobs: int) -> list[Job]:
        """Up to `max_jobs` queued jobs for the worker at once, without waiting (job-done's gpuserve_take)."""
        if max_jobs < 1 or worker.draining or self._closing:
            return []
        now = self.clock.now_s()
        jobs = self.store.take(worker.endpoint_id, worker.worker_id, max_jobs, now)
        if jobs:
            self.registry.on_take(worker.worker_id, [j.id for j in jobs], now)
        return jobs

    def job_done(self, worker: LiveWorker, job_id: str, body: Any) -> str:
        now = self.clock.now_s()
        if not isinstance(body, dict):
            job = self.store.fail(job_id, worker.worker_id, f"worker posted a result that is not a JSON object: {body!r:.200}", now)
            if job is not None:
                self._job_ended(job, worker.worker_id)
            return "FAILED"
        outcome, job = self.store.finish(job_id, worker.worker_id, body, now)
        if outcome in ("COMPLETED", "FAILED") and job is not None:
            self._job_ended(job, worker.worker_id)
        else:
            self.registry.heard_from(worker.worker_id, now)
        if body.get("stopPod") is True:
            self.recycle(worker.worker_id)
        return outcome.value

    def job_failed_unparsable(self, worker: LiveWorker, job_id: str, reason: str) -> None:
        job = self.store.fail(job_id, worker.worker_id, reason, self.clock.now_s())
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

    def stream_chunk(self, worker: LiveWorker, job_id: str, chunk: Any) -> bool:
        return self.store.add_chunk(job_id, worker.worker_id, chunk)

    def ping(self, worker: LiveWorker, job_ids: list[str], unhealthy_reason: str | None) -> None:
        """A heartbeat: the worker is alive, and what it lists is reconciled with what it holds (a lease).

        A held job it stopped listing goes back to the queue (its take reply was lost, or its
        result); a job it lists but does not hold (requeued meanwhile, given to another worker,
        unknown here) is told to stop, and a late result for it is ignored (`JobStore._owned`).
        """
        now = self.clock.now_s()
        wid = worker.worker_id
        beat = self.registry.on_ping(wid, job_ids, now, self.settings.take_lease_grace_s)
        if beat.unlisted:
            self._requeue(
                wid,
                list(beat.unlisted),
                f"worker {wid}'s heartbeats stopped listing the job (a lost job-take reply or result)",
                now,
            )
        self.stops.resend_listed(wid, job_ids)
        for job_id in beat.strangers:
            job = self.store.get(job_id)
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
        self.registry.set_state(worker_id, WorkerState.UNHEALTHY, now)
        self._requeue(worker_id, self.registry.release_jobs(worker_id, now), reason, now)

    def _requeue(self, worker_id: str, job_ids: list[str], reason: str, now_s: float) -> None:
        """Jobs the registry released from a worker go back to the queue (attempt counted), or FAILED past max_retries."""
        jobs = self.store.requeue(worker_id, job_ids, reason, now_s, self.settings.max_retries)
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
        if worker_id is not None:
            now = self.clock.now_s()
            self.registry.on_job_end(worker_id, job.id, now)
            self._idle_wake(job.endpoint_id, worker_id, now)
            if stop_worker_job:
                self.stops.signal(worker_id, job.id)
        self.done_waiters.release(job.id)
        if job.webhook and job.status.is_terminal:
            self.webhooks.send(job.webhook, job.id, job.status_body())

    # -- background ---------------------------------------------------------------------------------

    async def _background(self) -> None:
        while True:
            try:
                self.maintain()
            except Exception:
                log.exception("maintenance pass failed")
            await asyncio.sleep(self.settings.maintenance_interval_s)

    def maintain(self, now_s: float | None = None) -> None:
        """One pass: deadlines, heartbeats, backend poll and (when due) a controller tick."""
        now = self.clock.now_s() if now_s is None else now_s
        for event in self.store.sweep(now):
            job = event.job
            if event.kind is SweepKind.TIMED_OUT:
                self._job_ended(job, event.worker_id, stop_worker_job=event.worker_id is not None)
            elif event.kind is SweepKind.TTL_EXPIRED:
                if event.worker_id is not None:
                    self.registry.on_job_end(event.worker_id, job.id, now)
                    self.stops.signal(event.worker_id, job.id)
                self.done_waiters.release(job.id)
        for worker in self.registry.silent_since(now, self.settings.liveness_timeout_s):
            self.lose_worker(
                worker.worker_id,
                f"worker {worker.worker_id} missed {self.settings.missed_heartbeats} heartbeats",
            )
        # Jobs held by workers the backend has reaped (crash, SIGKILL) or marked UNHEALTHY.
        for worker_id in self.registry.orphaned():
            self.lose_worker(worker_id, f"worker {worker_id} exited")
        for worker_id in self.registry.unhealthy_holding_jobs():
            self.lose_worker(worker_id, f"worker {worker_id} is unhealthy")
        # Stop channels of workers that are gone (a few entries per worker: cheap every pass).
        if self.stops.size():
            self.stops.forget_except({w.worker_id for w in self.registry.all()})
        if self.backend is not None and self.controller is not None:
            if now >= self._next_poll_s:
                self._next_poll_s = now + min(0.25, self.settings.tick_interval_s)
                try:
                    self.backend.poll(now)
                except Exception:
                    log.exception("backend poll failed")
            wake = [self.controller.next_wake_s(eid) for eid in self.controller.endpoint_ids]
            due = min([w for w in wake if w is not None] + list(self._idle_wakes.values()), default=None)
            if now >= self._next_tick_s or (due is not None and now >= due):
                self._next_tick_s = now + self._tick_interval_s()
                self._idle_wakes.clear()  # this pass sees every idle worker; it sets the next wake itself
                try:
                    self.controller.tick(now)
                except Exception:
                    log.exception("controller tick failed")

    def _tick_interval_s(self) -> float:
        assert self.controller is not None
        intervals = [self.controller.tick_interval_s(eid) for eid in self.controller.endpoint_ids]
        return min([i for i in intervals if i is not None] + [self.settings.tick_interval_s])
