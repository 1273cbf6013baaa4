"""Writing a million job records: CSV against parquet, wall time and size, and reading them back with load_results.

One run of scenarios/quickstart.yaml scaled to --jobs jobs (Poisson at 10 req/s, up to 64
workers), simulated once; then its records (jobs, intervals, parked, workers, summary) are
written alternately as CSV and as parquet, --repeat times each, and read back.

    .venv/bin/python bench/records_output.py [--jobs 1000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import gpuserve
from gpuserve.experiments.run import write_run
from gpuserve.sim.records import SimResult

ROOT = Path(__file__).resolve().parents[1]
RATE_PER_S = 10.0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    overrides = {
        "duration_s": args.jobs / RATE_PER_S,
        "endpoint.workload": {"kind": "poisson", "rate_per_s": RATE_PER_S},
        "endpoint.scaling.max_workers": 64,
        "hosts": [],
    }
    t0 = time.perf_counter()
    result = gpuserve.simulate(ROOT / "scenarios" / "quickstart.yaml", overrides, plots=False)
    assert isinstance(result, SimResult)
    print(f"simulated {len(result.jobs):,} jobs, {len(result.intervals):,} intervals in {time.perf_counter() - t0:.1f} s")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    work = Path(tempfile.mkdtemp(prefix="gpuserve-records-"))
    timings: dict[str, dict[str, list[float]]] = {f: {"write": [], "read": []} for f in ("csv", "parquet")}
    sizes: dict[str, int] = {}
    try:
        for _ in range(args.repeat):
            for fmt in ("csv", "parquet"):
                out = work / fmt
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                write_run(result, out, fmt, plots=False)  # type: ignore[arg-type]
                timings[fmt]["write"].append(time.perf_counter() - t0)
                sizes[fmt] = folder_bytes(out)
                t0 = time.perf_counter()
                loaded = gpuserve.load_results(out)
                timings[fmt]["read"].append(time.perf_counter() - t0)
                assert loaded.jobs is not None and len(loaded.jobs) == len(result.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after {os.getloadavg()[0]:.1f}")
    print("| format | write s (median) | runs | MB on disk | load_results s (median) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for fmt in ("csv", "parquet"):
        w, r = timings[fmt]["write"], timings[fmt]["read"]
        runs = ", ".join(f"{x:.1f}" for x in w)
        print(f"| {fmt} | {statistics.median(w):.1f} | {runs} | {sizes[fmt] / 1e6:.0f} | {statistics.median(r):.1f} |")
    ratio_w = statistics.median(timings["csv"]["write"]) / statistics.median(timings["parquet"]["write"])
    ratio_r = statistics.median(timings["csv"]["read"]) / statistics.median(timings["parquet"]["read"])
    print(f"parquet: {ratio_w:.1f}x faster to write, {sizes['csv'] / sizes['parquet']:.1f}x smaller, {ratio_r:.1f}x faster to read")


if __name__ == "__main__":
    main()
