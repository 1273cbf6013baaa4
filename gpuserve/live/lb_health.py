"""Health polling of load-balancing workers: Runpod's `/ping` contract turned into registry states.

    204            -> INITIALIZING (its server is up, its model loading); the first one is recorded
    200            -> IDLE or RUNNING (by in-flight count); the first one makes it ready (its "first take")
    anything else  -> a failed poll; `lb_unhealthy_after` in a row make it UNHEALTHY, and the
                      backend ends it and starts a replacement after its crash back-off
    no answer      -> a failed poll once it has answered; before that, tolerated until
                      `lb_start_timeout_s` after its start (a server still starting refuses connections)

A THROTTLED worker is not polled: it waits for a GPU and has no server yet. Its start, and with
it the start timeout, begins when it leaves THROTTLED (`LiveWorker.started_s`), not when it was
registered, or a worker that waited longer than the timeout for a GPU would be UNHEALTHY at its
first unanswered poll after it was finally placed.

`observe` is the decision, given a status (or None for no answer) and the time; `poll_once`
does the I/O, every worker at once, with one pooled client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from gpuserve.core.clock import Clock
from gpuserve.core.types import WorkerState
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.settings import ServerSettings

__all__ = ["HealthMonitor"]

log = logging.getLogger("gpuserve.lb")

# Ended or being ended (UNHEALTHY, OUTDATED), or with no server yet (THROTTLED: no GPU for it).
_NOT_POLLED = (WorkerState.UNHEALTHY, WorkerState.OUTDATED, WorkerState.THROTTLED)


class HealthMonitor:
    """Polls the health path of every load-balancing worker; `on_ready(endpoint_id)` when one becomes ready."""

    def __init__(
        self,
        endpoint_ids: set[str],
        registry: WorkerRegistry,
        settings: ServerSettings,
        clock: Clock,
        on_ready: Callable[[str], None],
    ) -> None:
        self.endpoint_ids = endpoint_ids
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.on_ready = on_ready
        self._failures: dict[str, int] = {}  # worker -> failed polls in a row
        self._client: httpx.AsyncClient | None = None

    def observe(self, worker_id: str, status: int | None, now_s: float) -> None:
        """What one poll's answer (`None`: no answer) means for the worker."""
        w = self.registry.get(worker_id)
        if w is None or w.state in _NOT_POLLED:
            return
        if status == 204:
            self._failures.pop(worker_id, None)
            self.registry.on_health_initializing(worker_id, now_s)
            return
        if status == 200:
            self._failures.pop(worker_id, None)
            if w.first_take_s is None:
                self.registry.on_take(worker_id, [], now_s)  # ready: IDLE, its cold start ends here
                log.info("worker %s is ready", worker_id)
                self.on_ready(w.endpoint_id)
            else:
                self.registry.heard_from(worker_id, now_s)
            return
        answered = w.first_take_s is not None or w.first_initializing_s is not None
        if status is None and not answered:
            # From its start, not its registration: time THROTTLED was spent waiting for a GPU.
            if now_s - w.started_s > self.settings.lb_start_timeout_s:
                self._unhealthy(worker_id, now_s, f"its server did not answer within {self.settings.lb_start_timeout_s:g} s")
            return
        failures = self._failures.get(worker_id, 0) + 1
        self._failures[worker_id] = failures
        if failures >= self.settings.lb_unhealthy_after:
            what = "no answer" if status is None else f"status {status}"
            self._unhealthy(worker_id, now_s, f"{failures} health polls in a row failed (last: {what})")

    def _unhealthy(self, worker_id: str, now_s: float, why: str) -> None:
        self._failures.pop(worker_id, None)
        log.warning("worker %s is UNHEALTHY: %s", worker_id, why)
        self.registry.set_state(worker_id, WorkerState.UNHEALTHY, now_s)

    async def _poll(self, client: httpx.AsyncClient, worker_id: str, url: str) -> None:
        try:
            status: int | None = (await client.get(url)).status_code
        except httpx.HTTPError:
            status = None
        self.observe(worker_id, status, self.clock.now_s())

    async def poll_once(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.lb_health_timeout_s, follow_redirects=False)
        polls = [
            self._poll(self._client, w.worker_id, w.health_url)
            for eid in self.endpoint_ids
            for w in self.registry.all(eid)
            # A draining worker gets no requests (stopping, or parked for flash boot: a paused
            # container would not answer); it is polled again once revived.
            if w.health_url is not None and not w.draining and w.state not in _NOT_POLLED
        ]
        if polls:
            await asyncio.gather(*polls)
        live = {w.worker_id for eid in self.endpoint_ids for w in self.registry.all(eid)}
        for gone in set(self._failures) - live:
            del self._failures[gone]

    async def run(self) -> None:
        """Poll forever, every `lb_health_interval_s` (cancel the task to stop)."""
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("health poll failed")
            await asyncio.sleep(self.settings.lb_health_interval_s)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
