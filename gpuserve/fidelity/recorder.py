"""Exact per-worker state transitions of a live run: a recorder of registry changes and a backend wrapper.

The registry is the one table of live worker states (the worker API and the backends write
it) and announces every change under its lock, so a recorder subscribed to it sees each
transition at the instant it happens, in order, with no sampling. The backend wrapper notes spawns and stops (a stopped worker leaves
the controller's view at once, as a retired simulated worker does) and writes each new
worker's cold-start time for the synthetic worker to read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpuserve.core.startup import ColdStartRecord
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState, WorkerView
from gpuserve.live.backend import LiveBackend
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import Change, LiveWorker, WorkerRegistry
from gpuserve.live.worker_ops import ExecResult, LogReader
from gpuserve.sim.coldstart import StageTimes
from gpuserve.store.base import WorkerRecord

__all__ = ["RecordingBackend", "WorkerRecorder", "WorkerTrace"]


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
    ready_s: float | None = None  # first IDLE or RUNNING (a load-balancing worker's first 200 on its health path)
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


class WorkerRecorder:
    """Keeps a WorkerTrace per worker, fed by the registry's change announcements (`attach`)."""

    def __init__(self, job_created_s: Callable[[str], float | None] | None = None) -> None:
        self.traces: dict[str, WorkerTrace] = {}
        self.min_workers: dict[str, int] = {}
        self._rec_lock = threading.RLock()
        self.job_created_s = job_created_s

    def attach(self, registry: WorkerRegistry) -> WorkerRecorder:
        registry.subscribe(self._on_change)
        return self

    def _on_change(self, w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...]) -> None:
        with self._rec_lock:
            if change is Change.ADDED:
                assert now_s is not None
                self._added(w, now_s)
                return
            if change is Change.REMOVED or now_s is None:
                return
            t = self.traces.get(w.worker_id)
            if t is None:
                return
            if w.state is not t.state:
                t.move(w.state, now_s)
                if t.ready_s is None and w.state in (WorkerState.IDLE, WorkerState.RUNNING):
                    t.ready_s = now_s
            if t.first_take_s is None and w.first_take_s is not None:
                t.first_take_s = w.first_take_s
            if change is Change.TOOK and job_ids:
                t.takes += 1
                if t.takes == 1 and t.first_take_s is not None and self.job_created_s is not None:
                    # Cold, as in the simulator: jobs already waiting when the worker became ready.
                    for job_id in job_ids:
                        created = self.job_created_s(job_id)
                        if created is not None and created < t.first_take_s:
                            t.cold_jobs.add(job_id)

    def _added(self, w: LiveWorker, now_s: float) -> None:
        if w.worker_id in self.traces:  # a respawn or revival under the same id: one life goes on
            return
        alive_active = sum(
            1 for t in self.traces.values() if t.endpoint_id == w.endpoint_id and t.active and t.retired_s is None
        )
        self.traces[w.worker_id] = WorkerTrace(
            w.worker_id,
            w.endpoint_id,
            len(self.traces),
            created_s=now_s,
            active=alive_active < self.min_workers.get(w.endpoint_id, 0),
            since_s=now_s,
        )

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
        recorder: WorkerRecorder,
        plan_dir: Path,
        start_stages: Callable[[str, float], StageTimes],
        init_s: Callable[[StageTimes], float],
        on_retire: Callable[[str, float, bool], None],
    ) -> None:
        self.inner = inner
        self.recorder = recorder
        self.plan_dir = plan_dir
        self._start_stages = start_stages
        self._init_s = init_s
        self._on_retire = on_retire
        self.applied: list[tuple[float, str, int, tuple[str, ...]]] = []

    def recycle(self, worker_id: str) -> None:
        self.inner.recycle(worker_id)

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        return self.inner.cold_start(worker_id)

    def adopt(self, record: WorkerRecord, now_s: float) -> bool:
        return self.inner.adopt(record, now_s)

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        return self.inner.workers(endpoint_id)

    def image_cached(self, endpoint_id: str) -> bool:
        return self.inner.image_cached(endpoint_id)

    def configure(self, deployment: Deployment) -> None:
        self.inner.configure(deployment)

    def poll(self, now_s: float) -> None:
        self.inner.poll(now_s)

    def logs(self, worker_id: str, tail_lines: int = 200) -> str:
        return self.inner.logs(worker_id, tail_lines)

    def open_log(self, worker_id: str, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> LogReader:
        return self.inner.open_log(worker_id, tail_lines=tail_lines, since_wall_s=since_wall_s, follow=follow)

    def exec(self, worker_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        return self.inner.exec(worker_id, argv, timeout_s)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        eid = endpoint.endpoint_id
        self.applied.append((now_s, eid, action.start, action.stop))
        for worker_id in action.stop:
            t = self.recorder.retire(worker_id, now_s)
            if t is not None:
                ready = t.ready_s if endpoint.is_load_balancer else t.first_take_s
                self._on_retire(eid, now_s, ready is not None)
        before = set(self.recorder.traces)
        self.inner.apply(endpoint, action, now_s)
        for worker_id, t in list(self.recorder.traces.items()):
            if worker_id in before:
                continue
            t.stages = self._start_stages(eid, now_s)
            path = self.plan_dir / f"{worker_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"init_s": self._init_s(t.stages)}))
            tmp.replace(path)
