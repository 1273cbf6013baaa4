"""The live cost ledger: the simulator's BillingModel applied to live workers' real state intervals, as they happen.

The ledger subscribes to the worker registry (the one table of live worker states) and keeps,
per worker, the time it spent in each state, whether it held a job meanwhile and whether it
was an active (`min_workers`) worker: the same intervals the simulator records, priced by the
same rule (gpuserve.core.billing). Time comes from the runtime's clock whenever a change
arrives without one (a backend's removal).

Two views:
- since start: each worker's bill so far, its billed seconds rounded up once over its life
  (Runpod: to the second), as `bill_worker` does; a worker still alive is billed as if it
  stopped now. Sums over workers, the per-request fees and the execution charges of jobs
  make the endpoint's bill, the number `gpuserve simulate` reports for the same timeline.
- over a window (the last `window_s` seconds): the same spans clipped to the window, pro
  rata: rounding belongs to a worker's whole life, so a window carries none of it.

A worker paused for flash boot (Docker `pause`) keeps its GPU memory and its registry entry,
so it is billed in its registry state; one stopped for flash boot leaves the registry and is
not billed (the `parked_billed` rule of a rented GPU is not followed live).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gpuserve.core.billing import BillingBasis, BillingModel, round_up_s
from gpuserve.core.clock import Clock
from gpuserve.core.types import EndpointSpec, WorkerState
from gpuserve.live.registry import Change, LiveWorker, WorkerRegistry

__all__ = ["Bill", "LiveLedger", "StateBill"]

# How far back a window may reach; spans older than this are dropped (their totals stay).
DEFAULT_RETENTION_S = 86_400.0
# Removed workers kept one by one for per-worker bills; older ones fold into their endpoint's total.
GONE_WORKERS_KEPT = 1_000


@dataclass(frozen=True)
class StateBill:
    """One worker state's share of a bill: wall seconds in it, billed seconds, GPU-seconds billed, USD."""

    seconds: float = 0.0
    billed_s: float = 0.0
    gpu_s: float = 0.0
    cost_usd: float = 0.0

    def __add__(self, other: StateBill) -> StateBill:
        return StateBill(
            self.seconds + other.seconds,
            self.billed_s + other.billed_s,
            self.gpu_s + other.gpu_s,
            self.cost_usd + other.cost_usd,
        )


def _add_states(a: Mapping[WorkerState, StateBill], b: Mapping[WorkerState, StateBill]) -> dict[WorkerState, StateBill]:
    return {s: a.get(s, StateBill()) + b.get(s, StateBill()) for s in WorkerState}


@dataclass(frozen=True)
class Bill:
    """What a worker, an endpoint or the whole server cost: by worker state, plus jobs' fees and execution charges."""

    by_state: Mapping[WorkerState, StateBill] = field(default_factory=lambda: MappingProxyType({}))
    jobs_started: int = 0
    jobs_cost_usd: float = 0.0

    @property
    def gpu_s(self) -> float:
        """GPU-seconds billed (worker-seconds for a CPU endpoint)."""
        return sum(b.gpu_s for b in self.by_state.values())

    @property
    def billed_s(self) -> float:
        return sum(b.billed_s for b in self.by_state.values())

    @property
    def cost_usd(self) -> float:
        return sum(b.cost_usd for b in self.by_state.values()) + self.jobs_cost_usd

    def __add__(self, other: Bill) -> Bill:
        return Bill(
            MappingProxyType(_add_states(self.by_state, other.by_state)),
            self.jobs_started + other.jobs_started,
            self.jobs_cost_usd + other.jobs_cost_usd,
        )

    def to_json(self) -> dict[str, Any]:
        """camelCase, as the operator API answers."""
        return {
            "costUsd": self.cost_usd,
            "gpuSeconds": self.gpu_s,
            "billedSeconds": self.billed_s,
            "jobsStarted": self.jobs_started,
            "jobsCostUsd": self.jobs_cost_usd,
            "byState": {
                s.value: {"seconds": b.seconds, "billedSeconds": b.billed_s, "gpuSeconds": b.gpu_s, "costUsd": b.cost_usd}
                for s, b in self.by_state.items()
                if b.seconds > 0 or b.cost_usd > 0
            },
        }


