"""Exact per-worker state transitions of a live run: a recording WorkerRegistry and a backend wrapper.

The registry is the one table of live worker states (the worker API and the backends write
it), so a subclass that notes every change of state sees each transition at the instant it
happens, with no sampling. The backend wrapper notes spawns and stops (a stopped worker leaves
the controller's view at once, as a retired simulated worker does) and writes each new
worker's cold-start time for the synthetic worker to read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuserve.backends.base import Deployment, LiveBackend
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState, WorkerView
from gpuserve.server.workers import WorkerRegistry
from gpuserve.sim.coldstart import StageTimes

__all__ = ["RecordingBackend", "RecordingRegistry", "WorkerTrace"]


@dataclass
class WorkerTrace:
    """One live worker's life: spawn, first take, retirement and its state intervals (wall seconds)."""

    worker_id: str
    endpoint_id: str
    index: int
    created_s: float
    active: bool
    state: WorkerState = WorkerState.INITIALIZING
    since_s: float = 0.0
    first_take_s: float | None = None
    retired_s: float | None = None
    takes: int = 0  # job-takes that returned jobs
    stages: StageTimes = field(default_factory=StageTimes)
    intervals: list[tuple[WorkerState, float, float, bool]] = field(default_factory=list)
    cold_jobs: set[str] = field(default_factory=set)

    def move(self, state: WorkerState, now_s: float) -> None:
        if self.retired_s is not None:
            return
        if now_s > self.since_s:
            self.intervals.append((self.state, self.since_s, now_s, self.active))
        self.state, self.since_s = state, max(now_s, self.since_s)

    def close(self, now_s: float) -> None:
        if self.retired_s is None:
            self.move(self.state, now_s)
            self.retired_s = now_s


class RecordingRegistry(WorkerRegistry):
    """A WorkerRegistry that also keeps a WorkerTrace per worker."""

    def __init__(self, job_created_s: Callable[[str], float | None] | None = None) -> None:
        super().__init__()
        self.traces: dict[str, WorkerTrace] = {}
        self.min_workers: dict[str, int] = {}
        self._rec_lock = threading.RLock()
        self.job_created_s = job_created_s

    def _note(self, worker_id: str, now_s: float | None) -> None:
        w = self.get(worker_id)
        t = self.traces.get(worker_id)
        if w is None or t is None or now_s is None:
            return
        if w.state is not t.state:
            t.move(w.state, now_s)
        if t.first_take_s is None and w.first_take_s is not None:
            t.first_take_s = w.first_take_s

    def add(
        self,
        worker_id: str,
        endpoint_id: str,
        now_s: float,
        capacity: int = 1,
        spec_version: str = "",
        gpu_ids: tuple[int, ...] = (),
    ) -> str:
        with self._rec_lock:
            token = super().add(worker_id, endpoint_id, now_s, capacity, spec_version, gpu_ids)
            if worker_id not in self.traces:
                alive_active = sum(
                    1 for t in self.traces.values() if t.endpoint_id == endpoint_id and t.active and t.retired_s is None
                )
                self.traces[worker_id] = WorkerTrace(
                    worker_id,
                    endpoint_id,
                    len(self.traces),
                    created_s=now_s,
                    active=alive_active < self.min_workers.get(endpoint_id, 0),
                    since_s=now_s,
                )
            return token

    def on_take(self, worker_id: str, job_ids: list[str], now_s: float) -> None:
        with self._rec_lock:
            super().on_take(worker_id, job_ids, now_s)
            self._note(worker_id, now_s)
            t = self.traces.get(worker_id)
            if t is not None and job_ids:
                t.takes += 1
                if t.takes == 1 and t.first_take_s is not None and self.job_created_s is not None:
                    # Cold, as in the simulator: jobs already waiting when the worker became ready.
                    for job_id in job_ids:
                        created = self.job_created_s(job_id)
                        if created is not None and created < t.first_take_s:
                            t.cold_jobs.add(job_id)

    def on_job_end(self, worker_id: str, job_id: str, now_s: float) -> None:
        with self._rec_lock:
            super().on_job_end(worker_id, job_id, now_s)
            self._note(worker_id, now_s)

    def set_state(self, worker_id: str, state: WorkerState, now_s: float | None = None) -> None:
        with self._rec_lock:
            super().set_state(worker_id, state, now_s)
            self._note(worker_id, now_s)

    def remove(self, worker_id: str) -> Any:
        with self._rec_lock:
            gone = super().remove(worker_id)
            return gone

    def retire(self, worker_id: str, now_s: float) -> WorkerTrace | None:
        """The controller stopped it: its life (and its counted time) ends now, as in the simulator."""
        with self._rec_lock:
            t = self.traces.get(worker_id)
            if t is None or t.retired_s is not None:
                return None
            t.close(now_s)
            if t.active:
                # Active capacity is reserved, not tied to one container: the oldest flex worker
                # takes over the always-on billing (the simulator's rule).
                flex = [x for x in self.traces.values() if x.endpoint_id == t.endpoint_id and not x.active and x.retired_s is None]
                if flex:
                    heir = min(flex, key=lambda x: x.index)
                    heir.move(heir.state, now_s)
                    heir.active = True
            return t

    def close_all(self, now_s: float) -> None:
        with self._rec_lock:
            for t in self.traces.values():
                t.close(now_s)


class RecordingBackend:
    """Wraps a live backend: records spawns and stops, and hands each new worker its cold-start time."""

    def __init__(
        self,
        inner: LiveBackend,
        registry: RecordingRegistry,
        plan_dir: Path,
        start_stages: Callable[[str, float], StageTimes],
        init_s: Callable[[StageTimes], float],
        on_retire: Callable[[str, float, bool], None],
    ) -> None:
        self.inner = inner
        self.registry = registry
        self.plan_dir = plan_dir
        self._start_stages = start_stages
        self._init_s = init_s
        self._on_retire = on_retire
        self.applied: list[tuple[float, str, int, tuple[str, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        # recycle, cold_start, process_id ...: whatever else the server asks of the real backend.
        return getattr(self.inner, name)

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        return self.inner.workers(endpoint_id)

    def configure(self, deployment: Deployment) -> None:
        self.inner.configure(deployment)

    def poll(self, now_s: float) -> None:
        self.inner.poll(now_s)

    def logs(self, worker_id: str, tail_lines: int = 200) -> str:
        return self.inner.logs(worker_id, tail_lines)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        eid = endpoint.endpoint_id
        self.applied.append((now_s, eid, action.start, action.stop))
        for worker_id in action.stop:
            t = self.registry.retire(worker_id, now_s)
            if t is not None:
                self._on_retire(eid, now_s, t.first_take_s is not None)
        before = set(self.registry.traces)
        self.inner.apply(endpoint, action, now_s)
        for worker_id, t in list(self.registry.traces.items()):
            if worker_id in before:
                continue
            t.stages = self._start_stages(eid, now_s)
            path = self.plan_dir / f"{worker_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"init_s": self._init_s(t.stages)}))
            tmp.replace(path)
