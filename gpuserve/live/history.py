"""The dashboard's recent history of each endpoint: one sample a second in a bounded ring buffer, read from the runtime.

A sample holds what the dashboard plots over time: workers by state, queue depth, queue delay
and execution time p50/p99 over the last minute, and cold starts so far. It is read from what
the runtime keeps anyway (the registry, the store's queue statistics, the telemetry
histograms), on the event loop, so the job path pays nothing for it; the bill is not sampled
(the ledger's sum over every worker costs more than all the rest), the dashboard asks for it
when it polls.
Memory is bounded: `history_s / interval_s` samples per endpoint (600 by default, about
300 KiB each endpoint) and the bucket counts of the last minute, and an endpoint that is gone is
forgotten at the next sample.

The percentiles come from the telemetry's fixed buckets the way Prometheus'
`histogram_quantile` computes them (linear within a bucket): the jobs that finished in the
window, not all since start, and no per-job list to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuserve.core.types import WorkerState
from gpuserve.live.runtime import Runtime
from gpuserve.live.telemetry import DURATION_BUCKETS_S, Histogram, RecentAction

__all__ = [
    "HISTORY_S", "LATENCY_WINDOW_S", "SAMPLE_INTERVAL_S", "EndpointHistory", "History", "Sample", "Sampling", "bucket_quantile",
]

log = logging.getLogger("gpuserve.server")

SAMPLE_INTERVAL_S = 1.0
HISTORY_S = 600.0  # ten minutes of samples per endpoint
LATENCY_WINDOW_S = 60.0  # p50/p99 over the jobs of the last minute
STATES: tuple[WorkerState, ...] = tuple(WorkerState)


def bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The `q`-quantile of values counted per bucket (`counts[i]`: values in (bounds[i-1], bounds[i]], the last +Inf).

    None with no values. Linear within the bucket the rank falls in, from 0 for the first;
    a rank in the +Inf bucket answers the highest finite bound (as Prometheus does).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], was {q}")
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"counts must have one entry per bound plus +Inf ({len(bounds) + 1}), had {len(counts)}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(counts):
        if n > 0 and below + n >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * max(0.0, rank - below) / n
        below += n
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class Sample:
    """An endpoint at one instant (`t_s`, the runtime's clock); latencies in ms, None with no job in the window."""

    t_s: float
    workers: tuple[int, ...]  # per state, in `STATES` order
    in_queue: int
    in_progress: int
    delay_p50_ms: float | None
    delay_p99_ms: float | None
    execution_p50_ms: float | None
    execution_p99_ms: float | None
    cold_starts: int  # workers that became ready so far (cold or flash boot)


def _counts(hist: Histogram | None) -> tuple[int, ...]:
    return tuple(hist.counts) if hist is not None else (0,) * (len(DURATION_BUCKETS_S) + 1)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


@dataclass(frozen=True, slots=True)
class _Counts:
    """The telemetry histograms' bucket counts at `t_s`: the start of a later sample's window."""

    t_s: float
    delay: tuple[int, ...]
    execution: tuple[int, ...]


class EndpointHistory:
    """One endpoint's samples, oldest first, at most `max_samples` of them; bucket counts for the last window only."""

    def __init__(self, max_samples: int, window_samples: int) -> None:
        self.samples: deque[Sample] = deque(maxlen=max_samples)
        self.counts: deque[_Counts] = deque(maxlen=window_samples + 1)

    def window_start(self, t_s: float) -> _Counts | None:
        """The newest counts at or before `t_s` (the window's start), else the oldest kept."""
        chosen = None
        for c in self.counts:
            if c.t_s > t_s:
                break
            chosen = c
        return chosen if chosen is not None else (self.counts[0] if self.counts else None)

    def series(self) -> dict[str, Any]:
        """Column arrays, as a chart takes them: `tS` and one list per measure (workers: one per state)."""
        ss = list(self.samples)
        return {
            "tS": [round(s.t_s, 3) for s in ss],
            "workers": {state.value: [s.workers[i] for s in ss] for i, state in enumerate(STATES)},
            "inQueue": [s.in_queue for s in ss],
            "inProgress": [s.in_progress for s in ss],
            "delayP50Ms": [s.delay_p50_ms for s in ss],
            "delayP99Ms": [s.delay_p99_ms for s in ss],
            "executionP50Ms": [s.execution_p50_ms for s in ss],
            "executionP99Ms": [s.execution_p99_ms for s in ss],
            "coldStarts": [s.cold_starts for s in ss],
        }


class History:
    """Every endpoint's history, sampled from `runtime` every `interval_s` while `run()` runs."""

    def __init__(self, runtime: Runtime, interval_s: float = SAMPLE_INTERVAL_S, history_s: float = HISTORY_S) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be more than 0, was {interval_s}")
        if history_s < interval_s:
            raise ValueError(f"history_s must be at least interval_s ({interval_s:g}), was {history_s}")
        self.runtime = runtime
        self.interval_s = interval_s
        self.history_s = history_s
        self.max_samples = int(history_s / interval_s)
        self.window_samples = max(1, int(LATENCY_WINDOW_S / interval_s))
        self.endpoints: dict[str, EndpointHistory] = {}

    def collect_starts(self) -> None:
        """Move the workers that became ready since the last look into the telemetry's start counts (as /metrics does)."""
        rt = self.runtime
        backend = rt.backend

        def endpoint_of(worker_id: str) -> str | None:
            w = rt.registry.get(worker_id)
            return w.endpoint_id if w is not None else None

        rt.telemetry.collect_starts(lambda wid: backend.cold_start(wid) if backend is not None else None, endpoint_of)

    def cold_starts(self, endpoint_id: str) -> dict[str, int]:
        """Workers that became ready so far, by kind (cold, flash_unpause, flash_start)."""
        return {kind: n for (eid, kind), n in sorted(self.runtime.telemetry.worker_starts.items()) if eid == endpoint_id}

    def sample(self, now_s: float | None = None) -> None:
        """Append one sample per endpoint; forget endpoints the runtime no longer serves."""
        rt = self.runtime
        now = rt.clock.now_s() if now_s is None else now_s
        self.collect_starts()
        for gone in set(self.endpoints) - set(rt.endpoints):
            del self.endpoints[gone]
        tel = rt.telemetry
        for eid in rt.endpoints:
            hist = self.endpoints.get(eid)
            if hist is None:
                hist = self.endpoints[eid] = EndpointHistory(self.max_samples, self.window_samples)
            by_state = {state: 0 for state in STATES}
            for w in rt.registry.all(eid):
                by_state[w.state] += 1
            stats = rt.queue_stats(eid, now)
            delay, execution = _counts(tel.queue_delay_s.get(eid)), _counts(tel.execution_s.get(eid))
            base = hist.window_start(now - LATENCY_WINDOW_S)
            d_win = [a - b for a, b in zip(delay, base.delay, strict=True)] if base else list(delay)
            e_win = [a - b for a, b in zip(execution, base.execution, strict=True)] if base else list(execution)
            hist.counts.append(_Counts(now, delay, execution))
            hist.samples.append(
                Sample(
                    t_s=now,
                    workers=tuple(by_state[s] for s in STATES),
                    in_queue=stats.in_queue,
                    in_progress=stats.in_progress,
                    delay_p50_ms=_ms(bucket_quantile(0.5, DURATION_BUCKETS_S, d_win)),
                    delay_p99_ms=_ms(bucket_quantile(0.99, DURATION_BUCKETS_S, d_win)),
                    execution_p50_ms=_ms(bucket_quantile(0.5, DURATION_BUCKETS_S, e_win)),
                    execution_p99_ms=_ms(bucket_quantile(0.99, DURATION_BUCKETS_S, e_win)),
                    cold_starts=sum(n for (e, _kind), n in tel.worker_starts.items() if e == eid),
                )
            )

    def latest(self, endpoint_id: str) -> Sample | None:
        hist = self.endpoints.get(endpoint_id)
        return hist.samples[-1] if hist is not None and hist.samples else None

    def actions(self, endpoint_id: str, limit: int) -> list[RecentAction]:
        """The endpoint's last `limit` scale actions, newest first."""
        out: list[RecentAction] = []
        for recent in reversed(self.runtime.telemetry.recent_actions):
            if recent.endpoint_id == endpoint_id:
                out.append(recent)
                if len(out) >= limit:
                    break
        return out

    async def run(self) -> None:
        """Sample every `interval_s` until cancelled; a failed sample is logged and the next one tried."""
        while True:
            try:
                self.sample()
            except Exception:  # a dashboard must never take the server down with it
                log.exception("dashboard history: a sample failed")
            await asyncio.sleep(self.interval_s)


class Sampling:
    """The sampling task of a History, started and stopped with the app (its lifespan)."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.history.run(), name="gpuserve-dashboard-history")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
