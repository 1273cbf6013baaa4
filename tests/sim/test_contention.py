"""Cold starts as distributions and with contention: exact timelines for concurrent starts on one host, reproducible draws."""

from __future__ import annotations

import numpy as np
import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.sim.coldstart import ColdStartProfile, ModelSource, StageDist
from gpuserve.sim.hosts import HostSpec
from gpuserve.sim.service import Constant, Exponential
from gpuserve.sim.workload import Poisson
from tests.sim.sim_builders import endpoint, run

HOST = (HostSpec("h", {"A100": 8}),)


def _pulling(image: str) -> ColdStartProfile:
    # 10 GB at 1 GB/s: 10 s alone.
    return ColdStartProfile(image=image, image_size_gb=10.0, pull_bandwidth_gb_s=1.0)


def _ready(result: object, column: str = "ready_s") -> dict[str, float]:
    workers = result.workers  # type: ignore[attr-defined]
    return {str(r.endpoint): float(getattr(r, column)) for r in workers.itertuples()}


def test_two_concurrent_pulls_on_one_host_each_take_twice_as_long_as_one_alone() -> None:
    alone = run(endpoint("a", cold=_pulling("img-a"), min_workers=1), hosts=HOST, duration_s=50.0)
    assert _ready(alone, "image_pull_s") == {"a": 10.0}
    assert _ready(alone) == {"a": 10.0}
    both = run(
        endpoint("a", cold=_pulling("img-a"), min_workers=1),
        endpoint("b", cold=_pulling("img-b"), min_workers=1),
        hosts=HOST,
        duration_s=50.0,
    )
    assert _ready(both, "image_pull_s") == {"a": 20.0, "b": 20.0}
    assert _ready(both) == {"a": 20.0, "b": 20.0}


def test_a_pull_that_starts_later_shares_the_link_only_while_both_run() -> None:
    # b starts pulling at 4 s (its first job): a has 6 s of work left, b 10 s. Sharing, both
    # progress at half speed until a ends at 4 + 12 = 16 s (b has 4 s left), b ends at 20 s.
    both = run(
        endpoint("a", cold=_pulling("img-a"), min_workers=1),
        endpoint("b", cold=_pulling("img-b"), times=(4.0,)),
        hosts=HOST,
        duration_s=50.0,
    )
    assert _ready(both) == {"a": 16.0, "b": 20.0}
    assert _ready(both, "image_pull_s") == {"a": 16.0, "b": 16.0}


def test_the_same_image_is_pulled_once_and_the_second_start_waits_for_it() -> None:
    both = run(endpoint("a", cold=_pulling("img"), min_workers=2), hosts=HOST, duration_s=50.0)
    assert sorted(both.workers["ready_s"].tolist()) == [10.0, 10.0]


def test_the_implicit_unlimited_host_shares_nothing() -> None:
    both = run(
        endpoint("a", cold=_pulling("img-a"), min_workers=1),
        endpoint("b", cold=_pulling("img-b"), min_workers=1),
        duration_s=50.0,
    )
    assert _ready(both) == {"a": 10.0, "b": 10.0}


@pytest.mark.parametrize(("cores", "expected_s"), [(1, 6.0), (2, 3.0), (None, 3.0)])
def test_init_stages_share_the_hosts_cpu_cores(cores: int | None, expected_s: float) -> None:
    # 1 s platform start + 2 s runtime init of CPU work each; two at once on one core take 6 s.
    cold = ColdStartProfile(platform_start_s=1.0, runtime_init_s=2.0)
    result = run(endpoint("a", cold=cold, min_workers=2), hosts=(HostSpec("h", {"A100": 8}, cpu_cores=cores),), duration_s=50.0)
    assert result.workers["ready_s"].tolist() == [expected_s, expected_s]
    stretch = expected_s / 3.0
    assert result.workers["runtime_init_s"].tolist() == [pytest.approx(2.0 * stretch)] * 2


def test_network_volume_loads_share_the_volume_bandwidth_and_host_cache_loads_do_not() -> None:
    volume = ColdStartProfile(model_size_gb=4.0, model_source=ModelSource.NETWORK_VOLUME, network_volume_bandwidth_gb_s=1.0)
    result = run(endpoint("a", cold=volume, min_workers=2), hosts=HOST, duration_s=50.0)
    assert result.workers["model_load_s"].tolist() == [8.0, 8.0]
    local = ColdStartProfile(model_size_gb=4.0, model_source=ModelSource.HOST_CACHE, host_cache_bandwidth_gb_s=1.0)
    result = run(endpoint("a", cold=local, min_workers=2), hosts=HOST, duration_s=50.0)
    assert result.workers["model_load_s"].tolist() == [4.0, 4.0]


def test_a_worker_stopped_while_initialising_gives_its_cpu_share_back() -> None:
    # The pool itself, driven by a hand-run timer: two 10-s tasks on one core, one cancelled at 4 s.
    from gpuserve.sim.hosts import SharedPool

    events: list[tuple[float, object]] = []
    clock = {"t": 0.0}

    def after(delay_s: float, fn: object, value: object) -> None:
        events.append((clock["t"] + delay_s, (fn, value)))

    pool = SharedPool(1.0, after, lambda: clock["t"])
    done: dict[str, float] = {}
    pool.add(10.0, lambda t: done.setdefault("a", t))
    token = pool.add(10.0, lambda t: done.setdefault("b", t))
    clock["t"] = 4.0  # both had 2 s of work each by now; b goes
    pool.cancel(token)
    # Fire the pool's latest planned wake (earlier ones are stale).
    while events:
        events.sort(key=lambda e: e[0])
        at, (fn, value) = events.pop(0)
        clock["t"] = at
        fn(type("Ev", (), {"value": value})())  # type: ignore[operator]
    assert done == {"a": 12.0}


