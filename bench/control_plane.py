"""Control-plane benchmark: /runsync latency and end-to-end throughput through gpuserve's real queue and separate
worker processes, side by side with the runpod package's own local test server serving the same handler.

    .venv/bin/python bench/control_plane.py [--seq 1000] [--jobs 4000] [--clients 32] [--workers 2] [--repeat 1]

What runs, all on this machine:
- gpuserve: `gpuserve serve` in its own process (SQLite store, process backend); `--workers` worker
  processes on gpuserve's worker SDK (min_workers keeps them warm); the client is this process.
- runpod: `python handler.py --rp_serve_api` (runpod 1.12.0's FastAPI dev server), which runs the
  handler inside the server process: no queue, no worker hop, nothing stored.
- cold start: a second gpuserve endpoint at zero workers; the first /runsync's delayTime is the time from
  submission until a freshly spawned worker process took the job.
- `--repeat N` runs both N times, alternating, and reports each figure's median (the host may be
  shared: single runs move with its load), with the 1-minute load average before and after each run.
- server CPU per job: the gpuserve server process's own CPU time (user + system, from /proc, worker
  processes not included) over the sequential and the throughput runs, divided by their jobs.
- `--baseline PATH` also runs the gpuserve checkout at PATH (e.g. a `git worktree` of an earlier
  commit) in the same alternation, as a third column: before-and-after figures from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench"

HANDLER_GPUSERVE = """from gpuserve import serverless


def handler(job):
    return job["input"]


serverless.start({"handler": handler})
"""

HANDLER_RUNPOD = """import runpod


def handler(job):
    return job["input"]


runpod.serverless.start({"handler": handler})
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def sequential(base: str, path: str, n: int, headers: dict[str, str]) -> dict[str, float]:
    """n /runsync calls one after another on one keep-alive connection; latencies in ms."""
    lat: list[float] = []
    delay: list[float] = []
    execution: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        for i in range(n + 50):
            t0 = time.perf_counter()
            r = c.post(path, json={"input": {"i": i}})
            dt = (time.perf_counter() - t0) * 1000
            body = r.json()
            if r.status_code != 200 or body.get("status") != "COMPLETED" or body.get("output") != {"i": i}:
                raise RuntimeError(f"bad reply {r.status_code}: {body}")
            if i >= 50:  # warm-up
                lat.append(dt)
                if "executionTime" in body:  # gpuserve: queue wait and take-to-result, both server-side
                    delay.append(body["delayTime"])
                    execution.append(body["executionTime"])
    out = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.fmean(lat)}
    if execution:
        out["delay_p50_ms"] = pct(delay, 50)
        out["execution_p50_ms"] = pct(execution, 50)
    return out


