"""The simpy engine: simulated workers, queue and clock behind the same Controller that runs live.

Design for speed (the hot path is one arrival and one completion per job):
- arrivals are drawn up front as one sorted array per endpoint, merged, and replayed by a
  chain of events carrying plain callbacks (no generator process per job); events go straight
  into simpy's queue in its own order (time, priority, sequence), as two-slot objects rather
  than Timeouts, and the engine steps them itself;
- service times come from per-endpoint buffers filled by numpy in blocks;
- records are appended to flat lists/arrays and become DataFrames only at the end;
- the Controller is consulted through the Backend/JobQueue/Clock seams exactly as live, when
  gpuserve.schedule says it must: on arrivals that need it, at the policy's tick interval,
  at the wake it asks for and at an idle worker's keep-alive expiry (a wake that finds its
  worker busy again moves to the next expiry without a pass, where the policy promises that
  is the same);
- job statuses are gpuserve.core.jobs.JobStatus as small ints, each move checked once
  against the job state machine.

Beyond the hot path, and costing it nothing when unused: per-job options (gpuserve.sim.
joboptions), worker crashes, host failures and rolling updates (gpuserve.sim.failures), the
two dispatch models (`EndpointSpec.dispatch`) and the account-wide worker limit.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import simpy
from simpy.core import StopSimulation

from gpuserve.controller import Controller
from gpuserve.core.backoff import CRASH_BACKOFF
from gpuserve.core.crashslots import CrashSlots
from gpuserve.core.errors import ConfigError
from gpuserve.core.jobs import JobStatus, transition
from gpuserve.core.types import Dispatch, EndpointSpec, QueueStats, ScaleAction, WorkerState, WorkerView
from gpuserve.schedule import ConsultPlan, idle_expiry_wake_s, idle_wake_without_pass, must_consult_on_arrival
from gpuserve.sim.billing import BillingModel
from gpuserve.sim.coldstart import ColdStartProfile, StageTimes
from gpuserve.sim.failures import FailureModel, HostFailure, Update
from gpuserve.sim.hosts import HostSpec, HostState
from gpuserve.sim.joboptions import JobOptions
from gpuserve.sim.loadbalancer import LoadBalancer
from gpuserve.sim.service import ServiceTime, batching_slowdowns, demand_service_s
from gpuserve.sim.workload import Workload, draw_jobs

__all__ = [
    "END_REASONS",
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
_INIT, _IDLE, _RUN, _THR, _OUT, _UNH = (_CODE[s] for s in STATE_CODES)

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
_REJECTED = _move(JobStatus.IN_QUEUE, JobStatus.FAILED)  # a load-balancing endpoint's held request past its hold timeout
# Off the hot path: a lost worker's job goes back to the queue or, past max_retries, FAILED;
# a client or the ttl ends a queued or running job (CANCELLED).
_REQUEUED = _move(JobStatus.IN_PROGRESS, JobStatus.IN_QUEUE)
_FAILED = _move(JobStatus.IN_PROGRESS, JobStatus.FAILED)
_CANCELLED_QUEUED = _move(JobStatus.IN_QUEUE, JobStatus.CANCELLED)
_CANCELLED_RUNNING = _move(JobStatus.IN_PROGRESS, JobStatus.CANCELLED)

# Why a job ended, beside its status (codes in the records' `end_reason` column): 0 is the
# normal end of its status (COMPLETED, or TIMED_OUT at its execution timeout).
END_REASONS: tuple[str, ...] = ("normal", "ttl_expired", "client_cancel", "retries_exhausted", "drain_limit")
_R_TTL, _R_CANCEL, _R_RETRIES, _R_DRAIN = 1, 2, 3, 4

_SERVICE_BLOCK = 8192
_ARRIVAL_BLOCK = 65536

# simpy's NORMAL priority: the engine's events go into simpy's queue as its Timeouts would,
# (time, priority, sequence number, event), so they run in the same order.
_NORMAL = 1


class _Event:
    """A scheduled callback: what simpy's step reads of an event (its callbacks, `_ok`, its value)
    and nothing else. Two are made per job, so a Timeout's checks and bookkeeping cost per job."""

    __slots__ = ("_value", "callbacks")
    _ok = True

    def __init__(self, callback: Callable[[Any], None], value: Any) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = [callback]
        self._value = value

    @property
    def value(self) -> Any:
        return self._value


@dataclass(frozen=True)
class SimEndpoint:
    """One simulated endpoint: the same EndpointSpec the live system uses, plus its models."""

    spec: EndpointSpec
    workload: Workload
    service: ServiceTime
    cold_start: ColdStartProfile = field(default_factory=ColdStartProfile)
    failures: FailureModel = field(default_factory=FailureModel)
    jobs: JobOptions = field(default_factory=JobOptions)


