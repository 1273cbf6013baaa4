"""Trace-scale replay: a day of the Azure Functions 2019 format, 1,000 functions and 10 million invocations.

Generates the three 2019 files (invocations per minute, duration percentiles, app memory) with
heavy-tailed popularity and a diurnal swell, then times each phase of a replay through the
full engine: reading and building the scenario (one endpoint per function, each with its own
duration percentiles and memory; one request per worker and a fixed 10-minute keep-alive, the
trace paper's baseline), drawing arrivals and the simulation (with `--jobs N` > 1 the endpoints,
which share nothing here, run in N processes: gpuserve.sim.shards, records merged to equal one
process's), and the per-endpoint summary (`--records all`: every table as DataFrames too).
Peak memory is each process's maximum resident set (this one's, each shard's, and their sum,
an upper bound on what was resident at once). The peer, in the same run and on the same file,
is the invocation reader gpuserve had before gpuserve.sim.traces (the csv module, one Python
tuple of counts per row).

    .venv/bin/python bench/trace_scale.py [--functions 1000] [--invocations 10000000] [--minutes 1440]
        [--jobs N] [--records summary|all]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from gpuserve.config.scenario import scenario_from_dict
from gpuserve.sim.engine import Simulation
from gpuserve.sim.records import build_result, summary_of
from gpuserve.sim.shards import merge_records, plan_shards, run_parts
from gpuserve.sim.traces.azure2019 import (
    read_invocations,
    write_synthetic,
    write_synthetic_durations,
    write_synthetic_memory,
)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class TreeRss:
    """Samples the resident memory of this process and its children (Linux /proc) every 0.1 s; keeps the largest sum.

    Each process's own peak overstates what was resident at once (the shards peak while
    simulating, this process while merging, after they exit); this is the sum at each instant."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_kib(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _tree(self) -> list[int]:
        pids, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in task.read_text().split()]
                except OSError:
                    pass
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kib = max(self.peak_kib, sum(self._rss_kib(p) for p in self._tree()))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 2**20


