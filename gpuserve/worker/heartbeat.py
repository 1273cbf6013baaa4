"""The heartbeat: a thread that GETs the ping URL with the in-flight job ids every interval."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

import httpx

from gpuserve.worker.env import with_query

__all__ = ["Heartbeat"]

log = logging.getLogger("gpuserve.worker")


class Heartbeat(threading.Thread):
    """Pings from its own thread (and its own HTTP client), so a busy event loop never delays it.

    A CPU-bound handler runs in another thread; Python switches threads every 5 ms, so the
    ping still goes out on time (Runpod's SDK needs a whole separate process for this).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        interval_s: float,
        in_flight: Callable[[], tuple[str, ...]],
        user_agent: str,
    ) -> None:
        super().__init__(name="gpuserve-heartbeat", daemon=True)
        self.url = url
        self.interval_s = interval_s
        self._in_flight = in_flight
        self._stop_event = threading.Event()
        self._client = httpx.Client(
            headers={"Authorization": api_key, "User-Agent": user_agent},
            timeout=max(1.0, 2 * interval_s),
        )
        self.sent = 0

    def ping_once(self) -> None:
        ids = self._in_flight()
        url = with_query(self.url, job_id=",".join(ids)) if ids else self.url
        if ids:
            log.debug("ping job_id=%s", ",".join(ids))
        try:
            response = self._client.get(url)
            if response.status_code >= 400:
                log.warning("heartbeat answered %s", response.status_code)
            self.sent += 1
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed: %s", exc)

    def run(self) -> None:
        parent = os.environ.get("GPUSERVE_PARENT_PID")
        while not self._stop_event.is_set():
            if parent and os.getppid() != int(parent):
                # The control plane that spawned this worker is gone: stop like on SIGTERM
                # rather than polling a dead server forever as an orphan.
                log.warning("parent process %s is gone; stopping", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                parent = None
            self.ping_once()
            self._stop_event.wait(self.interval_s)
        self._client.close()

    def stop(self) -> None:
        self._stop_event.set()
