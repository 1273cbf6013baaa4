"""Each trace reader on a generated file of the real format, and the traced service models in the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuserve.config.scenario import scenario_from_dict
from gpuserve.core.errors import ConfigError
from gpuserve.sim.engine import Simulation
from gpuserve.sim.records import build_result
from gpuserve.sim.service import Batched, BatchingCurve, Constant, Percentiles, Tokens
from gpuserve.sim.traces import (
    read_arrivals_csv,
    read_durations,
    read_invocations,
    read_invocations_2021,
    read_llm_trace,
    read_memory,
)
from gpuserve.sim.traces.azure2019 import write_synthetic, write_synthetic_durations, write_synthetic_memory
from gpuserve.sim.traces.azure2021 import write_synthetic_2021
from gpuserve.sim.traces.azure_llm import write_synthetic_llm
from gpuserve.sim.workload import AzureCounts, TraceReplay
from tests.sim.sim_builders import endpoint, run

TEMPLATE = {
    "gpu_type": "A10G",
    "scaling": {"max_workers": 4, "idle_timeout_s": 30, "scaler": "request_count", "scaler_value": 1},
    "service": {"kind": "constant", "value_s": 1.0},
}


def _azure2019(tmp_path: Path) -> tuple[Path, Path, Path]:
    inv = write_synthetic(tmp_path / "invocations_per_function_md.anon.d01.csv", n_functions=6, seed=2, minutes=60, total_invocations=3000)
    table = read_invocations(inv)
    dur = write_synthetic_durations(tmp_path / "function_durations_percentiles.anon.d01.csv", table, seed=2)
    mem = write_synthetic_memory(tmp_path / "app_memory_percentiles.anon.d01.csv", table, seed=2)
    return inv, dur, mem


def test_azure2019_durations_and_memory_files_join_each_function(tmp_path: Path) -> None:
    inv_path, dur_path, mem_path = _azure2019(tmp_path)
    inv = read_invocations(inv_path)
    durations = read_durations(dur_path)
    memory = read_memory(mem_path)
    key = (inv.owners[0], inv.apps[0], inv.functions[0])
    model = durations[key]
    assert model.probs == (0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0)
    draws = model.sample(np.random.default_rng(0), 200_000)
    # Draws follow the file's percentiles (ms in the file, seconds here).
    for p, value_s in zip(model.probs[1:-1], model.values_s[1:-1], strict=True):
        assert np.quantile(draws, p) == pytest.approx(value_s, rel=0.02)
    assert draws.mean() == pytest.approx(model.mean_s, rel=0.01)
    assert memory[key[:2]] > 100 / 1024
    apps_with_three = {a for a in inv.apps if inv.apps.count(a) == 3}
    assert apps_with_three  # three functions share each app in the generated file


def test_azure2019_trace_scenario_with_durations_memory_and_lambda_billing(tmp_path: Path) -> None:
    _azure2019(tmp_path)
    raw = {
        "billing": {"preset": "aws_lambda"},
        "trace": {
            "format": "azure2019",
            "path": "invocations_per_function_md.anon.d01.csv",
            "durations_path": "function_durations_percentiles.anon.d01.csv",
            "memory_path": "app_memory_percentiles.anon.d01.csv",
            "start_s": 600,
            "window_s": 1200,
            "max_functions": 4,
            "endpoint": TEMPLATE,
        },
    }
    sc = scenario_from_dict(raw, tmp_path)
    inv = read_invocations(tmp_path / "invocations_per_function_md.anon.d01.csv")
    memory = read_memory(tmp_path / "app_memory_percentiles.anon.d01.csv")
    assert sc.config.duration_s == 1200 and len(sc.config.endpoints) == 4
    first = sc.config.endpoints[0]
    assert isinstance(first.service, Percentiles) and isinstance(first.workload, AzureCounts)
    busiest = int(np.argmax(inv.counts[:, 10:30].sum(axis=1)))
    assert first.spec.endpoint_id == f"fn-{inv.functions[busiest][:10]}"
    assert first.spec.memory_gb == memory[(inv.owners[busiest], inv.apps[busiest])]
    assert np.array_equal(first.workload.counts_per_minute, inv.counts[busiest, 10:30])
    result = build_result(Simulation(sc.config).run())
    jobs = result.jobs[result.jobs["endpoint"] == first.spec.endpoint_id]
    assert len(jobs) == inv.counts[busiest, 10:30].sum()
    assert jobs["execution_s"].between(first.service.values_s[0], first.service.values_s[-1]).all()
    assert result.jobs["gb_s_billed"].sum() > 0  # memory per app billed per GB-second


def test_azure2019_sampling_and_random_selection(tmp_path: Path) -> None:
    _azure2019(tmp_path)
    base = {"format": "azure2019", "path": "invocations_per_function_md.anon.d01.csv", "endpoint": TEMPLATE}
    half = scenario_from_dict({"trace": base | {"sample": 0.5}}, tmp_path)
    w = half.config.endpoints[0].workload
    times = w.arrivals(np.random.default_rng(0), 3600.0)
    assert times.size == pytest.approx(0.5 * int(np.sum(w.counts_per_minute)), rel=0.1)  # type: ignore[attr-defined]
    picks = [
        [e.spec.endpoint_id for e in scenario_from_dict({"trace": base | {"max_functions": 3, "select": "random"}}, tmp_path, seed=s).config.endpoints]
        for s in range(6)
    ]
    assert all(len(p) == 3 for p in picks) and len({tuple(sorted(p)) for p in picks}) > 1


def test_azure2021_each_arrival_runs_for_its_own_duration(tmp_path: Path) -> None:
    path = write_synthetic_2021(tmp_path / "AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt", n_functions=3, invocations=120, span_s=600.0)
    table = read_invocations_2021(path)
    assert table.times_s[0] == 0.0 and np.all(np.diff(table.times_s) >= 0) and len(table.functions) == 3
    raw = {"trace": {"format": "azure2021", "path": path.name, "endpoint": TEMPLATE | {"scaling": TEMPLATE["scaling"] | {"max_workers": 200}}}}
    sc = scenario_from_dict(raw, tmp_path)
    assert all(isinstance(e.workload, TraceReplay) for e in sc.config.endpoints)
    result = build_result(Simulation(sc.config).run())
    assert len(result.jobs) == 120
    for ep in sc.config.endpoints:
        assert isinstance(ep.workload, TraceReplay)
        jobs = result.jobs[result.jobs["endpoint"] == ep.spec.endpoint_id].sort_values("arrival_s", kind="stable")
        assert np.allclose(jobs["arrival_s"], ep.workload.times_s)
        assert np.allclose(jobs["execution_s"], ep.workload.demand["duration_s"])  # not the template's 1 s


def test_azure2021_window_and_max_functions(tmp_path: Path) -> None:
    path = write_synthetic_2021(tmp_path / "t.txt", n_functions=4, invocations=400, span_s=1000.0)
    raw = {"trace": {"format": "azure2021", "path": "t.txt", "start_s": 200, "window_s": 300, "max_functions": 2, "endpoint": TEMPLATE}}
    sc = scenario_from_dict(raw, tmp_path)
    table = read_invocations_2021(path)
    inside = (table.times_s >= 200) & (table.times_s < 500)
    counts = np.bincount(table.function[inside], minlength=4)
    assert sc.config.duration_s == 300 and len(sc.config.endpoints) == 2
    kept = [len(e.workload.times_s) for e in sc.config.endpoints]  # type: ignore[attr-defined]
    assert kept == sorted(counts.tolist(), reverse=True)[:2]
    assert all(float(e.workload.times_s.max()) < 300 for e in sc.config.endpoints)  # type: ignore[attr-defined]


def test_llm_trace_reads_iso_timestamps_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_code.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,4808,10\n"
        "2023-11-16 18:15:50.1805900,100,300\n"
        "2023-11-16 18:15:47.6805900,2000,20\n"
    )
    table = read_llm_trace(path)
    assert table.times_s.tolist() == pytest.approx([0.0, 1.0, 3.5])
    assert table.demand["context_tokens"].tolist() == [4808, 2000, 100]
    assert table.demand["generated_tokens"].tolist() == [10, 20, 300]


def test_token_service_and_batching_curve_on_one_worker() -> None:
    # prefill 1000 tokens/s, decode 10 tokens/s; two requests share one worker (concurrency 2)
    # and each runs at half speed when it starts beside another.
    service = Tokens(1000.0, 10.0, batching=BatchingCurve(((1, 1.0), (2, 0.5))))
    workload = TraceReplay(np.array([0.0, 1.0, 10.0]), {"context_tokens": np.array([1000.0, 2000.0, 500.0]), "generated_tokens": np.array([20.0, 10.0, 5.0])})
    result = run(endpoint(workload=workload, service=service, concurrency=2, max_workers=1, min_workers=1), duration_s=20.0)
    jobs = result.jobs.sort_values("arrival_s")
    # alone: 1 + 2 = 3 s; beside the first: (2 + 1) / 0.5 = 6 s; alone again: 0.5 + 0.5 = 1 s.
    assert jobs["execution_s"].tolist() == pytest.approx([3.0, 6.0, 1.0])
    assert jobs["end_s"].tolist() == pytest.approx([3.0, 7.0, 11.0])


def test_batching_curve_applies_to_any_service_model() -> None:
    service = Batched(Constant(2.0), BatchingCurve(((1, 1.0), (3, 0.5))))
    result = run(endpoint(times=(0.0, 0.0, 0.0), service=service, concurrency=3, max_workers=1, min_workers=1), duration_s=10.0)
    # speeds 1.0, 0.75 (interpolated), 0.5 as the worker fills up
    assert sorted(result.jobs["execution_s"].tolist()) == pytest.approx([2.0, 2.0 / 0.75, 4.0])


def test_llm_trace_scenario_needs_the_token_service(tmp_path: Path) -> None:
    write_synthetic_llm(tmp_path / "llm.csv", requests=50)
    tokens = {"kind": "tokens", "prefill_tokens_per_s": 5000, "decode_tokens_per_s": 40, "batching": {1: 1.0, 8: 0.6}}
    raw = {"trace": {"format": "azure_llm", "path": "llm.csv", "id": "llm", "endpoint": TEMPLATE | {"service": tokens, "concurrency_per_worker": 8}}}
    sc = scenario_from_dict(raw, tmp_path)
    (ep,) = sc.config.endpoints
    assert ep.spec.endpoint_id == "llm" and isinstance(ep.service, Tokens)
    result = build_result(Simulation(sc.config).run())
    table = read_llm_trace(tmp_path / "llm.csv")
    alone_s = table.demand["context_tokens"] / 5000 + table.demand["generated_tokens"] / 40
    execution = result.jobs.sort_values("arrival_s", kind="stable")["execution_s"].to_numpy()
    assert len(execution) == 50 and np.all(execution >= alone_s - 1e-9) and np.all(execution <= alone_s / 0.6 + 1e-9)
    bad = raw | {"trace": raw["trace"] | {"endpoint": TEMPLATE}}  # constant service: no use for tokens
    with pytest.raises(ConfigError, match="cannot time requests that carry only"):
        Simulation(scenario_from_dict(bad, tmp_path).config)


def test_generic_csv_seconds_iso_durations_and_functions(tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("3.0\n1.0\n2.5\n")
    assert read_arrivals_csv(tmp_path / "plain.csv").times_s.tolist() == [0.0, 1.5, 2.0]
    (tmp_path / "iso.csv").write_text("when,ms,fn\n2024-05-10T00:00:01Z,250,a\n2024-05-10T00:00:00.5Z,1000,b\n2024-05-10T00:00:03Z,10,a\n")
    table = read_arrivals_csv(tmp_path / "iso.csv", "when", "ms", "fn", duration_scale=0.001)
    assert table.times_s.tolist() == [0.0, 0.5, 2.5]
    assert table.demand["duration_s"].tolist() == [1.0, 0.25, 0.01]
    assert [table.functions[f] for f in table.function] == ["b", "a", "a"]
    raw = {"trace": {"format": "csv", "path": "iso.csv", "time_column": "when", "duration_column": "ms", "duration_scale": 0.001,
                     "function_column": "fn", "endpoint": TEMPLATE}}
    sc = scenario_from_dict(raw, tmp_path)
    assert [e.spec.endpoint_id for e in sc.config.endpoints] == ["fn-a", "fn-b"]  # busiest first
    result = build_result(Simulation(sc.config).run())
    assert sorted(result.jobs["execution_s"].round(6).tolist()) == [0.01, 0.25, 1.0]


def test_csv_workload_kind_with_durations_window_and_sample(tmp_path: Path) -> None:
    times = np.arange(0.0, 1000.0, 1.0)
    (tmp_path / "t.csv").write_text("t,d\n" + "".join(f"{t},{0.5 + (t % 3)}\n" for t in times))
    ep = {"id": "c", "workload": {"kind": "csv", "path": "t.csv", "column": "t", "duration_column": "d", "start_s": 100, "window_s": 400, "sample": 0.25},
          "service": {"kind": "constant", "value_s": 9.0}, "scaling": {"max_workers": 50}}
    sc = scenario_from_dict({"endpoints": [ep]}, tmp_path)
    (c,) = sc.config.endpoints
    assert isinstance(c.workload, TraceReplay) and c.workload.times_s.size == 400 and c.workload.times_s[0] == 0.0
    result = build_result(Simulation(sc.config).run())
    assert len(result.jobs) == pytest.approx(100, abs=30)
    expected = 0.5 + (result.jobs["arrival_s"].to_numpy() + 100) % 3
    assert np.allclose(result.jobs["execution_s"], expected)


@pytest.mark.parametrize(
    ("trace", "match"),
    [
        ({"format": "azure2021", "path": "bad.csv"}, r"trace\.path .*app,func,end_timestamp,duration"),
        ({"format": "azure_llm", "path": "bad.csv"}, r"trace\.path .*has no column TIMESTAMP"),
        ({"format": "azure2019", "path": "bad.csv"}, r"trace\.path .*HashOwner"),
        ({"format": "azure2021", "path": "bad.csv", "durations_path": "d.csv"}, r"trace\.durations_path is read only with format azure2019"),
        ({"format": "csv", "path": "bad.csv", "time_column": "nope"}, r"trace\.column is not a column"),
        ({"format": "csv", "path": "missing.csv"}, r"trace\.path is not a file"),
    ],
)
def test_trace_errors_name_the_field(tmp_path: Path, trace: dict[str, object], match: str) -> None:
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError, match=match):
        scenario_from_dict({"trace": trace}, tmp_path)


def test_model_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="rise strictly"):
        Percentiles((0.0, 0.5, 0.5, 1.0), (1.0, 2.0, 3.0, 4.0))
    with pytest.raises(ConfigError, match="speeds must be positive"):
        BatchingCurve(((1, 1.0), (4, 0.0)))
    with pytest.raises(ConfigError, match=r"demand\.duration_s"):
        TraceReplay(np.array([0.0, 1.0]), {"duration_s": np.array([1.0])})