@dataclass(frozen=True)
class SimConfig:
    endpoints: tuple[SimEndpoint, ...]
    hosts: tuple[HostSpec, ...] = ()  # empty: one host with unlimited GPUs of every type
    billing: BillingModel = field(default_factory=BillingModel)
    duration_s: float = 3600.0  # arrivals stop here; the run goes on until the last job ends
    seed: int = 0
    consult_on_arrival: Literal["auto", "always"] = "auto"
    drain_limit_s: float = 3600.0  # after duration_s, jobs still unfinished this much later are CANCELLED
    # Workers across all endpoints (Runpod: 5 by default, up to 60 with the account's balance);
    # None: no account limit.
    account_max_workers: int | None = None
    max_retries: int = 3  # requeues of a job whose worker was lost before it ends FAILED (live's default)
    host_failures: tuple[HostFailure, ...] = ()
    updates: tuple[Update, ...] = ()

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
        if self.account_max_workers is not None and (
            not isinstance(self.account_max_workers, int) or self.account_max_workers < 0
        ):
            raise ConfigError("account_max_workers", self.account_max_workers, "must be a non-negative integer")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError("max_retries", self.max_retries, "must be a non-negative integer")
        known_hosts = set(names) if self.hosts else {"unlimited"}
        for i, hf in enumerate(self.host_failures):
            if hf.host not in known_hosts:
                raise ConfigError(f"host_failures[{i}].host", hf.host, f"is not a host (known: {', '.join(sorted(known_hosts))})")
        for i, up in enumerate(self.updates):
            if up.endpoint not in ids:
                raise ConfigError(f"updates[{i}].endpoint", up.endpoint, "is not an endpoint of the scenario")
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
        "backoff_s",
        "bound",
        "capacity",
        "crash_cause",
        "crash_streak",
        "created_s",
        "doomed",
        "ep",
        "has_gpu",
        "host",
        "idle_since_s",
        "idx",
        "in_flight",
        "in_heap",
        "jobs",
        "last_used_s",
        "outdated",
        "ready_s",
        "run_budget_s",
        "run_s",
        "run_since_s",
        "run_token",
        "since_s",
        "slot_streak",
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
        self.capacity = ep.worker_capacity
        self.in_flight = 0
        self.idle_since_s: float | None = None
        self.alive = True
        self.in_heap = False
        self.has_gpu = False
        self.active = active
        self.ready_s: float | None = None
        self.last_used_s = now_s  # when it was last given a job (load-balancing routing's tie-break)
        self.stages = StageTimes()
        self.jobs: set[int] = set()  # the jobs it runs (requeued if it crashes)
        self.bound: list[int] = []  # bind_to_launch: the jobs that launched it, waiting for its start
        self.backoff_s = 0.0  # its start waited this long for its slot's crash back-off
        self.slot_streak = 0  # crashes in a row of the slot it fills (core/crashslots.py, as live)
        self.doomed = False  # its start will crash (FailureModel.crash_per_start)
        self.crash_streak = 0  # its slot's crashes in a row when this one crashed (0: never crashed)
        self.outdated = False
        self.run_s = 0.0  # RUNNING seconds so far (for crashes per running hour)
        self.run_budget_s = math.inf  # RUNNING seconds until it crashes
        self.run_token = 0  # invalidates a pending crash when the worker leaves RUNNING
        self.run_since_s = 0.0
        self.crash_cause = ""  # start, running, trace or host once it crashed


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
        self.idle_after_s = plan.idle_timeout_s  # keep_alive_s, or the idle timeout when that is None
        # Flash-boot snapshots: (host, expires_s, index of its parked span in the records).
        self.retained: list[tuple[HostState, float, int]] = []
        self.active_alive = 0
        need, gpu_type = sim_ep.spec.gpus_needed, sim_ep.spec.gpu_type
        # Only hosts that could ever fit one worker (SimConfig checks at least one does).
        self.hosts = [h for h in hosts if h.spec.unlimited or not need or h.spec.gpus.get(gpu_type or "", 0) >= need]
        self.plan = plan  # when the controller must be consulted (gpuserve.schedule)
        self.throttled = 0  # workers now THROTTLED
        self.cold_rng: np.random.Generator | None = None  # set by Simulation: the cold-start stream
        self._rng = rng
        self._service = sim_ep.service
        # Calibrated platform overheads (0 by default): a job starts dispatch_s after a worker is
        # free for it and holds the worker result_post_s beyond its service time.
        self.dispatch_s = sim_ep.cold_start.dispatch_s
        self.job_overhead_s = sim_ep.cold_start.dispatch_s + sim_ep.cold_start.result_post_s
        self.execution_timeout_s = sim_ep.spec.execution_timeout_s
        self.worker_capacity = sim_ep.spec.concurrency_per_worker
        # A load-balancing endpoint: its own routing, hold timeout, cap and request timeout.
        lb_spec = sim_ep.spec.load_balancing
        self.lb = None if lb_spec is None else LoadBalancer(lb_spec, (_IDLE, _RUN))
        if lb_spec is not None:
            self.worker_capacity = lb_spec.max_concurrency
            self.execution_timeout_s = lb_spec.request_timeout_s
        self._buffer: list[float] = []
        self._pos = 0
        # Traced requests bring their own service times (indexed by job); a batching curve
        # divides a job's time by the speed at its worker's concurrency when it starts.
        self.job_service_s: list[float] | None = None
        self.slowdown = batching_slowdowns(sim_ep.service, self.worker_capacity)
        self.bind = sim_ep.spec.dispatch is Dispatch.BIND_TO_LAUNCH
        self.bound_count = 0  # jobs bound to a starting worker (still IN_QUEUE, not in `queue`)
        self.low_queued = 0  # lowPriority jobs waiting (in `queue` or bound)
        self.failures = sim_ep.failures
        self.crash_rate_per_s = sim_ep.failures.crash_per_running_hour / 3600.0
        self.crash_slots = CrashSlots()  # slots crashed workers left empty, each with its back-off
        self.outdated: set[_Worker] = set()  # OUTDATED workers finishing their jobs

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
    # The engine's are typed arrays; a live replay's, lists; merged shards', numpy arrays.
    job_start_s: Sequence[float] | np.ndarray
    job_end_s: Sequence[float] | np.ndarray
    job_worker: Sequence[int] | np.ndarray
    job_cold: Sequence[int] | np.ndarray  # 0 or 1 (bools from a live replay)
    job_status: Sequence[int] | np.ndarray
    iv_worker: Sequence[int] | np.ndarray
    iv_state: Sequence[int] | np.ndarray
    iv_start_s: Sequence[float] | np.ndarray
    iv_end_s: Sequence[float] | np.ndarray
    iv_active: Sequence[int] | np.ndarray
    workers: list[dict[str, Any]]
    end_s: float
    config: SimConfig
    controller_calls: int = 0
    # Spans a stopped worker's flash-boot snapshot was kept (billed only by some presets):
    # the worker's index, from its stop until it is resumed, expires or the run ends.
    park_worker: list[int] = field(default_factory=list)
    park_start_s: list[float] = field(default_factory=list)
    park_end_s: list[float] = field(default_factory=list)
    # Load-balancing endpoints: the requests that found no worker with room (held), and
    # those of them refused at the hold timeout (their status is FAILED).
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    job_retries: Sequence[int] | np.ndarray = field(default_factory=list)  # requeues after lost workers
    job_reason: Sequence[int] | np.ndarray = field(default_factory=list)  # codes into END_REASONS
    job_low_priority: np.ndarray | None = None
    job_runsync_wait_s: np.ndarray | None = None  # NaN: an async (/run) client


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
                # Slots the Controller sees: concurrency_per_worker, which on a load-balancing
                # endpoint is its concurrency target (routing may fill up to max_concurrency).
                capacity=ep.spec.concurrency_per_worker,
                idle_since_s=w.idle_since_s if w.state == _IDLE else None,
            )
            for w in ep.workers.values()
        ]

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        self._sim._apply(endpoint.endpoint_id, action, now_s)

    def image_cached(self, endpoint_id: str) -> bool:
        """A host that could run the endpoint holds its image now (Runpod's condition for extra workers)."""
        sim = self._sim
        ep = sim._by_id[endpoint_id]
        now = float(sim.env.now)
        image = ep.profile.image
        return any(h.images.get(image, math.inf) <= now for h in (ep.hosts or sim.hosts) if h not in sim._down_hosts)


