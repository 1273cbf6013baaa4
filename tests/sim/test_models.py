"""Workload, service-time and billing models on their own, with seeded draws and exact counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.sim.coldstart import ColdStartProfile, ModelSource
from gpuserve.sim.service import Constant, Empirical, Exponential, Lognormal
from gpuserve.sim.traces import read_arrivals_csv, read_invocations
from gpuserve.sim.traces.azure2019 import write_synthetic
from gpuserve.sim.workload import Bursty, Diurnal, Poisson, spread_minute_counts


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_poisson_count_and_order() -> None:
    times = Poisson(2.0).arrivals(rng(), 50_000.0)
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < 50_000.0
    assert times.size == pytest.approx(100_000, rel=0.01)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)  # exponential gaps: CV 1


def test_bursty_mean_rate_and_burstiness() -> None:
    w = Bursty(rate_on_per_s=5.0, rate_off_per_s=0.1, mean_on_s=30.0, mean_off_s=300.0)
    times = w.arrivals(rng(1), 500_000.0)
    assert times.size / 500_000.0 == pytest.approx(w.mean_rate_per_s, rel=0.05)
    per_minute = np.bincount((times // 60).astype(int))
    assert per_minute.var() / per_minute.mean() > 5  # far burstier than Poisson (ratio 1)


def test_diurnal_follows_its_sine() -> None:
    w = Diurnal(mean_rate_per_s=1.0, amplitude=0.8, period_s=86_400.0, phase_s=0.0)
    times = w.arrivals(rng(2), 10 * 86_400.0)
    assert times.size / (10 * 86_400.0) == pytest.approx(1.0, rel=0.01)
    hour = ((times % 86_400.0) // 3600).astype(int)
    counts = np.bincount(hour, minlength=24) / 10 / 3600
    assert counts[6] == pytest.approx(1.8, rel=0.05)  # peak a quarter period in
    assert counts[18] == pytest.approx(0.2, rel=0.15)  # trough


def test_csv_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,ts_ms\na,5000\nb,2000\nc,3500\n")
    assert read_arrivals_csv(path, "ts_ms", time_scale=0.001).times_s.tolist() == [0.0, 1.5, 3.0]
    with pytest.raises(ConfigError, match=r"workload\.column is not a column"):
        read_arrivals_csv(path, "nope")


def test_azure_file_round_trip_and_spreads(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "inv.csv", n_functions=4, seed=3, minutes=120)
    inv = read_invocations(path)
    assert inv.counts.shape == (4, 120)
    counts = tuple(inv.counts[0].tolist())
    uniform = spread_minute_counts(counts, rng(), "uniform")
    assert uniform.size == sum(counts)
    assert np.array_equal(np.bincount((uniform // 60).astype(int), minlength=120), np.array(counts))
    even = spread_minute_counts((0, 2), rng(), "even")
    assert even.tolist() == [75.0, 105.0]
    poisson = spread_minute_counts(counts, rng(), "poisson")
    assert abs(poisson.size - sum(counts)) <= 4 * np.sqrt(sum(counts))  # a Poisson count per minute


@pytest.mark.parametrize(
    ("model", "mean_s"),
    [(Constant(1.5), 1.5), (Exponential(2.0), 2.0), (Lognormal(3.0, 0.7), 3.0), (Empirical((1.0, 2.0, 6.0)), 3.0)],
)
def test_service_models_keep_their_mean(model: object, mean_s: float) -> None:
    draws = model.sample(rng(4), 200_000)  # type: ignore[attr-defined]
    assert draws.mean() == pytest.approx(mean_s, rel=0.02)
    assert model.mean_s == pytest.approx(mean_s)  # type: ignore[attr-defined]
    assert (draws >= 0).all()


def test_cold_start_stages_by_model_source() -> None:
    base = dict(image_size_gb=10.0, pull_bandwidth_gb_s=2.0, model_size_gb=12.0)
    net = ColdStartProfile(**base, model_source=ModelSource.NETWORK_VOLUME, network_volume_bandwidth_gb_s=0.5)  # type: ignore[arg-type]
    baked = ColdStartProfile(**base, model_source=ModelSource.BAKED_IMAGE, baked_image_bandwidth_gb_s=3.0)  # type: ignore[arg-type]
    assert net.stages(image_wait_s=None, flash=False).model_load_s == 24.0
    assert net.stages(image_wait_s=None, flash=False).image_pull_s == 5.0
    # Baked: the pull carries the weights (22 GB), the load reads local disk.
    assert baked.stages(image_wait_s=None, flash=False).image_pull_s == 11.0
    assert baked.stages(image_wait_s=0.0, flash=False).image_pull_s == 0.0
    assert baked.stages(image_wait_s=None, flash=False).model_load_s == 4.0
    assert baked.stages(image_wait_s=None, flash=True).total_s == baked.flash_resume_s
    with pytest.raises(ConfigError, match="pull_bandwidth_gb_s must be positive"):
        ColdStartProfile(pull_bandwidth_gb_s=0.0)
