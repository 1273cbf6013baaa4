"""The live worker registry: each worker's state as the worker protocol reveals it, its token, and the jobs it holds.

Backends add a worker when they spawn it and remove it when it exits; the worker API moves
it INITIALIZING -> IDLE/RUNNING on its first job-take and keeps its heartbeat. The
controller reads `views()` through the backend, so one table is the truth for both.

The registry is the only record of which jobs a worker holds: the store knows a job's
status, the registry knows its holder. A worker removed while it still holds jobs (it
crashed, or was SIGKILLed) leaves those jobs here as orphans until the runtime releases
them, so nothing a lost worker held can be forgotten between two maintenance passes.

Every change happens under one lock and is announced to subscribers under that lock, in
order (the fidelity recorder builds exact state timelines from them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from gpuserve.core.types import WorkerState, WorkerView
from gpuserve.live.auth import hash_token, new_worker_token, token_matches

__all__ = ["Change", "Heartbeat", "Lease", "Listener", "LiveWorker", "WorkerRegistry"]

# A held job is released after this many heartbeats in a row that did not list it (and a grace
# interval): the first heartbeat after a take may have been built before the take's answer
# arrived, the second cannot have been (it leaves one interval later). With a 10 s interval a
# lost take reply is found by the second heartbeat after it, at most 20 s later.
UNLISTED_HEARTBEATS = 2


@dataclass
class Lease:
    """A held job as the worker's heartbeats confirm it: when one last listed it (the take until then)."""

    listed_s: float
    misses: int = 0  # heartbeats in a row that did not list it


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat revealed, for the runtime to act on."""

    unlisted: tuple[str, ...] = ()  # held jobs its heartbeats stopped listing: released here, to requeue
    strangers: tuple[str, ...] = ()  # listed jobs the registry does not say it holds: to stop


@dataclass
class LiveWorker:
    worker_id: str
    endpoint_id: str
    created_s: float
    capacity: int = 1
    spec_version: str = ""
    state: WorkerState = WorkerState.INITIALIZING
    first_take_s: float | None = None
    idle_since_s: float | None = None
    last_seen_s: float | None = None
    in_flight: set[str] = field(default_factory=set)
    leases: dict[str, Lease] = field(default_factory=dict)  # one per job in `in_flight`
    lists_jobs: bool = False  # a heartbeat has listed a job: its silence about one means something
    draining: bool = False  # stopPod, OUTDATED or stop requested: hand it no more jobs
    gpu_ids: tuple[int, ...] = ()
    token_hash: str = ""

    def view(self) -> WorkerView:
        return WorkerView(
            worker_id=self.worker_id,
            state=self.state,
            created_s=self.created_s,
            in_flight=len(self.in_flight),
            capacity=self.capacity,
            idle_since_s=self.idle_since_s if self.state is WorkerState.IDLE else None,
        )


class Change(StrEnum):
    """What happened to a worker, as told to subscribers."""

    ADDED = "added"  # registered (spawned, adopted or revived under a fresh entry)
    TOOK = "took"  # a job-take, with the ids it handed over (possibly none)
    JOB_ENDED = "job_ended"
    STATE = "state"  # set explicitly (THROTTLED, OUTDATED, UNHEALTHY, a revival's INITIALIZING)
    REMOVED = "removed"


# (worker as it is now, what changed, when, job ids involved). Called under the registry's lock:
# a listener must be quick and may read the registry, but must not block.
Listener = Callable[[LiveWorker, Change, float | None, tuple[str, ...]], None]


class WorkerRegistry:
    """Thread-safe: the HTTP server (event loop) and backend monitors (threads) both write it."""

    def __init__(self) -> None:
        # Re-entrant, so a listener may read the registry while a change is announced.
        self._lock = threading.RLock()
        self._workers: dict[str, LiveWorker] = {}
        self._orphans: dict[str, set[str]] = {}  # removed worker -> jobs it still held
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _tell(self, w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...] = ()) -> None:
        for listener in self._listeners:
            listener(w, change, now_s, job_ids)

    # -- membership -------------------------------------------------------------------------

    def add(
        self,
        worker_id: str,
        endpoint_id: str,
        now_s: float,
        capacity: int = 1,
        spec_version: str = "",
        gpu_ids: tuple[int, ...] = (),
        token: str | None = None,
    ) -> str:
        """Register a worker; returns its token (a fresh one unless given; only the hash is kept).

        An adopted container keeps polling with the token it was started with, so adoption
        passes that token in.
        """
        token = token or new_worker_token()
        with self._lock:
            w = LiveWorker(
                worker_id=worker_id,
                endpoint_id=endpoint_id,
                created_s=now_s,
                capacity=capacity,
                spec_version=spec_version,
                gpu_ids=gpu_ids,
                token_hash=hash_token(token),
            )
            self._workers[worker_id] = w
            self._tell(w, Change.ADDED, now_s)
        return token

    def revive(self, worker_id: str, now_s: float, capacity: int, token: str) -> bool:
        """A flash-boot resume: back to a fresh start (INITIALIZING until its next take, heard from now).

        A paused process missed its heartbeats while parked, so it counts as heard from now.
        False when the worker is no longer registered.
        """
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return False
            w.first_take_s = None
            w.last_seen_s = now_s
            w.created_s = now_s
            w.capacity = capacity
            w.token_hash = hash_token(token)
            w.draining = False
            w.state = WorkerState.INITIALIZING
            w.idle_since_s = None
            self._tell(w, Change.STATE, now_s)
            return True

    def remove(self, worker_id: str, now_s: float | None = None) -> LiveWorker | None:
        """Forget a worker; jobs it still held stay as orphans until `release_jobs`."""
        with self._lock:
            w = self._workers.pop(worker_id, None)
            if w is None:
                return None
            if w.in_flight:
                self._orphans.setdefault(worker_id, set()).update(w.in_flight)
            self._tell(w, Change.REMOVED, now_s)
            return w

    def authenticate(self, worker_id: str, token: str) -> LiveWorker | None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or not token_matches(w.token_hash, token):
                return None
            return w

    def get(self, worker_id: str) -> LiveWorker | None:
        with self._lock:
            return self._workers.get(worker_id)

    def all(self, endpoint_id: str | None = None) -> list[LiveWorker]:
        with self._lock:
            return [w for w in self._workers.values() if endpoint_id is None or w.endpoint_id == endpoint_id]

    def count(self, endpoint_id: str) -> int:
        with self._lock:
            return sum(1 for w in self._workers.values() if w.endpoint_id == endpoint_id)

    def views(self, endpoint_id: str) -> list[WorkerView]:
        with self._lock:
            return [w.view() for w in self._workers.values() if w.endpoint_id == endpoint_id]

    # -- what the worker protocol reveals ---------------------------------------------------------

    def _settle(self, w: LiveWorker, now_s: float) -> None:
        # IDLE <-> RUNNING follows the in-flight set; the other states are set explicitly.
        if w.state in (WorkerState.IDLE, WorkerState.RUNNING, WorkerState.INITIALIZING) and w.first_take_s is not None:
            if w.in_flight:
                w.state = WorkerState.RUNNING
                w.idle_since_s = None
            elif w.state is not WorkerState.IDLE:
                w.state = WorkerState.IDLE
                w.idle_since_s = now_s

    def on_take(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        """A job-take call (even an empty one) proves the worker is up and polling."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.last_seen_s = now_s
            if w.first_take_s is None:
                w.first_take_s = now_s
            w.in_flight.update(job_ids)
            for job_id in job_ids:
                w.leases[job_id] = Lease(now_s)
            self._settle(w, now_s)
            self._tell(w, Change.TOOK, now_s, tuple(job_ids))

    def on_job_end(self, worker_id: str, job_id: str, now_s: float) -> None:
        with self._lock:
            orphaned = self._orphans.get(worker_id)
            if orphaned is not None:
                orphaned.discard(job_id)
                if not orphaned:
                    del self._orphans[worker_id]
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.in_flight.discard(job_id)
            w.leases.pop(job_id, None)
            w.last_seen_s = now_s
            self._settle(w, now_s)
            self._tell(w, Change.JOB_ENDED, now_s, (job_id,))

    def heard_from(self, worker_id: str, now_s: float) -> None:
        """Any authenticated call but a heartbeat (a progress post, a late result): the worker is alive."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.last_seen_s = now_s

    def on_ping(self, worker_id: str, job_ids: list[str], now_s: float, lease_grace_s: float | None = None) -> Heartbeat:
        """A heartbeat, with the job ids the worker says it is running: reconcile them with what it holds.

        A held job that UNLISTED_HEARTBEATS heartbeats in a row did not list, the last one more
        than `lease_grace_s` after the take (or after it was last listed), never reached the
        worker (a lost take reply) or left it without a result: it is released here and
        returned as `unlisted` for the runtime to requeue. Only for a worker whose heartbeats
        have listed a job before (`lists_jobs`): an SDK whose heartbeat lists nothing would
        otherwise lose every job it runs. None: count the misses, release nothing.
        """
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return Heartbeat()
            w.last_seen_s = now_s
            listed = set(job_ids)
            if listed:
                w.lists_jobs = True
            unlisted: list[str] = []
            for job_id in sorted(w.in_flight):
                lease = w.leases.setdefault(job_id, Lease(now_s))
                if job_id in listed:
                    lease.listed_s, lease.misses = now_s, 0
                    continue
                lease.misses += 1
                if (
                    lease_grace_s is not None
                    and w.lists_jobs
                    and lease.misses >= UNLISTED_HEARTBEATS
                    and now_s - lease.listed_s > lease_grace_s
                ):
                    unlisted.append(job_id)
            strangers = tuple(sorted(listed - w.in_flight))
            if unlisted:
                w.in_flight.difference_update(unlisted)
                for job_id in unlisted:
                    del w.leases[job_id]
                self._settle(w, now_s)
                self._tell(w, Change.JOB_ENDED, now_s, tuple(unlisted))
            return Heartbeat(tuple(unlisted), strangers)

    def set_state(self, worker_id: str, state: WorkerState, now_s: float | None = None) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.state = state
            if state is WorkerState.IDLE:
                w.idle_since_s = now_s
            if state in (WorkerState.OUTDATED, WorkerState.UNHEALTHY):
                w.draining = True
            self._tell(w, Change.STATE, now_s)

    def set_draining(self, worker_id: str, draining: bool = True) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.draining = draining

    def set_gpus(self, worker_id: str, gpu_ids: tuple[int, ...]) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.gpu_ids = gpu_ids

    # -- the jobs workers hold ------------------------------------------------------------------

    def jobs_of(self, worker_id: str) -> list[str]:
        """The jobs a worker holds (registered or orphaned), sorted."""
        with self._lock:
            w = self._workers.get(worker_id)
            held = set(w.in_flight) if w is not None else set()
            held |= self._orphans.get(worker_id, set())
            return sorted(held)

    def release_jobs(self, worker_id: str, now_s: float) -> list[str]:
        """Take every job away from a lost worker (its jobs go back to the store's queue); sorted ids."""
        with self._lock:
            held = self._orphans.pop(worker_id, set())
            w = self._workers.get(worker_id)
            if w is not None and w.in_flight:
                held |= w.in_flight
                w.in_flight = set()
                w.leases = {}
                self._settle(w, now_s)
                self._tell(w, Change.JOB_ENDED, now_s, tuple(sorted(held)))
            return sorted(held)

    def orphaned(self) -> list[str]:
        """Removed workers that still held jobs: each must be released by the runtime."""
        with self._lock:
            return sorted(self._orphans)

    def silent_since(self, now_s: float, timeout_s: float) -> list[LiveWorker]:
        """Workers that took jobs once but have not been heard from for `timeout_s` (missed heartbeats)."""
        with self._lock:
            return [
                w
                for w in self._workers.values()
                if w.last_seen_s is not None
                and now_s - w.last_seen_s > timeout_s
                and w.state is not WorkerState.UNHEALTHY
            ]

    def unhealthy_holding_jobs(self) -> list[str]:
        """UNHEALTHY workers (a crash the backend saw, a failed check) that still hold jobs."""
        with self._lock:
            return sorted(w.worker_id for w in self._workers.values() if w.state is WorkerState.UNHEALTHY and w.in_flight)
