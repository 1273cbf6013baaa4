"""The simpy engine: simulated workers, queue and clock behind the same Controller that runs live.

Design for speed (the hot path is one arrival and one completion per job):
- arrivals are drawn up front as one sorted array per endpoint, merged, and replayed by a
  chain of simpy Timeouts carrying plain callbacks (no generator process per job);
- service times come from per-endpoint buffers filled by numpy in blocks;
- records are appended to flat lists/arrays and become DataFrames only at the end;
- the Controller is consulted through the Backend/JobQueue/Clock seams exactly as live, when
  gpuserve.schedule says it must: on arrivals that need it, at the policy's tick interval,
  at the wake it asks for and at an idle worker's keep-alive expiry;
- job statuses are gpuserve.core.jobs.JobStatus as small ints, each move checked once
  against the job state machine.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import simpy
from simpy.core import StopSimulation

from gpuserve.controller import Controller
from gpuserve.core.errors import ConfigError
from gpuserve.core.jobs import JobStatus, transition
from gpuserve.core.types import EndpointSpec, QueueStats, ScaleAction, WorkerState, WorkerView
from gpuserve.schedule import ConsultPlan, idle_expiry_wake_s, must_consult_on_arrival
from gpuserve.sim.billing import BillingModel
from gpuserve.sim.coldstart import ColdStartProfile, StageTimes
from gpuserve.sim.hosts import HostSpec, HostState
from gpuserve.sim.service import ServiceTime
from gpuserve.sim.workload import Workload

__all__ = [
    "JOB_STATUSES",
    "JOB_STATUS_CODES",
    "STATE_CODES",
    "RawRecords",
    "SimBackend",
    "SimClock",
    "SimConfig",
    "SimEndpoint",
    "SimQueue",
    "Simulation",
]

STATE_CODES: tuple[WorkerState, ...] = (
    WorkerState.INITIALIZING,
    WorkerState.IDLE,
    WorkerState.RUNNING,
    WorkerState.THROTTLED,
    WorkerState.OUTDATED,
    WorkerState.UNHEALTHY,
)
_CODE = {s: i for i, s in enumerate(STATE_CODES)}
_INIT, _IDLE, _RUN, _THR = (_CODE[s] for s in STATE_CODES[:4])

# A job's status is its position in JobStatus (IN_QUEUE 0, IN_PROGRESS 1, COMPLETED 2, ...):
# one small int per job in a list, mapped back to names by gpuserve.sim.records.
JOB_STATUS_CODES: tuple[JobStatus, ...] = tuple(JobStatus)
JOB_STATUSES: tuple[str, ...] = tuple(s.value for s in JOB_STATUS_CODES)
_JOB_CODE = {s: i for i, s in enumerate(JOB_STATUS_CODES)}


def _move(source: JobStatus, target: JobStatus) -> int:
    """The code of `target`, once the job state machine has accepted `source -> target`."""
    return _JOB_CODE[transition(source, target)]


# The engine's moves, checked here once rather than per job: a job is dispatched only from
# the queue (or straight from its arrival) and finishes only after its dispatch, so on the
# hot path each move is one store of a precomputed code. The outcome is known at dispatch
# (the service time is drawn then), but is recorded when the job ends.
_QUEUED = _JOB_CODE[JobStatus.IN_QUEUE]
_TAKEN = _move(JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)
_COMPLETED = _move(JobStatus.IN_PROGRESS, JobStatus.COMPLETED)
_TIMED_OUT = _move(JobStatus.IN_PROGRESS, JobStatus.TIMED_OUT)

_SERVICE_BLOCK = 8192


@dataclass(frozen=True)
class SimEndpoint:
    """One simulated endpoint: the same EndpointSpec the live system uses, plus its models."""

    spec: EndpointSpec
    workload: Workload
    service: ServiceTime
    cold_start: ColdStartProfile = field(default_factory=ColdStartProfile)


@dataclass(frozen=True)
class SimConfig:
    endpoints: tuple[SimEndpoint, ...]
    hosts: tuple[HostSpec, ...] = ()  # empty: one host with unlimited GPUs of every type
    billing: BillingModel = field(default_factory=BillingModel)
    duration_s: float = 3600.0  # arrivals stop here; the run goes on until the last job ends
    seed: int = 0
    consult_on_arrival: Literal["auto", "always"] = "auto"
    drain_limit_s: float = 3600.0  # after duration_s, jobs still unfinished this much later are CANCELLED

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("endpoints", [], "needs at least one endpoint")
        ids = [e.spec.endpoint_id for e in self.endpoints]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError("endpoints", dupes[0], "endpoint ids must be unique")
        if not self.duration_s > 0:
            raise ConfigError("duration_s", self.duration_s, "must be positive")
        if not self.drain_limit_s >= 0:
            raise ConfigError("drain_limit_s", self.drain_limit_s, "cannot be negative")
        if self.consult_on_arrival not in ("auto", "always"):
            raise ConfigError("consult_on_arrival", self.consult_on_arrival, "must be 'auto' or 'always'")
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ConfigError("hosts", names, "host names must be unique")
        for i, ep in enumerate(self.endpoints):
            spec = ep.spec
            if spec.gpus_needed and self.hosts:
                fits = [h for h in self.hosts if h.unlimited or h.gpus.get(spec.gpu_type or "", 0) >= spec.gpus_needed]
                if not fits:
                    raise ConfigError(
                        f"endpoints[{i}].gpu_type",
                        spec.gpu_type,
                        f"no host has {spec.gpus_needed} GPU(s) of this type",
                    )


class _Worker:
    __slots__ = (
        "active",
        "alive",
        "capacity",
        "created_s",
        "ep",
        "has_gpu",
        "host",
        "idle_since_s",
        "idx",
        "in_flight",
        "in_heap",
        "ready_s",
        "since_s",
        "stages",
        "state",
        "wid",
    )

    def __init__(self, idx: int, ep: _Ep, host: HostState, now_s: float, active: bool) -> None:
        self.idx = idx
        self.wid = f"{ep.eid}-w{idx}"
        self.ep = ep
        self.host = host
        self.created_s = now_s
        self.since_s = now_s
        self.state = _INIT
        self.capacity = ep.spec.concurrency_per_worker
        self.in_flight = 0
        self.idle_since_s: float | None = None
        self.alive = True
        self.in_heap = False
        self.has_gpu = False
        self.active = active
        self.ready_s: float | None = None
        self.stages = StageTimes()


class _Ep:
    """Run-time state of one endpoint."""

    def __init__(
        self, index: int, sim_ep: SimEndpoint, rng: np.random.Generator, hosts: list[HostState], plan: ConsultPlan
    ) -> None:
        self.index = index
        self.sim_ep = sim_ep
        self.spec = sim_ep.spec
        self.eid = sim_ep.spec.endpoint_id
        self.profile = sim_ep.cold_start
        self.queue: deque[int] = deque()
        self.workers: dict[str, _Worker] = {}
        self.free_heap: list[tuple[int, _Worker]] = []
        self.in_progress = 0
        self.submitted = 0
        self.last_arrival_s: float | None = None
        self.pending_wake_s: float | None = None
        self.keep_alive_s: float | None = None  # the last decision's; None: the endpoint's idle timeout
        # Flash-boot snapshots: (host, expires_s, index of its parked span in the records).
        self.retained: list[tuple[HostState, float, int]] = []
        self.active_alive = 0
        need, gpu_type = sim_ep.spec.gpus_needed, sim_ep.spec.gpu_type
        # Only hosts that could ever fit one worker (SimConfig checks at least one does).
        self.hosts = [h for h in hosts if h.spec.unlimited or not need or h.spec.gpus.get(gpu_type or "", 0) >= need]
        self.plan = plan  # when the controller must be consulted (gpuserve.schedule)
        self.throttled = 0  # workers now THROTTLED
        self._rng = rng
        self._service = sim_ep.service
        # Calibrated platform overheads (0 by default): a job starts dispatch_s after a worker is
        # free for it and holds the worker result_post_s beyond its service time.
        self.dispatch_s = sim_ep.cold_start.dispatch_s
        self.job_overhead_s = sim_ep.cold_start.dispatch_s + sim_ep.cold_start.result_post_s
        self.execution_timeout_s = sim_ep.spec.execution_timeout_s
        self._buffer: list[float] = []
        self._pos = 0

    def next_service_s(self) -> float:
        pos = self._pos
        if pos >= len(self._buffer):
            self._buffer = self._service.sample(self._rng, _SERVICE_BLOCK).tolist()
            pos = 0
        self._pos = pos + 1
        return self._buffer[pos]


@dataclass
class RawRecords:
    """Everything a run recorded, as flat columns (turned into DataFrames by gpuserve.sim.records)."""

    endpoint_ids: list[str]
    job_endpoint: np.ndarray
    job_arrival_s: np.ndarray
    job_start_s: list[float]
    job_end_s: list[float]
    job_worker: list[int]
    job_cold: list[bool]
    job_status: list[int]
    iv_worker: array[int]
    iv_state: array[int]
    iv_start_s: array[float]
    iv_end_s: array[float]
    iv_active: array[int]
    workers: list[dict[str, Any]]
    end_s: float
    config: SimConfig
    controller_calls: int = 0
    # Spans a stopped worker's flash-boot snapshot was kept (billed only by some presets):
    # the worker's index, from its stop until it is resumed, expires or the run ends.
    park_worker: list[int] = field(default_factory=list)
    park_start_s: list[float] = field(default_factory=list)
    park_end_s: list[float] = field(default_factory=list)


class SimClock:
    """Sim time as a gpuserve Clock."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env

    def now_s(self) -> float:
        return float(self.env.now)