class SimQueue:
    """The JobQueue seam over the in-memory FIFO queues."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        sim = self._sim
        ep = sim._by_id[endpoint_id]
        arrival = sim._arrival_np
        first = float(arrival[ep.queue[0]]) if ep.queue else math.inf
        if ep.bound_count:  # bound jobs wait too (IN_QUEUE), for their own worker
            first = min([first] + [float(arrival[j]) for w in ep.workers.values() for j in w.bound])
        oldest = now_s - first if first < math.inf else 0.0
        waiting = len(ep.queue) + ep.bound_count
        return QueueStats(
            in_queue=waiting,
            in_progress=ep.in_progress,
            oldest_queued_age_s=max(0.0, oldest),
            submitted_total=ep.submitted,
            last_arrival_s=ep.last_arrival_s,
            in_queue_scaling=waiting - ep.low_queued if ep.low_queued else None,
        )


class Simulation:
    """One run of a SimConfig. `run()` returns RawRecords; gpuserve.sim.records makes DataFrames.

    `endpoints` (positions in config.endpoints, increasing) runs only those endpoints, each
    with the random streams it has in the whole run: one shard of a run whose endpoints share
    nothing (gpuserve.sim.shards runs the shards in parallel and merges their records)."""

    def __init__(self, config: SimConfig, endpoints: Sequence[int] | None = None) -> None:
        self.config = config
        n_eps = len(config.endpoints)
        self._shard: list[int] = list(range(n_eps)) if endpoints is None else [int(i) for i in endpoints]
        if any(b <= a for a, b in itertools.pairwise(self._shard)) or any(not 0 <= i < n_eps for i in self._shard):
            raise ConfigError("endpoints", list(endpoints or []), f"must be increasing positions in the scenario's {n_eps} endpoints")
        chosen = [config.endpoints[i] for i in self._shard]
        self.env = simpy.Environment()
        # simpy's own queue and sequence numbers: the engine schedules into them directly.
        self._queue: list[Any] = self.env._queue
        self._eid: Iterator[int] = self.env._eid
        host_specs = config.hosts or (HostSpec("unlimited", unlimited=True),)
        self.hosts = [HostState(h) for h in host_specs]
        self.clock = SimClock(self.env)
        self.backend = SimBackend(self)
        self.queue = SimQueue(self)
        self._counted = 0  # counted workers across endpoints (the account limit's usage)
        self.controller = Controller(
            [e.spec for e in chosen],
            self.backend,
            self.queue,
            self.clock,
            account_max_workers=config.account_max_workers,
            account_usage=lambda: self._counted,
        )
        self.controller_calls = 0
        always = config.consult_on_arrival == "always"
        self._eps: list[_Ep] = []
        arrivals: list[np.ndarray] = []
        traced: list[np.ndarray | None] = []
        self._fail_rng: list[np.random.Generator] = []
        for i, (g, sim_ep) in enumerate(zip(self._shard, chosen, strict=True)):
            # Separate, stable streams per endpoint: arrivals (0) and service times (1). Adding
            # an endpoint or changing a service model never shifts another stream. A stream is
            # keyed by the endpoint's position `g` in the scenario, so a shard draws the same.
            arr_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(g, 0)))
            svc_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(g, 1)))
            plan = self.controller.consult_plan(sim_ep.spec.endpoint_id)
            self._eps.append(_Ep(i, sim_ep, svc_rng, self.hosts, plan.consulting_every_arrival() if always else plan))
            # Cold-start draws (stage distributions) have their own stream (2), so they shift nothing else.
            self._eps[-1].cold_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(g, 2)))
            times, demand = draw_jobs(sim_ep.workload, arr_rng, config.duration_s)
            arrivals.append(times)
            traced.append(demand_service_s(sim_ep.service, demand) if demand else None)
            # Crash draws (3) and job options (2) have streams of their own too.
            self._fail_rng.append(np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(g, 3))))
        self._by_id = {ep.eid: ep for ep in self._eps}
        all_t = np.concatenate(arrivals) if arrivals else np.empty(0)
        all_ep = np.concatenate([np.full(a.size, i, dtype=np.int32) for i, a in enumerate(arrivals)])
        order = np.argsort(all_t, kind="stable")
        self._arrival_np = all_t[order]
        local_ep = all_ep[order]
        # Each job's endpoint as a reference (8 bytes a job; a list of ints past 256 endpoints
        # would hold an int object per job too).
        eps_obj = np.empty(len(self._eps), dtype=object)
        eps_obj[:] = self._eps
        self._job_ep: list[_Ep] = eps_obj[local_ep].tolist()
        # The records name endpoints by their position in the scenario (a shard's too).
        self._job_ep_np = local_ep if endpoints is None else np.asarray(self._shard, dtype=np.int32)[local_ep]
        # The arrival chain reads the times in order, as floats made a block at a time (a list
        # of 10 million would hold 320 MB of float objects).
        self._arrivals: Iterator[float] = itertools.chain.from_iterable(
            map(np.ndarray.tolist, np.split(self._arrival_np, range(_ARRIVAL_BLOCK, self._arrival_np.size, _ARRIVAL_BLOCK)))
        )
        if any(t is not None for t in traced):
            per_job = np.concatenate([np.full(a.size, np.nan) if t is None else t for a, t in zip(arrivals, traced, strict=True)])
            job_service_s: list[float] = per_job[order].tolist()
            for ep, t in zip(self._eps, traced, strict=True):
                ep.job_service_s = None if t is None else job_service_s
        n = int(self._arrival_np.size)
        self._n_jobs = n
        # Per-job columns as typed arrays: 8 bytes a job (1 for a flag or a status) where a list
        # of floats costs 32, which decides whether a 10-million-invocation trace fits in memory.
        self._start: array[float] = array("d", [math.nan]) * n
        self._end: array[float] = array("d", [math.nan]) * n
        self._worker_of: array[int] = array("l", [-1]) * n
        self._cold: array[int] = array("b", [0]) * n
        self._status: array[int] = array("b", [_QUEUED]) * n
        self._retries: array[int] = array("i", [0]) * n
        self._reason: array[int] = array("b", [0]) * n
        self._draw_job_options(arrivals, order)
        self._down_hosts: set[HostState] = set()
        self._blocked: set[_Ep] = set()  # endpoints whose starts the account limit refused
        self._unhealthy: set[_Worker] = set()  # crashed workers whose UNHEALTHY span is open
        self._unblock_armed = False
        self._next_job = 0
        self._remaining = n
        self._horizon_passed = False
        self._finished = False
        self._started = False
        self._end_s = config.duration_s
        # What ended the run: its last job ("job"), or the horizon or drain-limit events that
        # start() schedules (whose place among same-instant events every shard shares).
        self.stopped_by = "job"
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

    def _draw_job_options(self, arrivals: list[np.ndarray], order: np.ndarray) -> None:
        """Per-job options (gpuserve.sim.joboptions), as lists in arrival order; None where no endpoint sets one."""
        cfg = self.config
        chosen = [cfg.endpoints[g] for g in self._shard]
        draws = [
            ep.jobs.draw(np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(g, 2))), arrivals[i])
            if ep.jobs.enabled
            else None
            for i, (g, ep) in enumerate(zip(self._shard, chosen, strict=True))
        ]

        def merged(name: str, fill: float | bool, dtype: Any) -> np.ndarray | None:
            if not any(d is not None and getattr(d, name) is not None for d in draws):
                return None
            parts = []
            for d, a in zip(draws, arrivals, strict=True):
                part = getattr(d, name) if d is not None else None
                parts.append(np.full(a.size, fill, dtype=dtype) if part is None else np.asarray(part, dtype=dtype))
            return np.concatenate(parts)[order] if parts else np.zeros(0, dtype=dtype)

        timeout = merged("execution_timeout_s", np.nan, float)
        self._exec_to: list[float] | None = timeout.tolist() if timeout is not None else None
        low = merged("low_priority", False, bool)
        self._low_np = low
        self._low: list[bool] | None = low.tolist() if low is not None else None
        self._expires_np = merged("expires_s", np.inf, float)
        self._cancel_np = merged("cancel_at_s", np.inf, float)
        runsync = merged("runsync", False, bool)
        self._runsync_wait_np: np.ndarray | None = None
        if runsync is not None:
            wait = np.concatenate(
                [np.full(a.size, ep.jobs.runsync_wait_s) for ep, a in zip(chosen, arrivals, strict=True)]
            )[order] if arrivals else np.zeros(0)
            self._runsync_wait_np = np.where(runsync, wait, np.nan)

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
        self.initial_workers = len(self._all_workers)  # started before any event, in endpoint order
        if self._n_jobs:
            self._after(next(self._arrivals), self._on_arrival)
        self._schedule_platform_events()
        self._after(self.config.duration_s, self._on_horizon)
        self._after(self.config.duration_s + self.config.drain_limit_s, self._on_deadline)

    def run(self, progress: Callable[[float, float], None] | None = None, chunks: int = 100) -> RawRecords:
        """Run to the end: arrivals stop at duration_s; the run ends when the last job ends."""
        self.run_to_end(progress, chunks)
        return self.finish()

    def run_to_end(self, progress: Callable[[float, float], None] | None = None, chunks: int = 100) -> float:
        """The run up to its own end (the last job's end, or the drain limit); returns that time."""
        env = self.env
        self.start()
        horizon = self.config.duration_s + self.config.drain_limit_s
        step_s = horizon / max(1, chunks) if progress else horizon + 1.0
        t = 0.0
        while not self._finished:
            t = t + step_s
            self._run_until(t)
            if progress:
                progress(min(float(env.now), horizon), horizon)
        return self._end_s

    def finish(self, end_s: float | None = None) -> RawRecords:
        """Close the run at `end_s` (default: its own end) and return its records.

        A shard ends where the whole run ends, which may be after its own last job: its
        events before `end_s` (keep-alive expiries, ticks) happen first, as they would have
        in the whole run. `at_end_events` then counts the events left due at exactly `end_s`,
        whose order against the other shards' last event no single process can tell."""
        self.at_end_events = 0
        if end_s is not None and end_s > self._end_s:
            self._finished = False
            queue = self._queue
            self._run_until(end_s)  # no job is left, so no event here can stop the run
            self._end_s = end_s
            deadline = self._on_deadline
            self.at_end_events = sum(
                1 for t, _prio, _eid, ev in queue if t <= end_s and deadline not in (ev.callbacks or ())
            )
        self._close(self._end_s)
        return self._records()

    def _schedule_platform_events(self) -> None:
        """Crash traces, host failures, updates, ttl expiries and client cancels, each at its time."""
        cfg = self.config
        last_s = cfg.duration_s + cfg.drain_limit_s
        for ep in self._eps:
            for t in ep.failures.crash_times_s:
                if t <= last_s:
                    self._after(t, self._on_traced_crash, ep)
        by_name = {h.name: h for h in self.hosts}
        for hf in cfg.host_failures:
            if hf.at_s <= last_s:
                self._after(hf.at_s, self._on_host_failure, (by_name[hf.host], hf.down_s))
        for up in cfg.updates:
            if up.at_s <= last_s and up.endpoint in self._by_id:
                self._after(up.at_s, self._on_update, self._by_id[up.endpoint])
        for times, reason in ((self._expires_np, _R_TTL), (self._cancel_np, _R_CANCEL)):
            if times is None:
                continue
            for j in np.flatnonzero(times <= last_s).tolist():
                self._after(float(times[j]), self._on_abandon, (j, reason))

    def _after(self, delay_s: float, fn: Callable[[Any], None], value: Any = None) -> None:
        heapq.heappush(self._queue, (self.env._now + max(0.0, delay_s), _NORMAL, next(self._eid), _Event(fn, value)))

    def _run_until(self, until_s: float) -> None:
        """simpy's `env.run(until=...)`, inlined: the events due before `until_s`, in simpy's order."""
        env = self.env
        queue = self._queue
        pop = heapq.heappop
        try:
            while queue and queue[0][0] < until_s:
                env._now, _prio, _eid, ev = pop(queue)
                callbacks, ev.callbacks = ev.callbacks, None
                for callback in callbacks:
                    callback(ev)
        except StopSimulation:
            return
        env._now = max(env._now, until_s)

    def _stop(self) -> None:
        self._finished = True
        self._end_s = float(self.env.now)
        raise StopSimulation(None)

    def _on_horizon(self, _ev: Any) -> None:
        self._horizon_passed = True
        if self._remaining == 0:
            self.stopped_by = "horizon"
            self._stop()

    def _on_deadline(self, _ev: Any) -> None:
        self.stopped_by = "deadline"
        self._stop()

    # -- arrivals and completions (the hot path) -------------------------------------------

    def _on_arrival(self, _ev: Any) -> None:
        j = self._next_job
        self._next_job = j + 1
        now = self.env._now
        ep = self._job_ep[j]
        ep.submitted += 1
        ep.last_arrival_s = now
        if j + 1 < self._n_jobs:
            # self._after, inlined: one arrival event per job.
            nxt = next(self._arrivals)
            heapq.heappush(self._queue, (now + (nxt - now if nxt > now else 0.0), _NORMAL, next(self._eid), _Event(self._arrival_cb, None)))
        if ep.lb is not None:
            self._lb_arrival(ep, ep.lb, j, now)
            return
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
        if self._low is not None and self._low[j]:
            ep.low_queued += 1
            return  # Runpod: a lowPriority job never triggers scale-up; the next pass sees it
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
        w.last_used_s = now
        w.jobs.add(j)
        ep.in_progress += 1
        if w.state != _RUN:
            self._set_state(w, _RUN, now)
            w.idle_since_s = None
            if ep.crash_rate_per_s:
                self._arm_running_crash(w, now)
        if w.in_flight < w.capacity:
            self._push_free(ep, w)
        self._status[j] = _TAKEN
        if ep.lb is None:
            d = ep.next_service_s() if ep.job_service_s is None else ep.job_service_s[j]
        else:
            d = ep.lb.service_s.pop(j)  # drawn on arrival
        if ep.slowdown is not None:
            d *= ep.slowdown[w.in_flight - 1]
        timeout = ep.execution_timeout_s
        if self._exec_to is not None:
            own = self._exec_to[j]
            if own == own:  # not NaN: the job's own policy.executionTimeout
                timeout = own
        if d > timeout:
            d = timeout
            outcome = _TIMED_OUT
        else:
            outcome = _COMPLETED
        heapq.heappush(self._queue, (now + (d + ep.job_overhead_s), _NORMAL, next(self._eid), _Event(self._done_cb, (w, j, outcome))))

    def _on_done(self, ev: Any) -> None:
        w, j, outcome = ev._value
        if self._status[j] != _TAKEN or self._worker_of[j] != w.idx:
            return  # the job already ended (cancel, ttl) or left with its crashed worker
        now = self.env._now
        self._end[j] = now
        self._status[j] = outcome
        self._remaining -= 1
        w.jobs.discard(j)
        ep = w.ep
        ep.in_progress -= 1
        w.in_flight -= 1
        if w.outdated:
            self._outdated_job_ended(w, now)
        elif ep.queue:
            nxt = ep.queue.popleft()
            if ep.low_queued:
                self._left_wait(ep, nxt)
            self._dispatch(ep, w, nxt, now, False)
        elif w.in_flight == 0:
            self._set_state(w, _IDLE, now)
            w.idle_since_s = now
            self._push_free(ep, w)
            # _expiry_wake, inlined: nearly every job ends with its worker going idle. A wake
            # pending before now + keep-alive is before this worker's expiry (due_time_s never
            # lands early), so the common case needs no call.
            pending = ep.pending_wake_s
            if pending is None or pending >= now + ep.idle_after_s:
                wake = idle_expiry_wake_s(ep.plan, now, len(ep.workers), ep.keep_alive_s)
                if wake is not None and (pending is None or wake < pending):
                    self._arm_wake(ep, wake, now)
            if ep.crash_rate_per_s:
                self._leave_running(w, now)
        else:
            self._push_free(ep, w)
        if self._remaining == 0 and self._horizon_passed:
            self._stop()

    # -- load-balancing endpoints (the model: gpuserve.sim.loadbalancer) ------------------

    def _lb_arrival(self, ep: _Ep, lb: LoadBalancer, j: int, now: float) -> None:
        """Route to the fewest-in-flight worker with room, else hold (FIFO) until the hold timeout."""
        # Each request's service time is drawn on arrival, served or not, so the k-th request
        # of an endpoint has its k-th sample whatever is rejected (a replay sends the same ones).
        lb.service_s[j] = ep.next_service_s() if ep.job_service_s is None else ep.job_service_s[j]
        w = None if ep.queue else lb.route(ep.workers.values())
        if w is not None:
            self._dispatch(ep, w, j, now, False)
        else:
            lb.held.append(j)
            if lb.hold_timeout_s > 0:
                ep.queue.append(j)  # held: a freed slot or a ready worker takes it (_on_done, _on_ready)
                self._after(lb.hold_timeout_s, self._on_hold_timeout, (ep, lb, j))
            else:
                self._reject(lb, j, now)
        if must_consult_on_arrival(ep.plan, w is not None, len(ep.workers), ep.throttled):
            self._consult(ep, now)

    def _on_hold_timeout(self, ev: Any) -> None:
        ep, lb, j = ev._value
        if self._status[j] != _QUEUED:
            return  # a worker took it in time
        if ep.queue[0] == j:
            ep.queue.popleft()  # one hold timeout per endpoint: the oldest held request expires first
        else:
            ep.queue.remove(j)
        self._reject(lb, j, self.env._now)
        if self._remaining == 0 and self._horizon_passed:
            self._stop()

    def _reject(self, lb: LoadBalancer, j: int, now: float) -> None:
        self._status[j] = _REJECTED
        self._end[j] = now
        self._remaining -= 1
        lb.rejected.append(j)
        del lb.service_s[j]
    def _left_wait(self, ep: _Ep, j: int) -> None:
        """Job `j` stopped waiting (taken, cancelled, expired): keep the lowPriority count right."""
        if self._low is not None and self._low[j]:
            ep.low_queued -= 1

    def _free_slot(self, w: _Worker, now: float) -> None:
        """A job left worker `w` off the hot path (cancel, ttl): what `_on_done` does after a job."""
        ep = w.ep
        if w.outdated:
            self._outdated_job_ended(w, now)
            return
        if not w.alive:
            return
        if ep.queue:
            nxt = ep.queue.popleft()
            self._left_wait(ep, nxt)
            self._dispatch(ep, w, nxt, now, False)
        elif w.in_flight == 0:
            self._set_state(w, _IDLE, now)
            w.idle_since_s = now
            self._push_free(ep, w)
            self._expiry_wake(ep, now)
            if ep.crash_rate_per_s:
                self._leave_running(w, now)
        else:
            self._push_free(ep, w)

    def _job_over(self) -> None:
        self._remaining -= 1
        if self._remaining == 0 and self._horizon_passed:
            # Stopping now would cut the events scheduled at this instant; end just after it.
            self._after(0.0, lambda _ev: self._stop() if not self._finished else None)

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
        if step.account_blocked:
            self._blocked.add(ep)
        ep.keep_alive_s = step.decision.keep_alive_s
        ep.idle_after_s = ep.plan.idle_timeout_s if ep.keep_alive_s is None else ep.keep_alive_s
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
        now = self.env._now
        if ep.plan.skip_idle_wakes and not ep.queue and not ep.bound_count and not ep.throttled:
            oldest = min((w.idle_since_s for w in ep.workers.values() if w.state == _IDLE), default=None)
            skip, nxt = idle_wake_without_pass(ep.plan, now, len(ep.workers), oldest, ep.keep_alive_s)
            if skip:
                if nxt is not None and nxt > now:
                    self._arm_wake(ep, nxt, now)
                return
        self._consult(ep, now)

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
        self._counted += 1
        # A crashed worker's replacement waits its slot's back-off (the live process backend's
        # placeholder: INITIALIZING and counted, its process not yet spawned); other starts do not.
        slot = ep.crash_slots.claim(now)
        w.slot_streak = slot.streak
        wait_s = slot.wait_s(now)
        w.backoff_s = wait_s
        if ep.failures.crash_per_start:
            w.doomed = bool(self._fail_rng[ep.index].random() < ep.failures.crash_per_start)
        if ep.bind and ep.queue:
            # bind_to_launch: the oldest job waiting is the one this start is for.
            w.bound.append(ep.queue.popleft())
            ep.bound_count += 1
        # The GPU is reserved at placement, so workers started together spread over hosts.
        # With none free the worker still pulls and starts its container, then waits in the
        # host's FIFO for a GPU (THROTTLED once it is up).
        if host not in self._down_hosts and host.try_acquire(spec.gpu_type, spec.gpus_needed):
            w.has_gpu = True
        else:
            host.waiting(spec.gpu_type).append(w)
        # The host draws the stages (image cache, distributions) and runs those before the GPU,
        # sharing its link and CPU with the other starts on it (gpuserve.sim.hosts); a start
        # in crash back-off begins when the back-off ends.
        if wait_s > 0:
            self._after(wait_s, self._on_backoff_over, (w, flash_host is not None))
        else:
            host.begin_start(
                w, ep.profile, now, flash=flash_host is not None, rng=ep.cold_rng,
                after=self._after, now=self.clock.now_s, on_up=self._on_container_up,
            )

    def _on_backoff_over(self, ev: Any) -> None:
        w, flash = ev._value
        if w.alive:
            w.host.begin_start(
                w, w.ep.profile, float(self.env.now), flash=flash, rng=w.ep.cold_rng,
                after=self._after, now=self.clock.now_s, on_up=self._on_container_up,
            )

    def _place(self, ep: _Ep, now: float) -> HostState:
        """A host with a free GPU of the type (image cached first), else the shortest GPU wait."""
        spec = ep.spec
        need = spec.gpus_needed
        image = ep.profile.image
        hosts = ep.hosts or self.hosts
        if self._down_hosts:
            hosts = [h for h in hosts if h not in self._down_hosts] or hosts
        free = [h for h in hosts if h not in self._down_hosts and h.free_gpus(spec.gpu_type) >= need]
        if free:
            cached = [h for h in free if h.images.get(image, np.inf) <= now]
            return (cached or free)[0]
        return min(hosts, key=lambda h: len(h.waiting(spec.gpu_type)))

    def _take_retained(self, ep: _Ep, now: float) -> HostState | None:
        ep.retained = [r for r in ep.retained if r[1] > now]
        for i in range(len(ep.retained) - 1, -1, -1):
            host, _expires_s, park = ep.retained[i]
            if host not in self._down_hosts and host.free_gpus(ep.spec.gpu_type) >= ep.spec.gpus_needed:
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
        w.host.load_on_gpu(w, w.ep.profile, after=self._after, now=self.clock.now_s, on_ready=self._on_ready)

    def _on_ready(self, ev: Any) -> None:
        w: _Worker = ev._value
        if not w.alive:
            return
        now = float(self.env.now)
        ep = w.ep
        if w.doomed:
            self._crash(w, now, "start")
            return
        w.ready_s = now
        self._set_state(w, _IDLE, now)
        w.idle_since_s = now
        # Jobs that waited for this worker's start are its cold starts: first those bound to
        # it (bind_to_launch), then the shared queue's.
        if w.bound:
            bound, w.bound = w.bound, []
            ep.bound_count -= len(bound)
            for j in bound:
                self._left_wait(ep, j)
                self._dispatch(ep, w, j, now, True)
        while ep.queue and w.in_flight < w.capacity:
            j = ep.queue.popleft()
            self._left_wait(ep, j)
            self._dispatch(ep, w, j, now, True)
        if w.in_flight < w.capacity:
            self._push_free(ep, w)
        if w.in_flight == 0:
            self._expiry_wake(ep, now)

    def _unbind(self, ep: _Ep, w: _Worker) -> None:
        """A starting worker goes away: the jobs bound to it wait at the head of the queue again."""
        if w.bound:
            ep.bound_count -= len(w.bound)
            ep.queue.extendleft(reversed(w.bound))
            w.bound = []

    def _uncount(self) -> None:
        """A counted worker left: if the account limit refused starts, let the endpoints ask again."""
        self._counted -= 1
        if self._blocked and not self._unblock_armed:
            self._unblock_armed = True
            self._after(0.0, self._on_unblock)

    def _on_unblock(self, _ev: Any) -> None:
        self._unblock_armed = False
        blocked, self._blocked = self._blocked, set()
        now = float(self.env.now)
        for ep in sorted(blocked, key=lambda e: e.index):
            if ep.queue or ep.bound_count:
                self._consult(ep, now)

    def _retire(self, ep: _Ep, w: _Worker, now: float, park: bool = True) -> None:
        if w.in_flight:
            return  # guardrails never stop a busy worker; a stale action must not either
        del ep.workers[w.wid]
        w.alive = False
        self._unbind(ep, w)
        self._uncount()
        if w.state == _THR:
            ep.throttled -= 1
        was_ready = w.ready_s is not None
        if not was_ready:
            w.host.cancel_start(w)
        self._set_state(w, w.state, now)  # close the open interval
        w.since_s = now
        spec = ep.spec
        if w.has_gpu:
            w.has_gpu = False
            w.host.release(spec.gpu_type, spec.gpus_needed)
            self._wake_throttled(w.host, spec.gpu_type)
        if park and was_ready and spec.scaling.flash_boot and ep.profile.flash_retention_s > 0:
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
            if host in self._down_hosts or not host.try_acquire(gpu_type, w.ep.spec.gpus_needed):
                return
            waiting.popleft()
            w.has_gpu = True
            if w.state == _THR:
                w.ep.throttled -= 1
                self._set_state(w, _INIT, now)
                self._load_on_gpu(w)
            # else: still pulling or starting its container; it loads once that is done.

    # -- failures: crashes, host failures (gpuserve.sim.failures) ---------------------------

    def _arm_running_crash(self, w: _Worker, now: float) -> None:
        """The worker starts RUNNING: schedule its crash when its running budget runs out."""
        ep = w.ep
        if w.run_budget_s == math.inf:
            w.run_budget_s = float(self._fail_rng[ep.index].exponential(1.0 / ep.crash_rate_per_s))
        w.run_token += 1
        w.run_since_s = now
        self._after(max(0.0, w.run_budget_s - w.run_s), self._on_running_crash, (w, w.run_token))

    def _leave_running(self, w: _Worker, now: float) -> None:
        w.run_s += now - w.run_since_s
        w.run_token += 1

    def _on_running_crash(self, ev: Any) -> None:
        w, token = ev._value
        if w.alive and token == w.run_token:
            self._crash(w, float(self.env.now), "running")

    def _on_traced_crash(self, ev: Any) -> None:
        ep: _Ep = ev._value
        candidates = [w for w in ep.workers.values() if w.alive] + [w for w in ep.outdated if w.alive]
        if candidates:
            # A busy worker first (a crash that costs a job), the oldest among equals.
            w = min(candidates, key=lambda x: (x.in_flight == 0, x.idx))
            self._crash(w, float(self.env.now), "trace")

    def _crash(self, w: _Worker, now: float, cause: str, down_s: float = 0.0) -> None:
        """The worker dies: UNHEALTHY (not billed), its jobs requeued or FAILED, the next start backed off."""
        if not w.alive:
            return
        ep = w.ep
        spec = ep.spec
        w.alive = False
        w.crash_cause = cause
        if w.outdated:
            ep.outdated.discard(w)
        else:
            del ep.workers[w.wid]
            self._uncount()
            if w.active:
                ep.active_alive -= 1
                w.active = False
        if w.state == _THR:
            ep.throttled -= 1
        if w.ready_s is None:
            w.host.cancel_start(w)  # its share of the host's link or CPU goes back
        self._unbind(ep, w)
        if w.state == _RUN and ep.crash_rate_per_s:
            self._leave_running(w, now)
        self._set_state(w, _UNH, now)
        if w.has_gpu:
            w.has_gpu = False
            w.host.release(spec.gpu_type, spec.gpus_needed)
            self._wake_throttled(w.host, spec.gpu_type)
        first_wait_s = CRASH_BACKOFF.delay_s(1)
        if cause == "host":
            # Not the endpoint's fault: no streak, no back-off; gone while the host is down.
            until = now + max(down_s, first_wait_s)
        else:
            empty = ep.crash_slots.crashed(w.slot_streak, now - w.created_s, now)
            w.crash_streak = empty.streak
            until = max(empty.not_before_s, now + first_wait_s)
        # UNHEALTHY until its restart is due; the restart is the endpoint's next start.
        self._retired_at[w.idx] = until
        self._unhealthy.add(w)
        self._after(until - now, self._on_unhealthy_over, w)
        self._requeue_held(ep, w, now)
        self._feed(ep, now)
        self._consult(ep, now)

    def _requeue_held(self, ep: _Ep, w: _Worker, now: float) -> None:
        """A lost worker's jobs go back to the head of the queue, or FAILED past max_retries (as live)."""
        held = sorted(w.jobs)
        w.jobs.clear()
        w.in_flight = 0
        back: list[int] = []
        for j in held:
            ep.in_progress -= 1
            if self._retries[j] < self.config.max_retries:
                self._retries[j] += 1
                self._status[j] = _REQUEUED
                self._start[j] = math.nan
                self._cold[j] = False
                back.append(j)
                if self._low is not None and self._low[j]:
                    ep.low_queued += 1
            else:
                self._status[j] = _FAILED
                self._end[j] = now
                self._reason[j] = _R_RETRIES
                self._job_over()
        ep.queue.extendleft(reversed(back))

    def _feed(self, ep: _Ep, now: float) -> None:
        """Free workers take what waits in the queue (after a requeue or a host coming back)."""
        while ep.queue:
            w = self._pop_free(ep)
            if w is None:
                return
            j = ep.queue.popleft()
            self._left_wait(ep, j)
            self._dispatch(ep, w, j, now, False)

    def _on_unhealthy_over(self, ev: Any) -> None:
        w: _Worker = ev._value
        if w in self._unhealthy:
            self._unhealthy.discard(w)
            self._set_state(w, _UNH, float(self.env.now))

    def _on_host_failure(self, ev: Any) -> None:
        host, down_s = ev._value
        now = float(self.env.now)
        self._down_hosts.add(host)
        for ep in self._eps:
            kept = []
            for entry in ep.retained:
                if entry[0] is host:  # the snapshot died with the host
                    self._park_end[entry[2]] = min(self._park_end[entry[2]], now)
                else:
                    kept.append(entry)
            ep.retained = kept
            for w in [x for x in ep.workers.values() if x.host is host] + [x for x in ep.outdated if x.host is host]:
                self._crash(w, now, "host", down_s)
        self._after(down_s, self._on_host_up, host)

    def _on_host_up(self, ev: Any) -> None:
        host: HostState = ev._value
        self._down_hosts.discard(host)
        for gpu_type in list(host.waiters):
            self._wake_throttled(host, gpu_type or None)
        now = float(self.env.now)
        for ep in self._eps:
            if ep.queue or ep.bound_count:
                self._consult(ep, now)

    # -- rolling updates -------------------------------------------------------------------

    def _on_update(self, ev: Any) -> None:
        """A new version: idle and starting workers stop, busy ones turn OUTDATED; the policy replaces them."""
        ep: _Ep = ev._value
        now = float(self.env.now)
        for _host, expires_s, park in ep.retained:  # an old version's snapshot cannot be resumed
            self._park_end[park] = min(expires_s, now)
        ep.retained = []
        for w in list(ep.workers.values()):
            if w.in_flight == 0:
                self._retire(ep, w, now, park=False)
                continue
            del ep.workers[w.wid]
            self._uncount()
            if w.active:  # the replacement takes over the active slot; this one bills as active to its end
                ep.active_alive -= 1
            w.outdated = True
            ep.outdated.add(w)
            self._set_state(w, _OUT, now)
        self._consult(ep, now)

    def _outdated_job_ended(self, w: _Worker, now: float) -> None:
        if w.in_flight:
            return
        ep = w.ep
        spec = ep.spec
        ep.outdated.discard(w)
        w.alive = False
        self._set_state(w, _OUT, now)  # close its OUTDATED span
        if ep.crash_rate_per_s:
            w.run_token += 1
        if w.has_gpu:
            w.has_gpu = False
            w.host.release(spec.gpu_type, spec.gpus_needed)
            self._wake_throttled(w.host, spec.gpu_type)
        self._retired_at[w.idx] = now

    # -- per-job options: ttl and client cancels (gpuserve.sim.joboptions) ----------------

    def _on_abandon(self, ev: Any) -> None:
        j, reason = ev._value
        now = float(self.env.now)
        code = self._status[j]
        ep = self._job_ep[j]
        if code == _QUEUED:
            if j >= self._next_job:  # due at its own arrival instant: let the arrival come first
                self._after(0.0, self._on_abandon, (j, reason))
                return
            try:
                ep.queue.remove(j)
            except ValueError:
                for w in ep.workers.values():
                    if j in w.bound:
                        w.bound.remove(j)
                        ep.bound_count -= 1
                        break
            self._left_wait(ep, j)
            self._status[j] = _CANCELLED_QUEUED
        elif code == _TAKEN:
            w = self._all_workers[self._worker_of[j]]
            self._status[j] = _CANCELLED_RUNNING
            w.jobs.discard(j)
            w.in_flight -= 1
            ep.in_progress -= 1
            self._free_slot(w, now)
        else:
            return  # already ended
        self._end[j] = now
        self._reason[j] = reason
        self._job_over()

    # -- end of run ------------------------------------------------------------------------

    def _close(self, end_s: float) -> None:
        self.intervals_before_close = len(self._iv_worker)  # the rest close what is still open at the end
        for w in self._all_workers:
            if w.alive or w in self._unhealthy or w in w.ep.outdated:
                self._set_state(w, w.state, end_s)
        for w in self._unhealthy:  # its restart was not due yet: alive (UNHEALTHY) at the end
            self._retired_at.pop(w.idx, None)
        status, end = self._status, self._end
        for j in range(self._n_jobs):
            code = status[j]
            if code == _QUEUED or code == _TAKEN:
                # Still queued or running when the drain limit ran out.
                status[j] = _JOB_CODE[transition(JOB_STATUS_CODES[code], JobStatus.CANCELLED)]
                end[j] = end_s
                self._reason[j] = _R_DRAIN

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
                "crash_backoff_s": w.backoff_s,
                "crashed": w.crash_cause != "",
                "crash_cause": w.crash_cause,
                "crash_streak": w.crash_streak,
                "outdated": w.outdated,
            }
            for w in self._all_workers
        ]
        return RawRecords(
            endpoint_ids=[ep.spec.endpoint_id for ep in self.config.endpoints],
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
            held=sorted(j for ep in self._eps if ep.lb is not None for j in ep.lb.held),
            rejected=sorted(j for ep in self._eps if ep.lb is not None for j in ep.lb.rejected),
            job_retries=self._retries,
            job_reason=self._reason,
            job_low_priority=self._low_np,
            job_runsync_wait_s=self._runsync_wait_np,
        )
