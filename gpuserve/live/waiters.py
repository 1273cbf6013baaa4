"""The live runtime's waits on asyncio: parked job-takes, /runsync waiters and the job-stop channel.

Nothing here polls: a parked take waits on a future that a submit resolves at once, a
/runsync caller waits on a future the job's end resolves, and a worker's job-stop long
poll waits on a future that a cancel or timeout resolves. All of it runs on the server's
event loop and knows nothing of the store or the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from gpuserve.live.registry import LiveWorker

__all__ = ["DoneWaiters", "StopSignals", "TakeWaiters", "resolve"]


def resolve(fut: asyncio.Future[None]) -> None:
    """Wake a waiter once (a second wake, or one after a timeout, is a no-op)."""
    if not fut.done():
        fut.set_result(None)


class TakeWaiters:
    """Parked job-take long polls, per endpoint, each tied to its worker."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._owner: dict[asyncio.Future[None], LiveWorker] = {}

    def has_free(self, endpoint_id: str) -> bool:
        """Whether a parked, non-draining worker would take a job submitted now."""
        return any(not fut.done() and not self._owner[fut].draining for fut in self._queues.get(endpoint_id, ()))

    async def park(self, worker: LiveWorker, timeout_s: float) -> None:
        """Wait until a wake picks this worker or `timeout_s` passes."""
        loop = asyncio.get_running_loop()
        eid = worker.endpoint_id
        fut: asyncio.Future[None] = loop.create_future()
        queue = self._queues.setdefault(eid, deque())
        queue.append(fut)
        self._owner[fut] = worker
        handle = loop.call_later(timeout_s, resolve, fut)
        try:
            await fut
        except asyncio.CancelledError:
            # The worker hung up; if a submit had already picked this taker, pass the wake on.
            if fut.done() and not fut.cancelled():
                self.wake(eid, 1)
            raise
        finally:
            handle.cancel()
            self._owner.pop(fut, None)
            with contextlib.suppress(ValueError):
                queue.remove(fut)

    def wake(self, endpoint_id: str, count: int) -> None:
        """Wake up to `count` parked takers of an endpoint, newest worker first."""
        queue = self._queues.get(endpoint_id)
        while queue and count > 0:
            # Newest worker first, as the simulator (and SimFaaS, Lambda) dispatch: load packs onto
            # recent workers so older idle ones reach their idle timeout and stop. A draining
            # worker (stopped, OUTDATED, stopPod) takes nothing, so waking it would waste the wake.
            best: asyncio.Future[None] | None = None
            best_created_s = float("-inf")
            for fut in queue:
                owner = self._owner.get(fut)
                if fut.done() or (owner is not None and owner.draining):
                    continue
                created_s = owner.created_s if owner is not None else float("-inf")
                if best is None or created_s > best_created_s:
                    best, best_created_s = fut, created_s
            if best is None:
                return
            queue.remove(best)
            best.set_result(None)
            count -= 1

    def parked(self, endpoint_id: str) -> int:
        """How many takes of an endpoint are parked now."""
        return sum(1 for fut in self._queues.get(endpoint_id, ()) if not fut.done())

    def wake_all(self) -> None:
        """Shutdown: every parked take answers now (with no job)."""
        for queue in self._queues.values():
            for fut in queue:
                resolve(fut)


class DoneWaiters:
    """/runsync (and other) callers waiting for a job to reach a terminal state."""

    def __init__(self) -> None:
        self._by_job: dict[str, list[asyncio.Future[None]]] = {}

    async def wait(self, job_id: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._by_job.setdefault(job_id, [])
        waiters.append(fut)
        handle = loop.call_later(timeout_s, resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            if not waiters:
                self._by_job.pop(job_id, None)

    def release(self, job_id: str) -> None:
        for fut in self._by_job.pop(job_id, []):
            resolve(fut)

    def waited_on(self, job_id: str) -> bool:
        return job_id in self._by_job

    def job_ids(self) -> list[str]:
        """The jobs someone waits on now (shutdown answers them)."""
        return list(self._by_job)


_UNLISTED_TO_FORGET = 2  # heartbeats in a row without a told job before it is forgotten


class StopSignals:
    """The job-stop channel: ids of a worker's jobs that were cancelled or timed out, with a long poll.

    A stop that reached the SDK between its take and the start of the job's task is dropped
    there ("no in-progress job"), so `resend_listed` sends it again while the worker's
    heartbeat still lists the job. A told job is forgotten only once two heartbeats in a row
    did not list it: the first heartbeat after a take may have been built before the take's
    answer arrived, and forgetting on it lost the stop for good (the handler ran on).
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[str]] = {}
        self._waiter: dict[str, asyncio.Future[None]] = {}
        # worker -> jobs told to stop that it may still run -> heartbeats in a row that did not list it
        self._told: dict[str, dict[str, int]] = {}

    def signal(self, worker_id: str, job_id: str) -> None:
        self._pending.setdefault(worker_id, []).append(job_id)
        self._told.setdefault(worker_id, {}).setdefault(job_id, 0)
        fut = self._waiter.pop(worker_id, None)
        if fut is not None:
            resolve(fut)

    def resend_listed(self, worker_id: str, listed_job_ids: list[str]) -> None:
        told = self._told.get(worker_id)
        if not told:
            return
        listed = set(listed_job_ids)
        pending = set(self._pending.get(worker_id, ()))
        for job_id in sorted(told.keys() & listed - pending):
            self.signal(worker_id, job_id)
        for job_id in list(told):
            if job_id in listed:
                told[job_id] = 0
            else:
                told[job_id] += 1
                if told[job_id] >= _UNLISTED_TO_FORGET:
                    del told[job_id]
        if not told:
            del self._told[worker_id]

    def told(self, worker_id: str, job_id: str) -> bool:
        """Whether the worker was told to stop this job and may still run it (then resends follow its heartbeats)."""
        return job_id in self._told.get(worker_id, ())

    async def wait(self, worker_id: str, timeout_s: float, closing: bool) -> list[str]:
        """Long poll: the pending stops at once, else wait for one or the timeout."""
        if not self._pending.get(worker_id) and not closing:
            loop = asyncio.get_running_loop()
            fut = self._waiter.get(worker_id)
            if fut is None or fut.done():
                fut = loop.create_future()
                self._waiter[worker_id] = fut
            handle = loop.call_later(timeout_s, resolve, fut)
            try:
                await asyncio.shield(fut)
            finally:
                handle.cancel()
        return self._pending.pop(worker_id, [])

    def waiting(self, worker_id: str) -> bool:
        """Whether the worker's job-stop long poll is parked now."""
        fut = self._waiter.get(worker_id)
        return fut is not None and not fut.done()

    def wake_all(self) -> None:
        for fut in self._waiter.values():
            resolve(fut)

    def forget_except(self, worker_ids: set[str]) -> None:
        """Drop what is kept for workers that are gone (so it does not grow with every worker ever started)."""
        for worker_id in [w for w in self._waiter if w not in worker_ids]:
            resolve(self._waiter.pop(worker_id))
        for worker_id in [w for w in self._pending if w not in worker_ids]:
            del self._pending[worker_id]
        for worker_id in [w for w in self._told if w not in worker_ids]:
            del self._told[worker_id]

    def size(self) -> int:
        """Workers with anything kept here."""
        return len(set(self._pending) | set(self._told) | set(self._waiter))
