"""What the live runtime counts for its metrics: jobs, their waits and run times, worker starts, scale actions.

Plain counters and fixed-bucket histograms, bumped where things happen (the runtime's submit,
take and job-end paths, the registry's first job-take of a worker, the Controller's actions)
and read at scrape time by gpuserve.server.metrics, which turns them into Prometheus metric
families. Nothing here knows Prometheus or HTTP; an increment is a dict update, so the hot
job path stays cheap.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpuserve.core.jobs import JobStatus
from gpuserve.core.startup import ColdStartRecord
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerView
from gpuserve.live.backend import LiveBackend
from gpuserve.live.registry import Change, LiveWorker, WorkerRegistry
from gpuserve.live.tracing import JobTracing, from_environment
from gpuserve.store.base import Job

__all__ = ["DURATION_BUCKETS_S", "Histogram", "ObservedBackend", "RecentAction", "Telemetry", "reason_kind"]

# Seconds, from a fast dispatch (a few ms) to a long GPU job or a slow image pull (10 min).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
# A scale reason is free text with numbers in it ("oldest job waited 4.2 s >= 4 s: +1 ..."); its
# numbers become N, so one policy yields a handful of label values, and past this many distinct
# kinds per endpoint the rest count as "other" (a label must not grow without bound).
MAX_REASON_KINDS = 50
PENDING_STARTS_KEPT = 10_000
# The last actions with their reasons in full, for the dashboard (server-wide; older ones drop off).
RECENT_ACTIONS_KEPT = 500
log = logging.getLogger("gpuserve.telemetry")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def reason_kind(reason: str) -> str:
    """A reason with its numbers replaced: "ceil(3/1) = 3" -> "ceil(N/N) = N"."""
    return _NUMBER.sub("N", reason)[:120] or "none"


@dataclass
class Histogram:
    """Cumulative-ready counts per upper bound (the last bucket is +Inf), their sum and count."""

    bounds: Sequence[float] = DURATION_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count of values <= le) per bucket, +Inf last: what a Prometheus histogram exposes."""
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclass(frozen=True)
class RecentAction:
    """One action the Controller applied: when (the runtime's clock), on which endpoint, and why."""

    at_s: float
    endpoint_id: str
    action: ScaleAction


