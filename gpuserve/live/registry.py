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

On a store several servers share, a worker another server started may call this one (behind a
reverse proxy, or after its own server died): it is entered as a *guest*, recognised by the
token digest the store holds, with the jobs the store says it holds. A guest's calls are served
like any worker's, but it is not this server's: `all`, `views` and `count` leave it out (no
Controller counts it, no drain requeues its jobs), subscribers hear nothing of it, and its silence
only makes it forgotten (its jobs' leases in the store decide whether they go back to the queue).
A leader that adopts it (`claim`) makes it one of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
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
    attempt: int | None = None  # the store's fencing token for this take (store/base.py, `holds`)


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
    # Load-balancing workers: where their own HTTP server answers, and the first 204 of its
    # health path (INITIALIZING answered); their first 200 is `first_take_s` (ready).
    upstream_url: str | None = None
    health_url: str | None = None
    first_initializing_s: float | None = None
    failure: str | None = None  # UNHEALTHY: why, when the one who marked it said ("exited with code 1")
    # When its start began: registration, or the moment it left THROTTLED (a GPU freed, Ray placed
    # it). A start timeout counts from here, not from `created_s`: time spent waiting for a GPU is
    # not time its server had to come up.
    started_s: float = 0.0
    guest: bool = False  # another server's worker calling this one (see the module's docstring)

    def view(self) -> WorkerView:
        return WorkerView(
            worker_id=self.worker_id,
            state=self.state,
            created_s=self.created_s,
            in_flight=len(self.in_flight),
            capacity=self.capacity,
            idle_since_s=self.idle_since_s if self.state is WorkerState.IDLE else None,
            failure=self.failure if self.state is WorkerState.UNHEALTHY else None,
        )


class Change(StrEnum):
    """What happened to a worker, as told to subscribers."""

    ADDED = "added"  # registered (spawned, adopted or revived under a fresh entry; a claimed guest)
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
        if w.guest:  # not this server's: nothing it bills, counts or records
            return
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
                started_s=now_s,
                capacity=capacity,
                spec_version=spec_version,
                gpu_ids=gpu_ids,
                token_hash=hash_token(token),
            )
            self._workers[worker_id] = w
            self._tell(w, Change.ADDED, now_s)
        return token

    def add_guest(
        self,
        worker_id: str,
        endpoint_id: str,
        token_hash: str,
        now_s: float,
        *,
        capacity: int,
        spec_version: str,
        seen: bool,
        held: Mapping[str, int],
        lists_jobs: bool = False,
    ) -> LiveWorker:
        """Enter another server's worker (see the module's docstring); the entry already there, if one is.

        `held`: the jobs the store says it holds, each with its attempt. `seen`: it has called a
        server before (it is past its start: IDLE or RUNNING, and its silence counts from now).
        `lists_jobs`: its heartbeats list its jobs (so a held job they leave out is lost, `on_ping`).
        """
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                return w
            w = LiveWorker(
                worker_id=worker_id,
                endpoint_id=endpoint_id,
                created_s=now_s,
                capacity=capacity,
                spec_version=spec_version,
                token_hash=token_hash,
                started_s=now_s,
                guest=True,
                lists_jobs=lists_jobs,
            )
            if seen:
                w.first_take_s = w.last_seen_s = now_s
            w.in_flight = set(held)
            w.leases = {job_id: Lease(now_s, attempt=attempt) for job_id, attempt in held.items()}
            self._settle(w, now_s)
            self._workers[worker_id] = w
            return w

    def claim(self, worker_id: str, now_s: float) -> bool:
        """A guest adopted by this server's backend: from now on one of its own (announced as ADDED)."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or not w.guest:
                return False
            w.guest = False
            self._tell(w, Change.ADDED, now_s)
            return True

    def forget_guest(self, worker_id: str) -> bool:
        """Drop a guest that stopped calling; what it held stays the store's business (its leases)."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or not w.guest:
                return False
            del self._workers[worker_id]
            return True

    def guests(self, endpoint_id: str | None = None) -> list[LiveWorker]:
        with self._lock:
            return [w for w in self._workers.values() if w.guest and (endpoint_id is None or w.endpoint_id == endpoint_id)]

    def ids(self) -> set[str]:
        """Every worker entered here, guests included."""
        with self._lock:
            return set(self._workers)

    def hold(self, worker_id: str, job_id: str, attempt: int | None, now_s: float) -> bool:
        """Record a job the store says this worker holds though it was taken through another server."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return False
            w.in_flight.add(job_id)
            w.leases[job_id] = Lease(now_s, attempt=attempt)
            self._settle(w, now_s)
            self._tell(w, Change.TOOK, now_s, (job_id,))
            return True

    def lists_jobs(self, worker_id: str) -> None:
        """Its heartbeats list its jobs, as another server saw (see `on_ping`)."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.lists_jobs = True

    def holder_of(self, job_id: str) -> str | None:
        """The worker entered here that holds `job_id`, if one does."""
        with self._lock:
            return next((w.worker_id for w in self._workers.values() if job_id in w.in_flight), None)

    def revive(self, worker_id: str, now_s: float, capacity: int, token: str, restarted: bool = False) -> bool:
        """A flash-boot resume: back to a fresh start (INITIALIZING until its next take).

        A paused process missed its heartbeats while parked, so it counts as heard from now. A
        `restarted` one (a stopped container started again) is a new process still booting: like
        a cold start, its silence counts only from its first call, or a slow boot on a loaded
        host would read as missed heartbeats and get it killed. False when the worker is no
        longer registered.
        """
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return False
            w.first_take_s = None
            w.first_initializing_s = None
            w.last_seen_s = None if restarted else now_s
            w.created_s = now_s
            w.started_s = now_s
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
        """This server's workers (guests left out)."""
        with self._lock:
            return [
                w for w in self._workers.values() if not w.guest and (endpoint_id is None or w.endpoint_id == endpoint_id)
            ]

    def count(self, endpoint_id: str) -> int:
        with self._lock:
            return sum(1 for w in self._workers.values() if not w.guest and w.endpoint_id == endpoint_id)

    def views(self, endpoint_id: str) -> list[WorkerView]:
        with self._lock:
            return [w.view() for w in self._workers.values() if not w.guest and w.endpoint_id == endpoint_id]

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

    def on_take(
        self, worker_id: str, job_ids: list[str], now_s: float, attempts: Mapping[str, int] | None = None
    ) -> None:
        """A job-take call (even an empty one) proves the worker is up and polling; `attempts`: each job's token."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.last_seen_s = now_s
            if w.first_take_s is None:
                w.first_take_s = now_s
            w.in_flight.update(job_ids)
            for job_id in job_ids:
                w.leases[job_id] = Lease(now_s, attempt=attempts.get(job_id) if attempts else None)
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

    def set_state(self, worker_id: str, state: WorkerState, now_s: float | None = None, *, reason: str | None = None) -> None:
        """Set a worker's state; `reason` says why it is UNHEALTHY (kept until it leaves that state, the first one wins)."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            if state is WorkerState.UNHEALTHY:
                w.failure = w.failure if w.state is WorkerState.UNHEALTHY and w.failure else reason
            else:
                w.failure = None
            if w.state is WorkerState.THROTTLED and state is not WorkerState.THROTTLED and now_s is not None:
                w.started_s = now_s  # placed at last: its start begins now (see `started_s`)
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

    def set_upstream(self, worker_id: str, upstream_url: str, health_url: str) -> None:
        """A load-balancing worker's own server: requests go to `upstream_url`, health polls to `health_url`."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.upstream_url, w.health_url = upstream_url, health_url

    def on_health_initializing(self, worker_id: str, now_s: float) -> None:
        """A load-balancing worker's health path answered 204: its server is up, its model still loading."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.last_seen_s = now_s
            if w.first_initializing_s is None:
                w.first_initializing_s = now_s

    def set_gpus(self, worker_id: str, gpu_ids: tuple[int, ...]) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.gpu_ids = gpu_ids

    # -- the jobs workers hold ------------------------------------------------------------------

    def attempt_of(self, worker_id: str, job_id: str) -> int | None:
        """The fencing token the worker's take of this job got (None: not held here, or not recorded)."""
        with self._lock:
            w = self._workers.get(worker_id)
            lease = w.leases.get(job_id) if w is not None else None
            return lease.attempt if lease is not None else None

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
                and not w.guest
            ]

    def silent_guests(self, now_s: float, timeout_s: float) -> list[str]:
        """Guests not heard from for `timeout_s` (calling another server now, or gone): to forget."""
        with self._lock:
            return sorted(
                w.worker_id
                for w in self._workers.values()
                if w.guest and now_s - (w.last_seen_s if w.last_seen_s is not None else w.created_s) > timeout_s
            )

    def unhealthy_holding_jobs(self) -> list[str]:
        """UNHEALTHY workers (a crash the backend saw, a failed check) that still hold jobs."""
        with self._lock:
            return sorted(w.worker_id for w in self._workers.values() if w.state is WorkerState.UNHEALTHY and w.in_flight)
