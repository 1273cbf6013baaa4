"""One job per slot: a stopped sync handler's thread keeps its slot until it ends, and past a grace the worker is replaced.

A timed-out or cancelled job's asyncio task is cancelled at once, but a sync handler (or a sync
generator's `next()`) runs in a thread that nothing can interrupt: Python has no way to stop a
thread. Freeing its slot would start the next job beside it (two jobs on one GPU, threads piling
up to the pool's 64). So each job's threads are counted (`JobThreads`), a stopped job whose
thread still runs keeps its slot (`StuckSlots`), and when the thread has not ended `grace_s`
after the stop, the worker asks to be replaced: it drains, tells the server (the job's status
records it), and exits, which ends the thread with the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuserve.core.jobs import HANDLER_STUCK_KEY

__all__ = ["STUCK_NOTICE_KEY", "JobThreads", "StuckSlots"]

log = logging.getLogger("gpuserve.worker")

# In a job-done body for a job the server already ended: "its handler would not stop, this worker
# is replaced"; the server records the error on the job (gpuserve only; Runpod ignores the key).
STUCK_NOTICE_KEY = HANDLER_STUCK_KEY


class JobThreads(concurrent.futures.Executor):
    """The worker's handler pool as one job sees it: every thread call it makes for that job is remembered."""

    def __init__(self, pool: concurrent.futures.Executor) -> None:
        self.pool = pool
        self._futures: list[concurrent.futures.Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future = self.pool.submit(fn, *args, **kwargs)
        # A generator makes one call per chunk: keep only those still running.
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(future)
        return future

    def running(self) -> list[concurrent.futures.Future[Any]]:
        """Calls that started and have not returned (a queued call was cancelled with its task and never runs)."""
        return [f for f in self._futures if not f.done()]


@dataclass
class _Stuck:
    job_id: str
    since_s: float  # monotonic: when the job was stopped
    futures: list[concurrent.futures.Future[Any]]
    timer: asyncio.TimerHandle | None = None
    over: bool = field(default=False)  # the grace passed with the thread still running


class StuckSlots:
    """Slots held by stopped jobs whose threads still run; `on_replace(job_id, waited_s)` once one outlives `grace_s`."""

    def __init__(self, grace_s: float, on_free: Callable[[], None], on_replace: Callable[[str, float], None]) -> None:
        self.grace_s = grace_s
        self._on_free = on_free
        self._on_replace = on_replace
        self._held: dict[str, _Stuck] = {}

    def __len__(self) -> int:
        return len(self._held)

    def job_ids(self) -> tuple[str, ...]:
        return tuple(self._held)

    def hold(self, job_id: str, threads: JobThreads) -> bool:
        """The job was stopped: keep its slot while its threads run. False when none runs (the slot is free)."""
        running = threads.running()
        if not running:
            return False
        loop = asyncio.get_running_loop()
        stuck = _Stuck(job_id, time.monotonic(), running)
        self._held[job_id] = stuck
        for future in running:
            future.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._maybe_free, job_id))
        stuck.timer = loop.call_later(self.grace_s, self._grace_over, job_id)
        log.warning(
            "job %s was stopped but its handler thread still runs: its slot stays taken until it returns "
            "(the worker is replaced if it still runs in %.0f s)",
            job_id,
            self.grace_s,
        )
        return True

    def _maybe_free(self, job_id: str) -> None:
        stuck = self._held.get(job_id)
        if stuck is None or any(not f.done() for f in stuck.futures):
            return
        del self._held[job_id]
        if stuck.timer is not None:
            stuck.timer.cancel()
        log.info("the handler of stopped job %s returned after %.1f s; its slot is free", job_id, time.monotonic() - stuck.since_s)
        self._on_free()

    def _grace_over(self, job_id: str) -> None:
        stuck = self._held.get(job_id)
        if stuck is None or stuck.over:
            return
        stuck.over = True
        self._on_replace(job_id, time.monotonic() - stuck.since_s)