async def _throughput(base: str, path: str, jobs: int, clients: int, headers: dict[str, str]) -> float:
    # aiohttp rather than httpx here: the load generator shares the 2 cores with what it measures,
    # and aiohttp spends about a third of httpx's CPU per request.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as c:
        counter = iter(range(jobs))

        async def post(i: int) -> None:
            async with c.post(path, json={"input": {"i": i}}) as r:
                body = await r.json()
            if body.get("status") != "COMPLETED" or body.get("output") != {"i": i}:
                raise RuntimeError(f"bad reply: {body}")

        async def client() -> None:
            for i in counter:
                await post(i)

        await asyncio.gather(*(post(-1) for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return jobs / (time.perf_counter() - t0)


def throughput(base: str, path: str, jobs: int, clients: int, headers: dict[str, str]) -> float:
    return asyncio.run(_throughput(base, path, jobs, clients, headers))


def run_gpuserve(args: argparse.Namespace, work: Path, root: Path = ROOT) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "handler.py").write_text(HANDLER_GPUSERVE)
    port = free_port()
    (work / "endpoints.yaml").write_text(
        json.dumps(
            {
                "server": {"heartbeat_interval_s": 10},
                "api_keys": [KEY],
                "endpoints": [
                    {
                        "id": "echo",
                        "handler": "handler.py",
                        "concurrency_per_worker": args.concurrency,
                        "scaling": {"min_workers": args.workers, "max_workers": args.workers, "idle_timeout_s": 60},
                        **({"policy": {"name": args.policy}} if args.policy else {}),
                    },
                    {
                        "id": "cold",
                        "handler": "handler.py",
                        "scaling": {"min_workers": 0, "max_workers": 1, "idle_timeout_s": 600},
                    },
                ],
            }
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gpuserve.cli", "serve", str(work / "endpoints.yaml"), "--port", str(port),
         "--data-dir", str(work / "data"), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "wb"),
        cwd=root,
        # The server and the workers it spawns import gpuserve from `root`, not from the install.
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        wait_http(f"{base}/v2/echo/health", headers=headers)
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/v2/echo/health", headers=headers).json()["workers"]["idle"] < args.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not become ready")
            time.sleep(0.1)
        cold = httpx.post(f"{base}/v2/cold/runsync", json={"input": {"i": 0}}, headers=headers, timeout=60).json()
        cpu0 = cpu_s(server.pid)
        seq = sequential(base, "/v2/echo/runsync", args.seq, headers)
        cpu1 = cpu_s(server.pid)
        tput = throughput(base, "/v2/echo/runsync", args.jobs, args.clients, headers)
        cpu2 = cpu_s(server.pid)
        # The sequential run also makes 50 warm-up calls; the throughput run `clients` warm-up calls.
        return {
            **seq,
            "jobs_per_s": tput,
            "cold_start_to_first_job_ms": cold.get("delayTime"),
            "server_cpu_ms_per_job_seq": (cpu1 - cpu0) * 1000 / (args.seq + 50),
            "server_cpu_ms_per_job_tput": (cpu2 - cpu1) * 1000 / (args.jobs + args.clients),
        }
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def run_runpod(args: argparse.Namespace, work: Path) -> dict[str, object]:
    (work / "handler_rp.py").write_text(HANDLER_RUNPOD)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env["RUNPOD_LOG_LEVEL"] = "ERROR"
    proc = subprocess.Popen(
        [sys.executable, str(work / "handler_rp.py"), "--rp_serve_api", "--rp_api_port", str(port),
         "--rp_api_host", "127.0.0.1", "--rp_log_level", "ERROR"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "runpod.log", "wb"),
        env=env,
        cwd=work,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/docs")
        seq = sequential(base, "/runsync", args.seq, {})
        tput = throughput(base, "/runsync", args.jobs, args.clients, {})
        return {**seq, "jobs_per_s": tput}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=1000, help="sequential /runsync calls (after 50 warm-up)")
    ap.add_argument("--jobs", type=int, default=4000, help="jobs in the throughput run")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients in the throughput run")
    ap.add_argument("--workers", type=int, default=2, help="gpuserve worker processes")
    ap.add_argument("--concurrency", type=int, default=1, help="jobs each gpuserve worker runs at once (batch takes)")
    ap.add_argument("--repeat", type=int, default=1, help="run both this many times, alternating; report medians")
    ap.add_argument("--policy", default=None, help="the echo endpoint's policy (default: the Runpod scaler's, queue delay)")
    ap.add_argument("--baseline", type=Path, default=None, help="another gpuserve checkout to run in the same alternation")
    args = ap.parse_args()
    runs_ours: list[dict[str, object]] = []
    runs_theirs: list[dict[str, object]] = []
    runs_base: list[dict[str, object]] = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="gpuserve-bench-") as tmp:
            work = Path(tmp)
            load_before = os.getloadavg()[0]
            runs_ours.append(run_gpuserve(args, work))
            runs_theirs.append(run_runpod(args, work))
            if args.baseline is not None:
                runs_base.append(run_gpuserve(args, work / "baseline", args.baseline.resolve()))
            load_after = os.getloadavg()[0]
        o, t = runs_ours[-1], runs_theirs[-1]
        print(
            f"run {i + 1}/{args.repeat}: load {load_before:.2f} -> {load_after:.2f}; gpuserve p50 {o['p50_ms']:.2f} "
            f"p99 {o['p99_ms']:.2f} ms {o['jobs_per_s']:.0f} jobs/s cold {o['cold_start_to_first_job_ms']} ms; "
            f"server CPU {o['server_cpu_ms_per_job_seq']:.3f}/{o['server_cpu_ms_per_job_tput']:.3f} ms/job; "
            f"runpod local p50 {t['p50_ms']:.2f} p99 {t['p99_ms']:.2f} ms {t['jobs_per_s']:.0f} jobs/s"
            + (
                f"; baseline p50 {runs_base[-1]['p50_ms']:.2f} ms {runs_base[-1]['jobs_per_s']:.0f} jobs/s "
                f"server CPU {runs_base[-1]['server_cpu_ms_per_job_seq']:.3f}/{runs_base[-1]['server_cpu_ms_per_job_tput']:.3f} ms/job"
                if runs_base
                else ""
            ),
            flush=True,
        )
    ours = _medians(runs_ours)
    theirs = _medians(runs_theirs)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.repeat > 1:
        print(f"medians of {args.repeat} runs")
    print(f"{'':34}{'gpuserve':>12}{'runpod local':>14}{'ratio':>8}")
    rows = [("sequential /runsync p50 (ms)", "p50_ms"), ("sequential /runsync p99 (ms)", "p99_ms"),
            ("sequential /runsync mean (ms)", "mean_ms"), (f"throughput, {args.clients} clients (jobs/s)", "jobs_per_s")]
    for label, key in rows:
        a, b = float(ours[key]), float(theirs[key])  # type: ignore[arg-type]
        print(f"{label:34}{a:12.2f}{b:14.2f}{a / b:8.2f}")
    print(
        f"gpuserve split of a /runsync (p50): queued until taken {ours.get('delay_p50_ms')} ms, "
        f"taken until the worker's result arrived {ours.get('execution_p50_ms')} ms"
    )
    print(f"gpuserve process worker, cold start to first job: {ours.get('cold_start_to_first_job_ms')} ms (delayTime)")
    print(
        f"gpuserve server CPU per job: {float(ours['server_cpu_ms_per_job_seq']):.3f} ms sequential, "  # type: ignore[arg-type]
        f"{float(ours['server_cpu_ms_per_job_tput']):.3f} ms under {args.clients} clients"  # type: ignore[arg-type]
    )
    base = _medians(runs_base) if runs_base else {}
    if base:
        print(f"{'baseline ' + str(args.baseline):34}{'this':>12}{'baseline':>14}{'ratio':>8}")
        for label, key in [*rows, ("server CPU ms/job, sequential", "server_cpu_ms_per_job_seq"), ("server CPU ms/job, throughput", "server_cpu_ms_per_job_tput")]:
            a, b = float(ours[key]), float(base[key])  # type: ignore[arg-type]
            print(f"{label:34}{a:12.3f}{b:14.3f}{a / b:8.2f}")
    print(json.dumps({"gpuserve": ours, "runpod_local": theirs, "baseline": base, "args": vars(args) | {"baseline": str(args.baseline)},
                      "runs": {"gpuserve": runs_ours, "runpod_local": runs_theirs, "baseline": runs_base}}))


def _medians(runs: list[dict[str, object]]) -> dict[str, object]:
    keys = [k for k in runs[0] if all(isinstance(r.get(k), int | float) for r in runs)]
    return {k: statistics.median(float(r[k]) for r in runs) for k in keys}  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
