"""Webhook delivery: POST a finished job's /status body to its `webhook` URL, retried as Runpod does."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import httpx

from gpuserve.core.backoff import Backoff
from gpuserve.live.settings import ServerSettings

__all__ = ["WEBHOOK_LOG_KEPT", "WebhookSender"]

# The newest attempts only: at 100 webhooks/s an unbounded log grows by about 8.6 million
# entries a day; 10,000 is the last couple of minutes at that rate, plenty to debug with.
WEBHOOK_LOG_KEPT = 10_000

log = logging.getLogger("gpuserve.server")


class WebhookSender:
    """Delivers in background tasks on the server's loop; `log` keeps (job id, HTTP status or error)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.log: deque[tuple[str, int | str]] = deque(maxlen=WEBHOOK_LOG_KEPT)  # newest last
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, job_id: str, body: dict[str, Any]) -> None:
        """Start delivering now; returns at once."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, job_id, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, job_id: str, body: dict[str, Any]) -> None:
        """POST the body once; a non-200 answer or an error is retried (twice by default)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
        retry = Backoff.fixed(self.settings.webhook_retry_delay_s, attempts=self.settings.webhook_attempts)
        for wait_s in retry.tries():
            try:
                resp = await self._http.post(url, json=body)
                self.log.append((job_id, resp.status_code))
                if resp.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                self.log.append((job_id, type(exc).__name__))
            if wait_s is not None:
                await asyncio.sleep(wait_s)
        log.warning("webhook for job %s to %s failed after %d attempts", job_id, url, self.settings.webhook_attempts)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
