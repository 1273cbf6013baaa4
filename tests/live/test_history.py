"""The dashboard's history: bucket percentiles as Prometheus computes them, a bounded ring, a one-minute latency window."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuserve.core.types import ScaleAction, WorkerState
from gpuserve.live.history import LATENCY_WINDOW_S, History, bucket_quantile
from gpuserve.live.telemetry import Histogram
from tests.support.live import SERVER_FAST, Harness, deployment


def test_bucket_quantile_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    bounds = (1.0, 2.0, 4.0)
    # 10 values in (0, 1], 10 in (1, 2]: the median is the first bucket's top, p75 halfway through the second.
    assert bucket_quantile(0.5, bounds, [10, 10, 0, 0]) == pytest.approx(1.0)
    assert bucket_quantile(0.75, bounds, [10, 10, 0, 0]) == pytest.approx(1.5)
    assert bucket_quantile(0.25, bounds, [10, 10, 0, 0]) == pytest.approx(0.5)
    # A rank in the +Inf bucket answers the highest finite bound; nothing counted answers None.
    assert bucket_quantile(0.99, bounds, [1, 0, 0, 99]) == 4.0
    assert bucket_quantile(0.5, bounds, [0, 0, 0, 0]) is None
    with pytest.raises(ValueError, match="q must be in"):
        bucket_quantile(1.5, bounds, [1, 0, 0, 0])
    with pytest.raises(ValueError, match="one entry per bound"):
        bucket_quantile(0.5, bounds, [1, 0, 0])


def test_the_history_keeps_a_bounded_ring_and_percentiles_of_the_last_minute_only(tmp_path: Path) -> None:
    with Harness(tmp_path, [deployment("ep")], SERVER_FAST, backend=None) as h:
        rt = h.runtime
        history = History(rt, interval_s=1.0, history_s=120.0)
        assert history.max_samples == 120
        delays = rt.telemetry.queue_delay_s["ep"] = Histogram()
        for _ in range(100):
            delays.observe(0.002)  # the first bucket (<= 5 ms)
        t0 = rt.clock.now_s()
        history.sample(t0)
        first = history.latest("ep")
        assert first is not None and first.delay_p50_ms is not None and first.delay_p50_ms <= 5.0
        assert first.execution_p50_ms is None  # no job ran: no number, not a zero
        # A minute and more later, slow jobs only: the window holds them and not the fast ones.
        for i in range(1, 62):
            history.sample(t0 + i)
        for _ in range(10):
            delays.observe(3.0)  # (2.5, 5] s
        history.sample(t0 + 62)
        later = history.latest("ep")
        assert later is not None and later.delay_p50_ms is not None
        assert 2500.0 <= later.delay_p50_ms <= 5000.0
        assert LATENCY_WINDOW_S == 60.0
        for i in range(63, 400):
            history.sample(t0 + i)
        series = history.endpoints["ep"].series()
        assert len(series["tS"]) == 120 and series["tS"][-1] == pytest.approx(t0 + 399)  # the newest, no more than the ring
        assert set(series["workers"]) == {s.value for s in WorkerState}
        # A worker registered by hand shows in the next sample's counts.
        h.add_worker("w1")
        history.sample(t0 + 400)
        assert history.endpoints["ep"].series()["workers"]["INITIALIZING"][-1] == 1


def test_the_history_lists_an_endpoints_last_actions_newest_first(tmp_path: Path) -> None:
    with Harness(tmp_path, [deployment("a"), deployment("b")], SERVER_FAST, backend=None) as h:
        tel = h.runtime.telemetry
        tel.scale_action("a", ScaleAction(start=1, target=1, reason="job arrived at zero workers"), 10.0)
        tel.scale_action("b", ScaleAction(start=2, target=2, reason="for b"), 11.0)
        tel.scale_action("a", ScaleAction(stop=("a-1",), target=0, reason="idle past 5 s"), 12.0)
        history = History(h.runtime)
        assert [(x.at_s, x.action.reason) for x in history.actions("a", 10)] == [
            (12.0, "idle past 5 s"), (10.0, "job arrived at zero workers")
        ]
        assert len(history.actions("a", 1)) == 1