class SimBackend:
    """The Backend seam over simulated workers: what the controller sees and what it may do."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        ep = self._sim._by_id[endpoint_id]
        return [
            WorkerView(
                w.wid,
                STATE_CODES[w.state],
                created_s=w.created_s,
                in_flight=w.in_flight,
                capacity=w.capacity,
                idle_since_s=w.idle_since_s if w.state == _IDLE else None,
            )
            for w in ep.workers.values()
        ]

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        self._sim._apply(endpoint.endpoint_id, action, now_s)


class SimQueue:
    """The JobQueue seam over the in-memory FIFO queues."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        sim = self._sim
        ep = sim._by_id[endpoint_id]
        oldest = now_s - sim._arrival[ep.queue[0]] if ep.queue else 0.0
        return QueueStats(
            in_queue=len(ep.queue),
            in_progress=ep.in_progress,
            oldest_queued_age_s=max(0.0, oldest),
            submitted_total=ep.submitted,
            last_arrival_s=ep.last_arrival_s,
        )


class Simulation:
    """One run of a SimConfig. `run()` returns RawRecords; gpuserve.sim.records makes DataFrames."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.env = simpy.Environment()
        host_specs = config.hosts or (HostSpec("unlimited", unlimited=True),)
        self.hosts = [HostState(h) for h in host_specs]
        self.clock = SimClock(self.env)
        self.backend = SimBackend(self)
        self.queue = SimQueue(self)
        self.controller = Controller([e.spec for e in config.endpoints], self.backend, self.queue, self.clock)
        self.controller_calls = 0
        always = config.consult_on_arrival == "always"
        self._eps: list[_Ep] = []
        arrivals: list[np.ndarray] = []
        for i, sim_ep in enumerate(config.endpoints):
            # Separate, stable streams per endpoint: arrivals (0) and service times (1). Adding
            # an endpoint or changing a service model never shifts another stream.
            arr_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(i, 0)))
            svc_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(i, 1)))
            plan = self.controller.consult_plan(sim_ep.spec.endpoint_id)
            self._eps.append(_Ep(i, sim_ep, svc_rng, self.hosts, plan.consulting_every_arrival() if always else plan))
            arrivals.append(np.asarray(sim_ep.workload.arrivals(arr_rng, config.duration_s), dtype=float))
        self._by_id = {ep.eid: ep for ep in self._eps}
        all_t = np.concatenate(arrivals) if arrivals else np.empty(0)
        all_ep = np.concatenate([np.full(a.size, i, dtype=np.int32) for i, a in enumerate(arrivals)])
        order = np.argsort(all_t, kind="stable")
        self._arrival_np = all_t[order]
        self._job_ep_np = all_ep[order]
        self._arrival: list[float] = self._arrival_np.tolist()
        self._job_ep: list[int] = self._job_ep_np.tolist()
        n = len(self._arrival)
        self._n_jobs = n
        self._start: list[float] = [float("nan")] * n
        self._end: list[float] = [float("nan")] * n
        self._worker_of: list[int] = [-1] * n
        self._cold: list[bool] = [False] * n
        self._status: list[int] = [_QUEUED] * n
        self._next_job = 0
        self._remaining = n
        self._horizon_passed = False
        self._finished = False
        self._started = False
        self._end_s = config.duration_s
        self._iv_worker: array[int] = array("l")
        self._iv_state: array[int] = array("b")
        self._iv_start: array[float] = array("d")
        self._iv_end: array[float] = array("d")
        self._iv_active: array[int] = array("b")
        self._all_workers: list[_Worker] = []
        self._retired_at: dict[int, float] = {}
        self._park_worker: list[int] = []
        self._park_start: list[float] = []
        self._park_end: list[float] = []  # the expiry until the snapshot is taken
        self._seq = itertools.count()
        # Bound once: two callbacks per job, and binding a method allocates each time.
        self._arrival_cb = self._on_arrival
        self._done_cb = self._on_done

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the first controller pass, ticks, arrivals and the end-of-run checks."""
        if self._started:
            return
        self._started = True
        for ep in self._eps:
            self._consult(ep, 0.0)
            interval = ep.plan.tick_interval_s
            if interval is not None:
                self._schedule_tick(ep, interval)
        if self._n_jobs:
            self._after(self._arrival[0], self._on_arrival)
        self._after(self.config.duration_s, self._on_horizon)
        self._after(self.config.duration_s + self.config.drain_limit_s, self._on_deadline)

    def run(self, progress: Callable[[float, float], None] | None = None, chunks: int = 100) -> RawRecords:
        """Run to the end: arrivals stop at duration_s; the run ends when the last job ends."""
        env = self.env
        self.start()
        horizon = self.config.duration_s + self.config.drain_limit_s
        step_s = horizon / max(1, chunks) if progress else horizon + 1.0
        t = 0.0
        while not self._finished:
            t = t + step_s
            env.run(until=t)
            if progress:
                progress(min(float(env.now), horizon), horizon)
        self._close(self._end_s)
        return self._records()

    def _after(self, delay_s: float, fn: Callable[[Any], None], value: Any = None) -> None:
        ev = simpy.Timeout(self.env, max(0.0, delay_s), value)
        ev.callbacks.append(fn)

    def _stop(self) -> None:
        self._finished = True
        self._end_s = float(self.env.now)
        raise StopSimulation(None)

    def _on_horizon(self, _ev: Any) -> None:
        self._horizon_passed = True
        if self._remaining == 0:
            self._stop()

    def _on_deadline(self, _ev: Any) -> None:
        self._stop()

    # -- arrivals and completions (the hot path) -------------------------------------------

    def _on_arrival(self, _ev: Any) -> None:
        j = self._next_job
        self._next_job = j + 1
        now = self.env._now
        ep = self._eps[self._job_ep[j]]
        ep.submitted += 1
        ep.last_arrival_s = now
        if j + 1 < self._n_jobs:
            ev = simpy.Timeout(self.env, max(0.0, self._arrival[j + 1] - now))
            ev.callbacks.append(self._arrival_cb)
        # Free workers take queued jobs at once, so a non-empty queue means no free slot.
        # The schedule's arguments go by position here: free_slot, workers, throttled.
        if not ep.queue:
            w = self._pop_free(ep)
            if w is not None:
                self._dispatch(ep, w, j, now, False)
                if must_consult_on_arrival(ep.plan, True, len(ep.workers), ep.throttled):
                    self._consult(ep, now)
                return
        ep.queue.append(j)
        if must_consult_on_arrival(ep.plan, False, len(ep.workers), ep.throttled):
            self._consult(ep, now)

    def _pop_free(self, ep: _Ep) -> _Worker | None:
        # Newest worker first (as SimFaaS and Lambda-like platforms do): load packs onto
        # recent workers so older ones can reach their keep-alive and retire.
        heap = ep.free_heap
        while heap:
            w = heapq.heappop(heap)[1]
            w.in_heap = False
            if w.alive and w.in_flight < w.capacity and (w.state == _IDLE or w.state == _RUN):
                return w
        return None

    def _push_free(self, ep: _Ep, w: _Worker) -> None:
        if not w.in_heap:
            w.in_heap = True
            heapq.heappush(ep.free_heap, (-w.idx, w))

    def _dispatch(self, ep: _Ep, w: _Worker, j: int, now: float, cold: bool) -> None:
        self._start[j] = now + ep.dispatch_s
        self._worker_of[j] = w.idx
        self._cold[j] = cold
        w.in_flight += 1
        ep.in_progress += 1
        if w.state != _RUN:
            self._set_state(w, _RUN, now)
            w.idle_since_s = None
        if w.in_flight < w.capacity:
            self._push_free(ep, w)
        self._status[j] = _TAKEN
        d = ep.next_service_s()
        timeout = ep.execution_timeout_s
        if d > timeout:
            d = timeout
            outcome = _TIMED_OUT
        else:
            outcome = _COMPLETED
        ev = simpy.Timeout(self.env, d + ep.job_overhead_s, (w, j, outcome))
        ev.callbacks.append(self._done_cb)

    def _on_done(self, ev: Any) -> None:
        w, j, outcome = ev._value
        now = self.env._now
        self._end[j] = now
        self._status[j] = outcome
        self._remaining -= 1
        ep = w.ep
        ep.in_progress -= 1
        w.in_flight -= 1
        if ep.queue:
            self._dispatch(ep, w, ep.queue.popleft(), now, False)
        elif w.in_flight == 0:
            self._set_state(w, _IDLE, now)
            w.idle_since_s = now
            self._push_free(ep, w)
            # _expiry_wake, inlined: nearly every job ends with its worker going idle.
            wake = idle_expiry_wake_s(ep.plan, now, len(ep.workers), ep.keep_alive_s)
            if wake is not None and (ep.pending_wake_s is None or wake < ep.pending_wake_s):
                self._arm_wake(ep, wake, now)
        else:
            self._push_free(ep, w)
        if self._remaining == 0 and self._horizon_passed:
            self._stop()

    def _set_state(self, w: _Worker, state: int, now: float) -> None:
        if now > w.since_s:
            self._iv_worker.append(w.idx)
            self._iv_state.append(w.state)
            self._iv_start.append(w.since_s)
            self._iv_end.append(now)
            self._iv_active.append(w.active)
        w.state = state
        w.since_s = now

    # -- the controller seam ---------------------------------------------------------------

    def _consult(self, ep: _Ep, now: float) -> None:
        ctrl = self.controller
        self.controller_calls += 1
        step = ctrl.tick_endpoint(ep.eid, now)
        ep.keep_alive_s = step.decision.keep_alive_s
        wake = step.next_wake_s
        if wake is not None and wake > now and (ep.pending_wake_s is None or wake < ep.pending_wake_s):
            self._arm_wake(ep, wake, now)

    def _expiry_wake(self, ep: _Ep, now: float) -> None:
        """A worker just went idle: make sure the controller looks again when it could expire."""
        wake = idle_expiry_wake_s(ep.plan, now, len(ep.workers), ep.keep_alive_s)  # idle since now
        if wake is not None and (ep.pending_wake_s is None or wake < ep.pending_wake_s):
            self._arm_wake(ep, wake, now)

    def _arm_wake(self, ep: _Ep, wake: float, now: float) -> None:
        """Consult at `wake`, which is earlier than any wake pending (that one is then ignored)."""
        ep.pending_wake_s = wake
        self._after(wake - now, self._on_wake, (ep, wake))

    def _on_wake(self, ev: Any) -> None:
        ep, wake = ev._value
        if ep.pending_wake_s != wake:
            return  # superseded by an earlier wake, which already consulted the controller
        ep.pending_wake_s = None
        self._consult(ep, self.env._now)

    def _schedule_tick(self, ep: _Ep, interval_s: float) -> None:
        def tick(_ev: Any) -> None:
            self._consult(ep, self.env._now)
            self._after(interval_s, tick)

        self._after(interval_s, tick)

    # -- the backend: starting and stopping workers ----------------------------------------

    def _apply(self, endpoint_id: str, action: ScaleAction, now: float) -> None:
        ep = self._by_id[endpoint_id]
        for wid in action.stop:
            w = ep.workers.get(wid)
            if w is not None:
                self._retire(ep, w, now)
        for _ in range(action.start):
            self._start_worker(ep, now)

    def _start_worker(self, ep: _Ep, now: float) -> None:
        spec = ep.spec
        flash_host = self._take_retained(ep, now) if spec.scaling.flash_boot else None
        host = flash_host or self._place(ep, now)
        active = ep.active_alive < spec.scaling.min_workers
        if active:
            ep.active_alive += 1
        w = _Worker(next(self._seq), ep, host, now, active)
        self._all_workers.append(w)
        ep.workers[w.wid] = w
        profile = ep.profile
        image_wait: float | None = None
        if flash_host is None:
            landed = host.images.get(profile.image)
            if landed is None:
                host.images[profile.image] = now + profile.full_pull_s  # the first pull caches it
            else:
                image_wait = max(0.0, landed - now)
        w.stages = profile.stages(image_wait_s=image_wait, flash=flash_host is not None)
        # The GPU is reserved at placement, so workers started together spread over hosts.
        # With none free the worker still pulls and starts its container, then waits in the
        # host's FIFO for a GPU (THROTTLED once it is up).
        if host.try_acquire(spec.gpu_type, spec.gpus_needed):
            w.has_gpu = True
        else:
            host.waiting(spec.gpu_type).append(w)
        self._after(w.stages.before_gpu_s, self._on_container_up, w)

    def _place(self, ep: _Ep, now: float) -> HostState:
        """A host with a free GPU of the type (image cached first), else the shortest GPU wait."""
        spec = ep.spec
        need = spec.gpus_needed
        image = ep.profile.image
        hosts = ep.hosts or self.hosts
        free = [h for h in hosts if h.free_gpus(spec.gpu_type) >= need]
        if free:
            cached = [h for h in free if h.images.get(image, np.inf) <= now]
            return (cached or free)[0]
        return min(hosts, key=lambda h: len(h.waiting(spec.gpu_type)))

    def _take_retained(self, ep: _Ep, now: float) -> HostState | None:
        ep.retained = [r for r in ep.retained if r[1] > now]
        for i in range(len(ep.retained) - 1, -1, -1):
            host, _expires_s, park = ep.retained[i]
            if host.free_gpus(ep.spec.gpu_type) >= ep.spec.gpus_needed:
                del ep.retained[i]
                self._park_end[park] = now
                return host
        return None

    def _on_container_up(self, ev: Any) -> None:
        w: _Worker = ev._value
        if not w.alive:
            return
        if w.has_gpu:
            self._load_on_gpu(w)
        else:
            # Up and ready to load weights, but no GPU has freed on its host since it was
            # placed: THROTTLED (not billed) until one does.
            self._set_state(w, _THR, float(self.env.now))
            w.ep.throttled += 1

    def _load_on_gpu(self, w: _Worker) -> None:
        gpu_stage_s = w.stages.model_load_s + w.stages.flash_resume_s
        self._after(gpu_stage_s, self._on_ready, w)

    def _on_ready(self, ev: Any) -> None:
        w: _Worker = ev._value
        if not w.alive:
            return
        now = float(self.env.now)
        ep = w.ep
        w.ready_s = now
        self._set_state(w, _IDLE, now)
        w.idle_since_s = now
        # Jobs that waited for this worker's start are its cold starts.
        while ep.queue and w.in_flight < w.capacity:
            self._dispatch(ep, w, ep.queue.popleft(), now, True)
        if w.in_flight < w.capacity:
            self._push_free(ep, w)
        if w.in_flight == 0:
            self._expiry_wake(ep, now)

    def _retire(self, ep: _Ep, w: _Worker, now: float) -> None:
        if w.in_flight:
            return  # guardrails never stop a busy worker; a stale action must not either
        del ep.workers[w.wid]
        w.alive = False
        if w.state == _THR:
            ep.throttled -= 1
        was_ready = w.ready_s is not None
        self._set_state(w, w.state, now)  # close the open interval
        w.since_s = now
        spec = ep.spec
        if w.has_gpu:
            w.has_gpu = False
            w.host.release(spec.gpu_type, spec.gpus_needed)
            self._wake_throttled(w.host, spec.gpu_type)
        if was_ready and spec.scaling.flash_boot and ep.profile.flash_retention_s > 0:
            expires_s = now + ep.profile.flash_retention_s
            ep.retained.append((w.host, expires_s, len(self._park_worker)))
            self._park_worker.append(w.idx)
            self._park_start.append(now)
            self._park_end.append(expires_s)
        self._retired_at[w.idx] = now
        if w.active:
            ep.active_alive -= 1
            w.active = False
            # Active capacity is reserved, not tied to one container: the oldest flex worker
            # takes over the discounted always-on billing.
            flex = [x for x in ep.workers.values() if not x.active]
            if flex:
                heir = min(flex, key=lambda x: x.idx)
                self._set_state(heir, heir.state, now)
                heir.active = True
                ep.active_alive += 1

    def _wake_throttled(self, host: HostState, gpu_type: str | None) -> None:
        waiting = host.waiting(gpu_type)
        now = float(self.env.now)
        while waiting:
            w = waiting[0]
            if not w.alive:
                waiting.popleft()
                continue
            if not host.try_acquire(gpu_type, w.ep.spec.gpus_needed):
                return
            waiting.popleft()
            w.has_gpu = True
            if w.state == _THR:
                w.ep.throttled -= 1
                self._set_state(w, _INIT, now)
                self._load_on_gpu(w)
            # else: still pulling or starting its container; it loads once that is done.

    # -- end of run ------------------------------------------------------------------------

    def _close(self, end_s: float) -> None:
        for w in self._all_workers:
            if w.alive:
                self._set_state(w, w.state, end_s)
        status, end = self._status, self._end
        for j in range(self._n_jobs):
            code = status[j]
            if code == _QUEUED or code == _TAKEN:
                # Still queued or running when the drain limit ran out.
                status[j] = _JOB_CODE[transition(JOB_STATUS_CODES[code], JobStatus.CANCELLED)]
                end[j] = end_s

    def _records(self) -> RawRecords:
        workers = [
            {
                "worker_id": w.wid,
                "worker": w.idx,
                "endpoint": w.ep.eid,
                "host": w.host.name,
                "gpu_type": w.ep.spec.gpu_type,
                "gpus": w.ep.spec.gpus_needed,
                "created_s": w.created_s,
                "ready_s": math.nan if w.ready_s is None else w.ready_s,
                "retired_s": self._retired_at.get(w.idx, math.nan),  # NaN: alive at the end
                "flash_resumed": w.stages.flash_resume_s > 0,
                "image_pull_s": w.stages.image_pull_s,
                "container_start_s": w.stages.container_start_s,
                "runtime_init_s": w.stages.runtime_init_s,
                "model_load_s": w.stages.model_load_s,
                "flash_resume_s": w.stages.flash_resume_s,
                "platform_start_s": w.stages.platform_start_s,
            }
            for w in self._all_workers
        ]
        return RawRecords(
            endpoint_ids=[ep.eid for ep in self._eps],
            job_endpoint=self._job_ep_np,
            job_arrival_s=self._arrival_np,
            job_start_s=self._start,
            job_end_s=self._end,
            job_worker=self._worker_of,
            job_cold=self._cold,
            job_status=self._status,
            iv_worker=self._iv_worker,
            iv_state=self._iv_state,
            iv_start_s=self._iv_start,
            iv_end_s=self._iv_end,
            iv_active=self._iv_active,
            workers=workers,
            end_s=self._end_s,
            config=self.config,
            controller_calls=self.controller_calls,
            park_worker=self._park_worker,
            park_start_s=self._park_start,
            park_end_s=[min(e, self._end_s) for e in self._park_end],
        )