# A closed span: (state, start_s, end_s, active, processing). A tuple: two are made per job.
_Span = tuple[WorkerState, float, float, bool, bool]


@dataclass(slots=True)
class _Book:
    """One worker life (registered to removed): its open span, closed totals and recent spans."""

    worker_id: str
    endpoint_id: str
    gpu_type: str | None
    units: int  # GPUs billed per second (a CPU worker bills as one unit)
    memory_gb: float | None
    rates: tuple[float, float]  # USD per second: (flex, active)
    added_s: float
    active: bool
    state: WorkerState
    processing: bool
    since_s: float
    removed_s: float | None = None
    # Closed spans' totals per state: [wall seconds, billed seconds, cost USD before rounding].
    totals: dict[WorkerState, list[float]] = field(default_factory=dict)
    last_billed: tuple[WorkerState, float] | None = None  # (state, USD per billed second) of the last billed span
    spans: deque[_Span] = field(default_factory=deque)
    takes_s: dict[str, float] = field(default_factory=dict)  # job id -> when this worker took it


class LiveLedger:
    """GPU-seconds and cost per endpoint and per worker, by state, from registry changes (`attach`)."""

    def __init__(
        self,
        model: BillingModel,
        clock: Clock,
        spec_of: Callable[[str], EndpointSpec | None],
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self.model = model  # fixed for the ledger's life: rates and rules below are read off it once
        self.clock = clock
        # Whether a second is billed, per (state, holding a job, active): a lookup per change.
        self._billed = {
            (state, processing, active): model.billed(state, processing, active)
            for state in WorkerState
            for processing in (False, True)
            for active in (False, True)
        }
        self._timed_jobs = model.basis is BillingBasis.EXECUTION  # only then does a job's run time cost
        self._spec_of = spec_of
        self.retention_s = retention_s
        self._lock = threading.RLock()
        self._alive: dict[str, _Book] = {}
        self._gone: deque[_Book] = deque()
        # endpoint -> bills (rounded, pro rata) of removed workers no longer kept one by one
        self._folded: dict[str, tuple[Bill, Bill]] = {}
        # endpoint -> (when, USD) of each job charge (fee at take, execution at end), for windows
        self._job_charges: dict[str, deque[tuple[float, float]]] = {}
        self._jobs: dict[str, list[float]] = {}  # endpoint -> [jobs started, USD charged] since start
        self._labels: dict[str, tuple[str | None, int]] = {}  # endpoint -> (GPU type, GPUs) to price by

    def price_as(self, endpoint_id: str, gpu_type: str | None, gpus: int) -> None:
        """Price an endpoint's future workers as `gpus` x `gpu_type`, whatever they run on.

        The replay's synthetic workers need no GPU, yet are billed as the scenario's GPUs."""
        with self._lock:
            self._labels[endpoint_id] = (gpu_type, gpus)

    def attach(self, registry: WorkerRegistry) -> LiveLedger:
        """Follow every change of `registry`; workers already registered are billed from now."""
        registry.subscribe(self._on_change)
        now = self.clock.now_s()
        for w in registry.all():
            with self._lock:
                if w.worker_id not in self._alive:
                    self._add(w, now)
        return self

    # -- following the registry ------------------------------------------------------------------

    def _on_change(self, w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...]) -> None:
        now = self.clock.now_s() if now_s is None else now_s
        with self._lock:
            if change is Change.ADDED:
                old = self._alive.get(w.worker_id)
                if old is not None:  # re-registered under the same id without a removal: a new life
                    self._remove(old, now)
                self._add(w, now)
                return
            book = self._alive.get(w.worker_id)
            if book is None:
                return
            if change is Change.REMOVED:
                self._remove(book, now)
                return
            self._move(book, w.state, bool(w.in_flight), now)
            if not job_ids:
                return
            if change is Change.TOOK:
                totals = self._jobs.get(book.endpoint_id)
                if totals is None:
                    totals = self._jobs[book.endpoint_id] = [0.0, 0.0]
                totals[0] += len(job_ids)
                fee = self.model.per_request_usd
                for job_id in job_ids:
                    if self._timed_jobs:
                        book.takes_s[job_id] = now
                    if fee > 0:
                        self._charge_job(book.endpoint_id, now, fee)
            elif change is Change.JOB_ENDED and self._timed_jobs:
                for job_id in job_ids:
                    self._end_job(book, job_id, now)

    def _add(self, w: LiveWorker, now: float) -> None:
        spec = self._spec_of(w.endpoint_id)
        min_workers = spec.scaling.min_workers if spec is not None else 0
        alive_active = sum(1 for b in self._alive.values() if b.endpoint_id == w.endpoint_id and b.active)
        gpu_type, gpus = self._labels.get(w.endpoint_id) or (
            (spec.gpu_type, spec.gpus_needed) if spec is not None else (None, 0)
        )
        price = self.model.price_usd_per_s(gpu_type) * max(gpus, 1)
        self._alive[w.worker_id] = _Book(
            worker_id=w.worker_id,
            endpoint_id=w.endpoint_id,
            gpu_type=gpu_type,
            units=max(gpus, 1),
            memory_gb=spec.memory_gb if spec is not None else None,
            rates=(price, price * (1.0 - self.model.active_discount)),
            added_s=now,
            # The simulator's rule: the first min_workers alive workers are the discounted active ones.
            active=alive_active < min_workers,
            state=w.state,
            processing=bool(w.in_flight),
            since_s=now,
        )

    def _remove(self, book: _Book, now: float) -> None:
        self._close(book, now)
        for job_id in list(book.takes_s):  # jobs it still held: their execution ends with it
            self._end_job(book, job_id, now)
        book.removed_s = now
        del self._alive[book.worker_id]
        self._gone.append(book)
        while len(self._gone) > GONE_WORKERS_KEPT:
            old = self._gone.popleft()
            rounded, pro_rata = self._folded.get(old.endpoint_id, (Bill(), Bill()))
            self._folded[old.endpoint_id] = (
                rounded + self._bill_of(old, now, None), pro_rata + self._bill_of(old, now, None, rounded=False)
            )
        if book.active:
            # Active capacity is reserved, not tied to one worker: the oldest flex worker takes
            # over the discounted always-on billing (the simulator's rule).
            flex = [b for b in self._alive.values() if b.endpoint_id == book.endpoint_id and not b.active]
            if flex:
                heir = min(flex, key=lambda b: b.added_s)
                self._close(heir, now)
                heir.active = True

    def _move(self, book: _Book, state: WorkerState, processing: bool, now: float) -> None:
        if state is book.state and processing == book.processing:
            return
        self._close(book, now)
        book.state, book.processing = state, processing

    def _close(self, book: _Book, now: float) -> None:
        """End the open span at `now` (a new one starts at once, in the same state until told otherwise)."""
        since = book.since_s
        if now <= since:
            return
        state, active, processing = book.state, book.active, book.processing
        duration = now - since
        acc = book.totals.get(state)
        if acc is None:
            acc = book.totals[state] = [0.0, 0.0, 0.0]
        acc[0] += duration
        if self._billed[(state, processing, active)]:
            rate = book.rates[active]
            acc[1] += duration
            acc[2] += duration * rate
            book.last_billed = (state, rate)
        spans = book.spans
        spans.append((state, since, now, active, processing))
        horizon = now - self.retention_s
        while spans[0][2] < horizon:
            spans.popleft()
        book.since_s = now

    def _end_job(self, book: _Book, job_id: str, now: float) -> None:
        taken = book.takes_s.pop(job_id, None)
        if taken is None:
            return
        # job_cost_usd includes the fee, charged already at the take.
        execution = self.model.job_cost_usd(max(0.0, now - taken), book.memory_gb) - self.model.per_request_usd
        if execution > 0:
            self._charge_job(book.endpoint_id, now, execution)

    def _charge_job(self, endpoint_id: str, now: float, usd: float) -> None:
        self._jobs.setdefault(endpoint_id, [0.0, 0.0])[1] += usd
        charges = self._job_charges.setdefault(endpoint_id, deque())
        charges.append((now, usd))
        while charges and charges[0][0] < now - self.retention_s:
            charges.popleft()

    # -- bills -----------------------------------------------------------------------------------

    def _bill_of(self, book: _Book, now: float, window_s: float | None, rounded: bool = True) -> Bill:
        if window_s is not None:
            return self._window_bill(book, now, now - window_s)
        totals = {s: list(v) for s, v in book.totals.items()}
        last = book.last_billed
        if book.removed_s is None and now > book.since_s:  # the open span, as if the worker stopped now
            acc = totals.setdefault(book.state, [0.0, 0.0, 0.0])
            duration = now - book.since_s
            acc[0] += duration
            if self._billed[(book.state, book.processing, book.active)]:
                rate = book.rates[book.active]
                acc[1] += duration
                acc[2] += duration * rate
                last = (book.state, rate)
        billed = sum(v[1] for v in totals.values())
        extra = round_up_s(billed, self.model.rounding_s) - billed if rounded else 0.0
        if last is not None and extra > 0:
            # The rounding's extra fraction is priced like the worker's last billed second.
            acc = totals[last[0]]
            acc[1] += extra
            acc[2] += extra * last[1]
        return Bill(
            MappingProxyType(
                {s: StateBill(v[0], v[1], v[1] * book.units, v[2]) for s, v in totals.items()}
            )
        )

    def _window_bill(self, book: _Book, now: float, start: float) -> Bill:
        spans: Iterable[_Span] = book.spans
        if book.removed_s is None and now > book.since_s:
            spans = [*book.spans, (book.state, book.since_s, now, book.active, book.processing)]
        totals: dict[WorkerState, list[float]] = {}
        for state, start_s, end_s, active, processing in spans:
            a, b = max(start_s, start), min(end_s, now)
            if b <= a:
                continue
            acc = totals.setdefault(state, [0.0, 0.0, 0.0])
            acc[0] += b - a
            if self._billed[(state, processing, active)]:
                acc[1] += b - a
                acc[2] += (b - a) * book.rates[active]
        return Bill(MappingProxyType({s: StateBill(v[0], v[1], v[1] * book.units, v[2]) for s, v in totals.items()}))

    def _check_window(self, window_s: float | None) -> None:
        if window_s is not None and not (0 < window_s <= self.retention_s):
            raise ValueError(f"window_s must be in (0, {self.retention_s:g}], was {window_s}")

    def worker_bills(
        self,
        endpoint_id: str | None = None,
        now_s: float | None = None,
        window_s: float | None = None,
        rounded: bool = True,
    ) -> dict[str, Bill]:
        """Per worker id (alive, and the last removed ones), since start or over the last `window_s`.

        `rounded=False`: since start without the per-life rounding, so each state's share only
        grows (what a Prometheus counter needs; the rounding's extra moves to the latest state)."""
        self._check_window(window_s)
        now = self.clock.now_s() if now_s is None else now_s
        out: dict[str, Bill] = {}
        with self._lock:
            for book in [*self._gone, *self._alive.values()]:
                if endpoint_id is not None and book.endpoint_id != endpoint_id:
                    continue
                if window_s is not None and book.removed_s is not None and book.removed_s < now - window_s:
                    continue
                bill = self._bill_of(book, now, window_s, rounded)
                out[book.worker_id] = out[book.worker_id] + bill if book.worker_id in out else bill
        return out

    def endpoint_bill(
        self, endpoint_id: str, now_s: float | None = None, window_s: float | None = None, rounded: bool = True
    ) -> Bill:
        """An endpoint's bill: its workers' time plus its jobs' fees and execution charges (`rounded`: see worker_bills)."""
        self._check_window(window_s)
        now = self.clock.now_s() if now_s is None else now_s
        with self._lock:
            total = Bill()
            for bill in self.worker_bills(endpoint_id, now, window_s, rounded).values():
                total = total + bill
            if window_s is None:
                total = total + self._folded.get(endpoint_id, (Bill(), Bill()))[0 if rounded else 1]
                started, usd = self._jobs.get(endpoint_id, [0.0, 0.0])
                return total + Bill(jobs_started=int(started), jobs_cost_usd=usd)
            start = now - window_s
            usd = sum(c for t, c in self._job_charges.get(endpoint_id, ()) if start <= t <= now)
            return total + Bill(jobs_cost_usd=usd)

    def endpoints(self) -> list[str]:
        """Endpoints the ledger has seen a worker or a job of."""
        with self._lock:
            seen = {b.endpoint_id for b in [*self._alive.values(), *self._gone]} | set(self._folded) | set(self._jobs)
            return sorted(seen)
