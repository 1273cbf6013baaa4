"""Payload memory: the server's RSS while it holds many large queued jobs, then every job's exact round trip.

    .venv/bin/python bench/payload_memory.py [--jobs 60] [--mb 4] [--workers 2] [--cap-mb 100] [--baseline PATH]

A real `gpuserve serve` (SQLite store, process backend) with one echo endpoint at max_workers 0:
`--jobs` /run calls each carry a distinct input of `--mb` megabytes (decimal), so they all wait in
the queue. The server's RSS (VmRSS from /proc) is read before, after every submit and at the end
of the submits, with its peak (VmHWM). Then `scaling.max_workers` is raised to `--workers` (the
admin API, as `gpuserve endpoints update` does) and every job is waited for: its output must equal
its input byte for byte (the handler echoes it). `lost` counts jobs that did not end COMPLETED with
their exact input as output; it must be 0. `--cap-mb` sets `server.limits.max_payload_bytes_in_memory`
(a checkout without the setting ignores it). `--baseline PATH` runs another gpuserve checkout the
same way after this one, for the same figures from code that holds every payload in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench"
ADMIN = "sk-bench-admin"
MB = 1_000_000

HANDLER = """from gpuserve import serverless


def handler(job):
    return job["input"]


serverless.start({"handler": handler})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def job_input(i: int, size: int) -> dict[str, object]:
    """A distinct input of about `size` bytes: a hex pattern seeded by its number."""
    seed = hashlib.sha256(str(i).encode()).hexdigest()
    return {"i": i, "blob": (seed * (size // len(seed) + 1))[:size]}


def run(args: argparse.Namespace, root: Path, work: Path) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "handler.py").write_text(HANDLER)
    limits: dict[str, object] = {"max_queued_jobs": args.jobs + 10}
    if (root / "gpuserve" / "store" / "spill.py").exists():
        limits["max_payload_bytes_in_memory"] = args.cap_mb * MB
    config = {
        "server": {"heartbeat_interval_s": 5, "limits": limits, "admin_keys": [ADMIN],
                   "rate_limits": {"run": None, "status": None}},
        "api_keys": [KEY],
        "endpoints": [{"id": "big", "handler": "handler.py", "python": sys.executable,
                       "scaling": {"min_workers": 0, "max_workers": 0, "idle_timeout_s": 60}}],
    }
    (work / "endpoints.yaml").write_text(json.dumps(config))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gpuserve.cli", "serve", str(work / "endpoints.yaml"), "--port", str(port),
         "--data-dir", str(work / "data"), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "wb"), cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=f"{base}/v2/big", headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        size = int(args.mb * MB)
        rss0 = proc_kb(server.pid, "VmRSS")
        ids: dict[str, int] = {}
        t0 = time.monotonic()
        for i in range(args.jobs):
            r = client.post("/run", json={"input": job_input(i, size)})
            r.raise_for_status()
            ids[r.json()["id"]] = i
        submit_s = time.monotonic() - t0
        rss_queued = proc_kb(server.pid, "VmRSS")
        hwm_queued = proc_kb(server.pid, "VmHWM")
        r = httpx.patch(f"{base}/api/endpoints/big", json={"set": {"scaling.max_workers": args.workers}},
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        r.raise_for_status()
        t1 = time.monotonic()
        pending, lost, deadline = dict(ids), 0, time.monotonic() + args.timeout_s
        while pending and time.monotonic() < deadline:
            for job_id, i in list(pending.items()):
                body = client.get(f"/status/{job_id}").json()
                if body["status"] in ("IN_QUEUE", "IN_PROGRESS"):
                    continue
                del pending[job_id]
                if body["status"] != "COMPLETED" or body.get("output") != job_input(i, size):
                    lost += 1
            time.sleep(0.2)
        lost += len(pending)
        return {
            "checkout": str(root),
            "jobs": args.jobs,
            "input_mb": args.mb,
            "queued_mb": round(args.jobs * size / MB),
            "rss_start_mib": round(rss0 / 1024),
            "rss_all_queued_mib": round(rss_queued / 1024),
            "rss_peak_while_queuing_mib": round(hwm_queued / 1024),
            "rss_peak_mib": round(proc_kb(server.pid, "VmHWM") / 1024),
            "rss_end_mib": round(proc_kb(server.pid, "VmRSS") / 1024),
            "submit_s": round(submit_s, 1),
            "drain_s": round(time.monotonic() - t1, 1),
            "lost": lost,
        }
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--mb", type=float, default=4.0, help="input size per job, decimal megabytes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cap-mb", type=int, default=100, help="server.limits.max_payload_bytes_in_memory, MB")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="how long the jobs may take once workers run")
    ap.add_argument("--baseline", type=Path, default=None, help="another gpuserve checkout, run the same way after")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="gpuserve-payload-mem-") as tmp:
        load = os.getloadavg()[0]
        results.append(run(args, ROOT, Path(tmp) / "this"))
        if args.baseline is not None:
            results.append(run(args, args.baseline.resolve(), Path(tmp) / "baseline"))
        print(json.dumps({"load_1m_before": load, "load_1m_after": os.getloadavg()[0], "runs": results}, indent=1))
        if any(r["lost"] for r in results):
            sys.exit(1)


if __name__ == "__main__":
    main()