class Telemetry:
    """One runtime's counts; the runtime and the registry write it, a metrics scrape reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # backends' threads report worker starts; the rest is the event loop
        self.jobs_submitted: Counter[str] = Counter()
        self.jobs_ended: Counter[tuple[str, str]] = Counter()  # (endpoint, terminal status)
        self.queue_delay_s: dict[str, Histogram] = {}
        self.execution_s: dict[str, Histogram] = {}
        self.scale_actions: Counter[tuple[str, str, str]] = Counter()  # (endpoint, start|stop, reason kind)
        self._reasons: dict[str, set[str]] = {}
        self.worker_starts: Counter[tuple[str, str]] = Counter()  # (endpoint, kind)
        self.start_stage_s: dict[tuple[str, str], Histogram] = {}  # (endpoint, stage)
        self._pending_starts: list[str] = []  # workers whose first job-take came, record not read yet
        self._ready: set[str] = set()
        self.recent_actions: deque[RecentAction] = deque(maxlen=RECENT_ACTIONS_KEPT)
        # OpenTelemetry spans per job (live/tracing.py), when the otel extra and OTEL_TRACES_EXPORTER ask for them.
        self.tracing: JobTracing | None = from_environment()

    # -- jobs (the runtime's event loop) ----------------------------------------------------------

    def job_submitted(self, job: Job) -> None:
        self.jobs_submitted[job.endpoint_id] += 1
        if self.tracing is not None:
            _traced(self.tracing.job_submitted, job)

    def job_taken(self, job: Job) -> None:
        if self.tracing is not None:
            _traced(self.tracing.job_taken, job)
        if job.started_s is not None:
            hist = self.queue_delay_s.get(job.endpoint_id)
            if hist is None:
                hist = self.queue_delay_s[job.endpoint_id] = Histogram()
            hist.observe(max(0.0, job.started_s - job.created_s))

    def job_expired(self, job: Job) -> None:
        """Its ttl ran out (it is deleted): counted apart, so submitted = ended + expired + still queued or running."""
        self.jobs_ended[(job.endpoint_id, "TTL_EXPIRED")] += 1
        if self.tracing is not None:
            _traced(self.tracing.job_expired, job)

    def job_ended(self, job: Job) -> None:
        if not job.status.is_terminal:
            return
        self.jobs_ended[(job.endpoint_id, job.status.value)] += 1
        if self.tracing is not None:
            _traced(self.tracing.job_ended, job)
        if job.started_s is not None and job.completed_s is not None and job.status is not JobStatus.CANCELLED:
            hist = self.execution_s.get(job.endpoint_id)
            if hist is None:
                hist = self.execution_s[job.endpoint_id] = Histogram()
            hist.observe(max(0.0, job.completed_s - job.started_s))

    # -- scaling ------------------------------------------------------------------------------------

    def scale_action(self, endpoint_id: str, action: ScaleAction, now_s: float | None = None) -> None:
        kinds = self._reasons.setdefault(endpoint_id, set())
        kind = reason_kind(action.reason)
        if kind not in kinds:
            if len(kinds) >= MAX_REASON_KINDS:
                kind = "other"
            kinds.add(kind)
        with self._lock:
            if action.start:
                self.scale_actions[(endpoint_id, "start", kind)] += 1
            if action.stop:
                self.scale_actions[(endpoint_id, "stop", kind)] += 1
            if now_s is not None:
                self.recent_actions.append(RecentAction(now_s, endpoint_id, action))

    # -- worker starts ------------------------------------------------------------------------------

    def attach(self, registry: WorkerRegistry) -> Telemetry:
        registry.subscribe(self._on_change)
        return self

    def _on_change(self, w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...]) -> None:
        # Called under the registry's lock: note the worker only. Its cold-start record is read
        # later (`collect_starts`), since a backend takes its own lock before the registry's.
        if change is Change.TOOK and w.first_take_s is not None and w.first_take_s == now_s:
            with self._lock:
                if w.worker_id not in self._ready and len(self._pending_starts) < PENDING_STARTS_KEPT:
                    self._ready.add(w.worker_id)
                    self._pending_starts.append(w.worker_id)
        elif change is Change.STATE and w.first_take_s is None:
            with self._lock:  # revived (flash boot): its next first take is a new start
                self._ready.discard(w.worker_id)
        elif change is Change.REMOVED:
            with self._lock:
                self._ready.discard(w.worker_id)

    def collect_starts(self, record_of: Callable[[str], ColdStartRecord | None], endpoint_of: Callable[[str], str | None]) -> None:
        """Count the workers that became ready since the last call, with their start-up stages."""
        with self._lock:
            pending, self._pending_starts = self._pending_starts, []
        for worker_id in pending:
            record = record_of(worker_id)
            endpoint_id = record.endpoint_id if record is not None else endpoint_of(worker_id)
            if endpoint_id is None:
                continue
            with self._lock:
                self.worker_starts[(endpoint_id, record.kind if record is not None else "unknown")] += 1
                if record is None:
                    continue
                stages = {**record.phases(), **({"total_s": record.total_s} if record.total_s is not None else {})}
                for stage, seconds in stages.items():
                    hist = self.start_stage_s.get((endpoint_id, stage))
                    if hist is None:
                        hist = self.start_stage_s[(endpoint_id, stage)] = Histogram()
                    hist.observe(seconds)


def _traced(hook: Callable[[Job], None], job: Job) -> None:
    """A tracing hook that fails is logged, never raised: a span must not fail a job's request."""
    try:
        hook(job)
    except Exception:
        log.exception("tracing job %s failed", job.id)


class ObservedBackend:
    """The Controller's view of a backend, counting every action it applies (start and stop, by reason)."""

    def __init__(self, inner: LiveBackend, telemetry: Telemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        return self.inner.workers(endpoint_id)

    def image_cached(self, endpoint_id: str) -> bool:
        """The backend's answer, which the Controller reads to allow extra workers on a spike."""
        return self.inner.image_cached(endpoint_id)

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        self.telemetry.scale_action(endpoint.endpoint_id, action, now_s)
        self.inner.apply(endpoint, action, now_s)