def previous_reader(path: Path) -> int:
    """The reader before gpuserve.sim.traces, as it was: one tuple of ints per row; returns the total."""
    total = 0
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        for row in reader:
            if len(row) != len(header):
                raise ValueError("bad row")
            counts = tuple(int(c) for c in row[4:])
            total += sum(counts)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--invocations", type=int, default=10_000_000)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--records", choices=("summary", "all"), default="summary",
                        help="summary: the per-endpoint summary only (as `--records summary`); all: every table as DataFrames too")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes to shard the endpoints over (1: the whole run in this process)")
    parser.add_argument("--dir", type=Path, default=None, help="where the generated files go (default: a temporary folder)")
    args = parser.parse_args()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="trace_scale_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inv_path = write_synthetic(
        folder / "invocations_per_function_md.anon.d01.csv", args.functions, args.seed, args.minutes, args.invocations
    )
    inv = read_invocations(inv_path)
    write_synthetic_durations(folder / "function_durations_percentiles.anon.d01.csv", inv, args.seed)
    write_synthetic_memory(folder / "app_memory_percentiles.anon.d01.csv", inv, args.seed)
    total = int(inv.counts.sum())
    del inv
    print(f"generated {args.functions:,} functions, {total:,} invocations over {args.minutes} minutes in {folder} "
          f"({time.perf_counter() - t0:.1f} s, not counted)")

    t_old = time.perf_counter()
    assert previous_reader(inv_path) == total
    old_read_s = time.perf_counter() - t_old
    t_new = time.perf_counter()
    assert int(read_invocations(inv_path).counts.sum()) == total
    new_read_s = time.perf_counter() - t_new

    raw = {
        "name": "trace-scale",
        "seed": args.seed,
        # The trace's platform has no account-wide cap and no spike workers: one worker per
        # unserved request, as the baseline below assumes (Runpod's defaults would cap it at 5).
        "account_max_workers": None,
        "billing": {"prices_usd_per_gpu_s": {"A10G": 0.00031}},
        "trace": {
            "format": "azure2019",
            "path": inv_path.name,
            "durations_path": "function_durations_percentiles.anon.d01.csv",
            "memory_path": "app_memory_percentiles.anon.d01.csv",
            # The trace's own baseline (Shahrad et al., ATC 2020): one request per instance and a
            # fixed 10-minute keep-alive.
            "endpoint": {
                "gpu_type": "A10G",
                "scaling": {"max_workers": 10_000, "idle_timeout_s": 600, "scaler": "request_count", "scaler_value": 1,
                            "extra_workers": 0},
                "policy": {"name": "fixed_keepalive", "params": {"keep_alive_s": 600}},
            },
        },
    }
    phases: dict[str, float] = {}
    tree = TreeRss() if Path("/proc/self/task").is_dir() else None
    cpu0 = time.process_time()
    t = time.perf_counter()
    scenario = scenario_from_dict(raw, folder)
    phases["read + build scenario"] = time.perf_counter() - t
    config = scenario.config
    child_peaks_kib: list[int] = []
    shard_cpu = shard_jobs = ""
    if args.jobs > 1:
        shards = plan_shards(config, args.jobs)
        t = time.perf_counter()
        parts = run_parts(config, shards)
        phases[f"draw + simulate, {len(shards)} processes"] = time.perf_counter() - t
        child_peaks_kib = [p.peak_rss_kib for p in parts]
        shard_cpu = ", ".join(f"{p.cpu_s:.1f}" for p in parts)
        shard_jobs = ", ".join(f"{len(p.records.job_arrival_s):,}" for p in parts)
        t = time.perf_counter()
        records = merge_records(config, parts)
        del parts
        phases["merge the shards' records"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        sim = Simulation(config)
        phases["draw arrivals"] = time.perf_counter() - t
        t = time.perf_counter()
        records = sim.run()
        phases["simulate"] = time.perf_counter() - t
        del sim
    t = time.perf_counter()
    if args.records == "all":
        result = build_result(records)
        summary = result.summary
        phases["records (every table) + summary"] = time.perf_counter() - t
        workers = len(result.workers)
        del result
    else:
        summary = summary_of(records)
        phases["summary (no per-row tables)"] = time.perf_counter() - t
        workers = len(records.workers)
    wall_s = sum(phases.values())
    tree_peak_gib = tree.stop() if tree is not None else math.nan
    jobs = int(summary["jobs"].iloc[-1])
    sim_s = sum(v for k, v in phases.items() if "simulate" in k)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"endpoints {len(scenario.config.endpoints):,}, jobs {jobs:,}, workers started {workers:,}, "
          f"controller calls {records.controller_calls:,}")
    total = summary.iloc[-1]
    print(f"summary (ALL): p50 {total['latency_p50_s']:.4f} s, p99 {total['latency_p99_s']:.4f} s, "
          f"cold-start fraction {total['cold_start_fraction']:.5f}, GPU-s billed {total['gpu_s_billed']:,.1f}")
    for name, seconds in phases.items():
        print(f"  {name:<36} {seconds:8.1f} s")
    if shard_cpu:
        print(f"  shards: jobs {shard_jobs}; CPU seconds each (user + system, to the records sent) {shard_cpu}")
    print(f"  this process's CPU seconds over the phases: {time.process_time() - cpu0:.1f}")
    children = ""
    if child_peaks_kib:
        total = peak_rss_gib() + sum(child_peaks_kib) / 2**20
        children = (f"; shard processes {', '.join(f'{k / 2**20:.2f}' for k in child_peaks_kib)} GiB; "
                    f"all processes' peaks summed {total:.2f} GiB")
    children += f"; all processes at once (sampled every 0.1 s) {tree_peak_gib:.2f} GiB"
    print(f"wall {wall_s:.1f} s ({jobs / sim_s:,.0f} simulated jobs/s), "
          f"peak memory: this process {peak_rss_gib():.2f} GiB{children}   (targets: <= 120 s, <= 4 GiB)")
    print(f"invocation file alone: gpuserve.sim.traces {new_read_s:.2f} s, the previous csv-module reader {old_read_s:.2f} s "
          f"({old_read_s / new_read_s:.1f}x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
