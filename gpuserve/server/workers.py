"""The live worker registry: each worker's state as the worker protocol reveals it, plus its token.

Backends add a worker when they spawn it and mark it gone when it exits; the worker API
moves it INITIALIZING -> IDLE/RUNNING on its first job-take and keeps its heartbeat. The
controller reads `views()` through the backend, so one table is the truth for both.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field

from gpuserve.core.types import WorkerState, WorkerView

__all__ = ["LiveWorker", "WorkerRegistry", "hash_token"]


def hash_token(token: str) -> str:
    """Tokens and keys are stored as SHA-256 digests, never in the clear."""
    return hashlib.sha256(token.encode()).hexdigest()


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


class WorkerRegistry:
    """Thread-safe: the HTTP server (event loop) and backend monitors (threads) both write it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, LiveWorker] = {}

    def add(
        self,
        worker_id: str,
        endpoint_id: str,
        now_s: float,
        capacity: int = 1,
        spec_version: str = "",
        gpu_ids: tuple[int, ...] = (),
    ) -> str:
        """Register a freshly spawned worker; returns its worker token (only the hash is kept)."""
        token = "wk_" + secrets.token_urlsafe(24)
        with self._lock:
            self._workers[worker_id] = LiveWorker(
                worker_id=worker_id,
                endpoint_id=endpoint_id,
                created_s=now_s,
                capacity=capacity,
                spec_version=spec_version,
                gpu_ids=gpu_ids,
                token_hash=hash_token(token),
            )
        return token

    def authenticate(self, worker_id: str, token: str) -> LiveWorker | None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or not secrets.compare_digest(w.token_hash, hash_token(token)):
                return None
            return w

    def get(self, worker_id: str) -> LiveWorker | None:
        with self._lock:
            return self._workers.get(worker_id)

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
            self._settle(w, now_s)

    def on_job_end(self, worker_id: str, job_id: str, now_s: float) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return
            w.in_flight.discard(job_id)
            w.last_seen_s = now_s
            self._settle(w, now_s)

    def on_ping(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.last_seen_s = now_s

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

    def set_draining(self, worker_id: str, draining: bool = True) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.draining = draining

    def remove(self, worker_id: str) -> LiveWorker | None:
        with self._lock:
            return self._workers.pop(worker_id, None)

    def all(self, endpoint_id: str | None = None) -> list[LiveWorker]:
        with self._lock:
            return [w for w in self._workers.values() if endpoint_id is None or w.endpoint_id == endpoint_id]

    def views(self, endpoint_id: str) -> list[WorkerView]:
        with self._lock:
            return [w.view() for w in self._workers.values() if w.endpoint_id == endpoint_id]

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
