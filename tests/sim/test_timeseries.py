"""Time-weighted means and maxima per bin, against hand-computed step functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpuserve.sim.timeseries import binned_series, nice_bin_s, span_bins


def test_span_bins_mean_is_the_time_average_and_max_catches_a_short_spike() -> None:
    # Bin [0, 10): one span 0-10 all along, a second 2-4 (2 s of 10), a third 3-3.5 (a spike to 3).
    edges = np.array([0.0, 10.0, 20.0])
    mean, peak = span_bins(np.array([0.0, 2.0, 3.0, 12.0]), np.array([10.0, 4.0, 3.5, 20.0]), edges)
    assert np.allclose(mean, [(10 + 2 + 0.5) / 10, 8 / 10])
    assert peak.tolist() == [3.0, 1.0]


def test_a_handover_at_one_instant_is_no_spike_and_empty_spans_count_nothing() -> None:
    # One worker ends at 5 as another starts at 5: the count stays 1; a zero-length span adds nothing.
    edges = np.array([0.0, 10.0])
    mean, peak = span_bins(np.array([0.0, 5.0, 7.0]), np.array([5.0, 10.0, 7.0]), edges)
    assert mean.tolist() == [1.0] and peak.tolist() == [1.0]


def test_binned_series_counts_workers_by_state_and_queue() -> None:
    intervals = pd.DataFrame(
        {"endpoint": ["a"] * 3, "state": ["INITIALIZING", "RUNNING", "IDLE"], "start_s": [0.0, 30.0, 45.0], "end_s": [30.0, 45.0, 60.0]}
    )
    # Job 0 queued 0-30 (starts when the worker is ready); job 1 never starts, cancelled at 50.
    jobs = pd.DataFrame(
        {"endpoint": ["a", "a"], "arrival_s": [0.0, 40.0], "start_s": [30.0, np.nan], "end_s": [45.0, 50.0]}
    )
    series = binned_series(jobs, intervals, end_s=60.0, bin_s=30.0)
    assert series["t_s"].tolist() == [0.0, 30.0]
    assert series["initializing"].tolist() == [1.0, 0.0]
    assert series["running"].tolist() == [0.0, 0.5] and series["idle"].tolist() == [0.0, 0.5]
    assert series["workers"].tolist() == [1.0, 1.0] and series["workers_max"].tolist() == [1.0, 1.0]
    assert series["queue_length"].tolist() == [1.0, 10 / 30] and series["queue_length_max"].tolist() == [1.0, 1.0]


def test_bins_are_readable_widths_from_minutes_to_weeks() -> None:
    assert nice_bin_s(7200) == 30.0 and nice_bin_s(7202) == 60.0
    assert nice_bin_s(10 * 86400) == 3600.0
    assert nice_bin_s(8 * 7 * 86400) == 21600.0  # 8 weeks: 224 bins of 6 h
    assert nice_bin_s(2 * 365 * 86400) == 4 * 86400.0  # past 240 days: whole days
