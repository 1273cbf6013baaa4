"""Shahrad et al.'s hybrid histogram policy (USENIX ATC'20): idle-time histogram -> pre-warm and keep-alive windows.

Per endpoint, idle times (IT: from the end of one burst of activity to the next arrival)
fill a histogram of 1-minute bins over a 4-hour range. After activity ends at time E:
- representative histogram (CV of the bin counts >= 2): pre-warm = 5th-percentile bin x
  (1 - 0.10) minutes, keep-alive = (99th-percentile bin + 1) x (1 + 0.10) minutes;
- not representative (CV < 2, or no data yet): pre-warm 0, keep-alive = the range (4 h);
- out-of-range ITs (>= 4 h) are at least half of all ITs: forecast the next IT and use
  pre-warm = IT x (1 - 0.15), keep-alive = IT x 0.15 x 2.
With pre-warm 0 idle workers stay for the keep-alive. Otherwise they are retired at once,
one worker is loaded again at E + pre-warm and kept until E + pre-warm + keep-alive; the
decision asks for wakes at both moments. While jobs are in the system the endpoint scales
per request, like fixed keep-alive.

Forecast (the paper fits an ARIMA model to the app's IT series): a standard-library AR(1)
fit over the last `history_len` ITs (all of them, as the paper's series has all):
mu = mean, phi = lag-1 autocorrelation clipped to [-0.95, 0.95], next IT = mu + phi x
(last - mu), floored at 0. With one IT it is that IT; with two, or a constant series, mu.

Event-driven with wakes rather than a periodic tick: idle stretches of hours cost nothing.
The controller is consulted on arrivals, not when a job finishes, so while jobs are in the
system the policy asks to be woken every `busy_poll_s` (1 s) to see activity end; the end
time itself is read exactly from the idle workers' `idle_since_s`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision, WorkerState
from gpuserve.policies.base import Policy, check_number, register
from gpuserve.policies.fixed_keepalive import scale_per_request

__all__ = ["HybridHistogramParams", "HybridHistogramState", "Windows", "decide", "forecast_idle_s", "windows"]

_TIME_TOLERANCE_S = 1e-9  # absorbs float rounding when a wake lands exactly on a window edge


@dataclass(frozen=True)
class HybridHistogramParams:
    range_s: float = 4 * 3600.0
    bin_s: float = 60.0
    head_pct: float = 5.0
    tail_pct: float = 99.0
    histogram_margin: float = 0.10
    forecast_margin: float = 0.15
    cv_threshold: float = 2.0
    out_of_range_threshold: float = 0.5
    history_len: int = 32
    busy_poll_s: float = 1.0  # 0: rely on the controller being consulted when jobs finish

    def __post_init__(self) -> None:
        check_number("range_s", self.range_s, positive=True)
        check_number("bin_s", self.bin_s, positive=True)
        if self.bin_s > self.range_s:
            raise ConfigError("bin_s", self.bin_s, f"cannot exceed range_s ({self.range_s:g})")
        for name in ("head_pct", "tail_pct"):
            value = check_number(name, getattr(self, name))
            if value > 100:
                raise ConfigError(name, value, "must be at most 100")
        for name in ("histogram_margin", "forecast_margin", "out_of_range_threshold"):
            value = check_number(name, getattr(self, name))
            if value > 1:
                raise ConfigError(name, value, "must be at most 1")
        check_number("cv_threshold", self.cv_threshold)
        if isinstance(self.history_len, bool) or not isinstance(self.history_len, int) or self.history_len < 1:
            raise ConfigError("history_len", self.history_len, "must be an integer >= 1")
        check_number("busy_poll_s", self.busy_poll_s)

    @property
    def n_bins(self) -> int:
        return round(self.range_s / self.bin_s)


@dataclass(frozen=True)
class HybridHistogramState:
    bins: tuple[int, ...]
    out_of_range: int = 0
    recent_idle_s: tuple[float, ...] = ()  # last history_len ITs, oldest first, for the forecast
    seen_submitted: int | None = None  # QueueStats.submitted_total at the last look
    seen_last_arrival_s: float | None = None
    last_obs_s: float | None = None
    active: bool = False  # jobs were in the system at the last look
    activity_end_s: float | None = None  # E: when the last burst of activity ended


@dataclass(frozen=True)
class Windows:
    prewarm_s: float
    keep_alive_s: float
    branch: str  # "histogram", "uncertain" or "forecast"


def _initial(params: HybridHistogramParams, _endpoint: EndpointSpec) -> HybridHistogramState:
    return HybridHistogramState(bins=(0,) * params.n_bins)


def _percentile_bin(bins: tuple[int, ...], total: int, fraction: float) -> int:
    prefix = 0
    for i, count in enumerate(bins):
        prefix += count
        if prefix / total >= fraction:
            return i
    return len(bins) - 1


def _cv(bins: tuple[int, ...], total: int) -> float:
    """Coefficient of variation of the bin counts (sample standard deviation over all bins)."""
    n = len(bins)
    mean = total / n
    if mean == 0 or n < 2:
        return 0.0
    var = sum((c - mean) ** 2 for c in bins) / (n - 1)
    return math.sqrt(var) / mean


def forecast_idle_s(history_s: tuple[float, ...]) -> float:
    """AR(1) one-step forecast of the next idle time (the lightweight stand-in for ARIMA)."""
    if not history_s:
        return 0.0
    if len(history_s) == 1:
        return history_s[0]
    mu = sum(history_s) / len(history_s)
    den = sum((x - mu) ** 2 for x in history_s)
    if len(history_s) < 3 or den == 0:
        return mu
    num = sum((a - mu) * (b - mu) for a, b in itertools.pairwise(history_s))
    phi = max(-0.95, min(0.95, num / den))  # a stationary fit: a short series can overshoot |phi| >= 1
    return max(0.0, mu + phi * (history_s[-1] - mu))


def windows(state: HybridHistogramState, params: HybridHistogramParams) -> Windows:
    """The pre-warm and keep-alive windows the histogram (or forecast) gives right now."""
    in_range = sum(state.bins)
    seen = in_range + state.out_of_range
    if seen > 0 and state.out_of_range / seen >= params.out_of_range_threshold:
        it_s = forecast_idle_s(state.recent_idle_s)
        margin = params.forecast_margin
        return Windows(it_s * (1 - margin), it_s * margin * 2, "forecast")
    if in_range == 0 or _cv(state.bins, in_range) < params.cv_threshold:
        return Windows(0.0, params.range_s, "uncertain")
    head = _percentile_bin(state.bins, in_range, params.head_pct / 100)
    tail = _percentile_bin(state.bins, in_range, params.tail_pct / 100)
    margin = params.histogram_margin
    return Windows(head * params.bin_s * (1 - margin), (tail + 1) * params.bin_s * (1 + margin), "histogram")


def _record(state: HybridHistogramState, params: HybridHistogramParams, idle_s: float) -> HybridHistogramState:
    index = math.floor(idle_s / params.bin_s)
    recent = (*state.recent_idle_s, idle_s)[-params.history_len :]
    if index >= len(state.bins):
        return replace(state, out_of_range=state.out_of_range + 1, recent_idle_s=recent)
    bins = list(state.bins)
    bins[index] += 1
    return replace(state, bins=tuple(bins), recent_idle_s=recent)


def _last_job_end_s(snapshot: EndpointSnapshot, state: HybridHistogramState) -> float:
    """When activity ended, between the last look (jobs present) and now: the latest idle_since."""
    now_s = snapshot.now_s
    ends = [w.idle_since_s for w in snapshot.workers if w.state is WorkerState.IDLE and w.idle_since_s is not None]
    end_s = max(ends) if ends else now_s
    floor_s = state.last_obs_s if state.last_obs_s is not None else end_s
    return max(floor_s, min(end_s, now_s))


def _arrivals(snapshot: EndpointSnapshot, state: HybridHistogramState) -> int:
    queue = snapshot.queue
    if state.seen_submitted is None:
        return 0  # the first look: no previous arrival to measure an idle time from
    new = queue.submitted_total - state.seen_submitted
    if new <= 0 and queue.last_arrival_s is not None and queue.last_arrival_s != state.seen_last_arrival_s:
        new = 1  # a queue that does not count submissions still shows the last arrival moving
    return max(0, new)


def decide(
    snapshot: EndpointSnapshot, params: HybridHistogramParams, state: HybridHistogramState
) -> tuple[ScaleDecision, HybridHistogramState]:
    now_s = snapshot.now_s
    queue = snapshot.queue
    new = _arrivals(snapshot, state)
    if new > 0:
        arrival_s = queue.last_arrival_s if queue.last_arrival_s is not None else now_s
        end_s = state.activity_end_s
        if state.active and snapshot.demand <= new:
            end_s = _last_job_end_s(snapshot, state)  # activity ended unseen before these arrivals
        if not state.active or snapshot.demand <= new:
            # With several arrivals since the last look only the latest time is known: the
            # first IT is measured to it (an upper bound), the rest arrived into activity (0).
            # The very first arrival has no earlier activity to measure from.
            if end_s is not None:
                state = _record(state, params, max(0.0, arrival_s - end_s))
            new -= 1
        for _ in range(new):
            state = _record(state, params, 0.0)
    state = replace(
        state,
        seen_submitted=queue.submitted_total,
        seen_last_arrival_s=queue.last_arrival_s,
    )

    win = windows(state, params)
    tag = f"{win.branch}: pre-warm {win.prewarm_s:g} s, keep-alive {win.keep_alive_s:g} s"
    if snapshot.demand > 0:
        desired = scale_per_request(snapshot)
        keep_s = 0.0 if win.prewarm_s > 0 else win.keep_alive_s
        wake = now_s + params.busy_poll_s if params.busy_poll_s > 0 else None
        state = replace(state, active=True, activity_end_s=None, last_obs_s=now_s)
        return ScaleDecision(desired, f"active, {tag}", keep_alive_s=keep_s, wake_at_s=wake), state

    end_s = _last_job_end_s(snapshot, state) if state.active else state.activity_end_s
    state = replace(state, active=False, activity_end_s=end_s, last_obs_s=now_s)
    if end_s is None:
        return ScaleDecision(0, f"no activity yet, {tag}", keep_alive_s=win.keep_alive_s), state
    if win.prewarm_s <= 0:
        expiry_s = end_s + win.keep_alive_s
        wake = expiry_s if expiry_s > now_s else None
        return ScaleDecision(0, f"idle since {end_s:g}, {tag}", keep_alive_s=win.keep_alive_s, wake_at_s=wake), state
    prewarm_at_s = end_s + win.prewarm_s
    expiry_s = prewarm_at_s + win.keep_alive_s
    if now_s < prewarm_at_s - _TIME_TOLERANCE_S:
        return ScaleDecision(0, f"unloaded until {prewarm_at_s:g}, {tag}", keep_alive_s=0.0, wake_at_s=prewarm_at_s), state
    if now_s < expiry_s - _TIME_TOLERANCE_S:
        return ScaleDecision(1, f"pre-warmed until {expiry_s:g}, {tag}", keep_alive_s=0.0, wake_at_s=expiry_s), state
    return ScaleDecision(0, f"keep-alive ended at {expiry_s:g}, {tag}", keep_alive_s=0.0), state


POLICY = register(
    Policy(
        name="hybrid_histogram",
        params_type=HybridHistogramParams,
        initial_state=_initial,
        decide=decide,
        tick_interval_s=lambda _p: None,  # event-driven: wakes at window edges and while busy
        doc=__doc__ or "",
        # No schedule attribute: it learns idle times from every arrival, so it sees each one.
    )
)