LOGNORMAL = ColdStartProfile(runtime_init_s=2.0, distributions={"runtime_init_s": {"kind": "lognormal", "sigma": 0.5}})


def _inits(seed: int, profile: ColdStartProfile = LOGNORMAL) -> list[float]:
    result = run(
        endpoint("a", cold=profile, workload=Poisson(0.05), service=Constant(1.0), idle_timeout_s=1.0, max_workers=1),
        duration_s=2000.0,
        seed=seed,
    )
    return result.workers.sort_values("created_s")["runtime_init_s"].tolist()


def test_stage_distributions_sample_reproducibly_from_the_seed() -> None:
    first, again, other = _inits(3), _inits(3), _inits(4)
    assert len(first) > 20
    assert first == again
    assert first != other
    assert len(set(first)) == len(first)  # drawn, not one number
    assert 1.5 < float(np.median(first)) < 2.7  # around the profile's 2 s


def test_cold_start_draws_do_not_shift_arrivals_or_service_times() -> None:
    plain = ColdStartProfile(runtime_init_s=2.0)
    a = run(endpoint("a", cold=plain, workload=Poisson(0.05), service=Exponential(3.0), idle_timeout_s=1.0), duration_s=500.0, seed=1)
    b = run(endpoint("a", cold=LOGNORMAL, workload=Poisson(0.05), service=Exponential(3.0), idle_timeout_s=1.0), duration_s=500.0, seed=1)
    assert a.jobs["arrival_s"].tolist() == b.jobs["arrival_s"].tolist()
    # Execution times are end - start, so compare them to rounding: the same draws, other start instants.
    assert a.jobs["execution_s"].tolist() == pytest.approx(b.jobs["execution_s"].tolist(), rel=1e-9)


def test_empirical_stage_draws_only_measured_samples_and_median_without_a_stream() -> None:
    samples = (0.2, 0.3, 0.9)
    profile = ColdStartProfile(distributions={"platform_start_s": {"kind": "empirical", "samples_s": list(samples)}})
    drawn = set(_inits(5, profile))
    assert drawn == {0.0}  # runtime init is not distributed here
    starts = {profile.stages(image_wait_s=None, flash=False, rng=np.random.default_rng(s)).platform_start_s for s in range(40)}
    assert starts == set(samples)
    assert profile.stages(image_wait_s=None, flash=False).platform_start_s == 0.3


def test_bad_distributions_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"distributions\.boot_s"):
        ColdStartProfile(distributions={"boot_s": {"kind": "lognormal", "sigma": 1.0}})
    with pytest.raises(ConfigError, match=r"distributions\.runtime_init_s\.sigma"):
        ColdStartProfile(distributions={"runtime_init_s": {"kind": "lognormal", "sigma": -1.0}})
    with pytest.raises(ConfigError, match="samples_s"):
        StageDist("empirical")
    with pytest.raises(ConfigError, match="cpu_cores"):
        HostSpec("h", cpu_cores=0)


def test_a_scenario_file_sets_stage_distributions_and_host_cores(tmp_path: object) -> None:
    from pathlib import Path

    from gpuserve.experiments import load_scenario

    path = Path(str(tmp_path)) / "s.yaml"
    path.write_text(
        "name: s\nduration_s: 10\nhosts: [{name: h, gpus: {A100: 2}, cpu_cores: 2}]\n"
        "endpoints:\n  - id: e\n    gpu_type: A100\n    workload: {kind: poisson, rate_per_s: 1}\n"
        "    cold_start:\n      runtime_init_s: 1.5\n"
        "      distributions:\n        runtime_init_s: {kind: lognormal, sigma: 0.2}\n"
        "        platform_start_s: {kind: empirical, samples_s: [0.1, 0.2]}\n"
    )
    config = load_scenario(path).config
    assert config.hosts[0].cpu_cores == 2
    dists = config.endpoints[0].cold_start.distributions
    assert dists["runtime_init_s"] == StageDist("lognormal", sigma=0.2)
    assert dists["platform_start_s"] == StageDist("empirical", samples_s=(0.1, 0.2))
    path.write_text(path.read_text().replace("sigma: 0.2", "sigma: -1"))
    with pytest.raises(ConfigError, match="sigma"):
        load_scenario(path)


def test_background_load_on_the_cores_shrinks_what_another_start_costs() -> None:
    # 2 cores with 2 other runnable processes: a lone start gets 2/3 of a core (already in its
    # measured 3 s), two starts get 2/4 each, so each runs at 0.75 of its lone speed: 4 s.
    cold = ColdStartProfile(runtime_init_s=3.0)
    host = (HostSpec("h", {"A100": 8}, cpu_cores=2, cpu_background=2.0),)
    result = run(endpoint("a", cold=cold, min_workers=2), hosts=host, duration_s=50.0)
    assert result.workers["ready_s"].tolist() == [pytest.approx(4.0)] * 2
    alone = run(endpoint("a", cold=cold, min_workers=1), hosts=host, duration_s=50.0)
    assert alone.workers["ready_s"].tolist() == [3.0]
