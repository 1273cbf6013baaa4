"""Webhook delivery: POST a finished job's /status body to its `webhook` URL, retried as Runpod does.

Deliveries come from the store's outbox (`JobStore.claim_webhooks`): the row is written with the
job's terminal state, so a webhook is sent only for a state that is stored, and its retries (the
`webhook_attempts` / `webhook_retry_delay_s` schedule) survive a restart: a server that starts finds
the rows due and sends them. A 200 deletes the row (so a webhook arrives once, or twice if the
server dies between the receiver's 200 and that delete); a try that fails reschedules it; the
last failed try, or a refused target, deletes it.

Targets are checked against the allow-list (gpuserve.live.webhook_targets) at submit and again
before every POST, on the addresses DNS gives then; the POST goes to the checked address (Host
header and TLS name kept), so a name re-resolving in between cannot redirect it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gpuserve.core.backoff import Backoff
from gpuserve.core.clock import Clock
from gpuserve.core.errors import StoreError
from gpuserve.live.settings import ServerSettings
from gpuserve.live.webhook_targets import WebhookTargets, resolve_addresses
from gpuserve.store.base import JobStore, OutboxWebhook

__all__ = ["WEBHOOK_LOG_KEPT", "WebhookSender"]

# The newest attempts only: at 100 webhooks/s an unbounded log grows by about 8.6 million
# entries a day; 10,000 is the last couple of minutes at that rate, plenty to debug with.
WEBHOOK_LOG_KEPT = 10_000
# The outbox is looked at this often even when nothing here asked (rows another server, or this
# server's previous life, left due), and at once when a job ends or a retry falls due.
OUTBOX_POLL_S = 1.0
OUTBOX_BATCH = 100  # rows claimed per look

log = logging.getLogger("gpuserve.server")

StoreCall = Callable[..., Awaitable[Any]]  # io(call, *args): a store call, made where the runtime makes them


async def _inline(call: Callable[..., Any], *args: Any) -> Any:
    return call(*args)


class WebhookSender:
    """Delivers in background tasks on the server's loop; `log` keeps (job id, HTTP status or error)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.log: deque[tuple[str, int | str]] = deque(maxlen=WEBHOOK_LOG_KEPT)  # newest last
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.targets = WebhookTargets(settings.webhook_allowed_networks)
        self.retry = Backoff.fixed(settings.webhook_retry_delay_s, attempts=settings.webhook_attempts)
        # A claimed row not settled by then (its server died mid-POST) is due again: past the DNS
        # look-up and the POST, each bounded by webhook_timeout_s.
        self.claim_s = 2 * settings.webhook_timeout_s + 5.0
        self._wake: asyncio.Event | None = None

    async def refusal(self, url: str) -> str | None:
        """Why `url` may not be a webhook (not http(s), no host, or an address outside the allow-list), or None."""
        return (await self._pinned(url))[0]

    async def _pinned(self, url: str) -> tuple[str | None, httpx.URL | None]:
        """(refusal, None), or (None, the URL with its host replaced by an allowed address it resolves to)."""
        target = self.targets.parse(url)
        if isinstance(target, str):
            return target, None
        try:
            addresses = await resolve_addresses(target.host, target.port, self.settings.webhook_timeout_s)
        except (OSError, TimeoutError) as exc:
            return f"has a host that does not resolve ({type(exc).__name__}: {exc})", None
        reason = self.targets.refusal(addresses)
        if reason is not None:
            return reason, None
        return None, httpx.URL(url).copy_with(host=addresses[0].split("%", 1)[0])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, store: JobStore, clock: Clock, io: StoreCall | None = None) -> None:
        """Deliver from the store's outbox until `close`, on the running loop; `io` makes the store's calls
        (the runtime's: on threads for a blocking store)."""
        self._wake = asyncio.Event()
        self._io: StoreCall = io or _inline
        self._spawn(self._run(store, clock))

    def kick(self) -> None:
        """A job ended with a webhook (its outbox row is written): look at the outbox now."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self, store: JobStore, clock: Clock) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            try:
                rows = await self._io(store.claim_webhooks, clock.now_s(), self.claim_s, OUTBOX_BATCH)
            except StoreError as exc:
                log.warning("webhook outbox unreadable: %s", exc.reason)
                rows = []
            except Exception:
                log.exception("webhook outbox claim failed")
                rows = []
            for row in rows:
                self._spawn(self._send(store, clock, row))
            if len(rows) == OUTBOX_BATCH:
                continue  # more may be due
            try:
                await asyncio.wait_for(wake.wait(), OUTBOX_POLL_S)
            except TimeoutError:
                pass

    async def _send(self, store: JobStore, clock: Clock, row: OutboxWebhook) -> None:
        """One try of a claimed row, then settle it: done (delivered, refused, out of tries) or due again."""
        sent = await self.post_once(row.url, row.job_id, row.body)
        try:
            if sent is not False or self.retry.gives_up(row.attempts):
                if sent is False:
                    log.warning("webhook for job %s to %s failed after %d attempts", row.job_id, row.url, row.attempts)
                await self._io(store.webhook_done, row.outbox_id)
                return
            wait_s = self.retry.delay_s(row.attempts)
            await self._io(store.webhook_retry, row.outbox_id, clock.now_s() + wait_s)
        except StoreError as exc:  # the claim runs out and the row is tried again: at least once
            log.warning("webhook for job %s: could not record the try (%s)", row.job_id, exc.reason)
            return
        asyncio.get_running_loop().call_later(wait_s, self.kick)

    async def post_once(self, url: str, job_id: str, body: str) -> bool | None:
        """POST the body (JSON text) once: True on 200, False on another answer or an error, None when refused."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
        original = httpx.URL(url)
        # Checked again at every try: DNS may answer differently than at submit.
        reason, pinned = await self._pinned(url)
        if reason is not None or pinned is None:
            self.log.append((job_id, "refused"))
            log.warning("webhook for job %s to %s refused: it %s", job_id, url, reason)
            return None
        try:
            resp = await self._http.post(
                pinned,
                content=body.encode(),
                headers={"Host": original.netloc.decode("ascii"), "Content-Type": "application/json"},
                extensions={"sni_hostname": original.host} if original.scheme == "https" else None,
            )
        except httpx.HTTPError as exc:
            self.log.append((job_id, type(exc).__name__))
            return False
        self.log.append((job_id, resp.status_code))
        return resp.status_code == 200

    async def _deliver(self, url: str, job_id: str, body: dict[str, Any]) -> None:
        """Every try of one body in memory, on the retry schedule (no store: a sender's checks on their own)."""
        text = json.dumps(body, ensure_ascii=False)
        for wait_s in self.retry.tries():
            sent = await self.post_once(url, job_id, text)
            if sent is not False:
                return
            if wait_s is not None:
                await asyncio.sleep(wait_s)

    async def close(self) -> None:
        self._wake = None
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
