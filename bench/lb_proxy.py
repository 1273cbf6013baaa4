"""Load-balancing proxy benchmark: a trivial FastAPI worker behind gpuserve's proxy against the same worker hit directly.

    .venv/bin/python bench/lb_proxy.py [--seq 2000] [--seconds 5] [--clients 32] [--rounds 3]

What runs, all on this machine:
- `gpuserve serve` in its own process with one load-balancing endpoint (min_workers 1, no API
  key, max_concurrency above --clients so nothing is held), whose worker is a FastAPI app under
  uvicorn (httptools, uvloop) answering `GET /hello` with a small JSON body.
- the client is this process (aiohttp, one pooled session per target): `direct` is the worker's
  own port (it reports it), `proxy` is `/lb/bench/hello` on gpuserve. Both in the same run,
  alternating in blocks, so a change in the host's load hits both alike.
- latency: --seq sequential requests per target (in --rounds blocks), p50 and p99; added
  latency = proxy minus direct at the same percentile.
- throughput: --clients concurrent clients for --seconds, --rounds times per target,
  alternating; the median of the rounds.
- proxy CPU per request: the gpuserve server process's own CPU time (user + system, from /proc)
  over the proxy's throughput rounds, divided by the requests it served there; it moves less
  with the host's load than the latencies do. The client's (this process) and the worker's
  CPU per request, direct and proxied, show what else the two cores spend per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent

APP = """import os
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/hello")
async def hello() -> dict[str, object]:
    return {"hello": "world", "port": int(os.environ["PORT"])}
"""

ENDPOINTS = """endpoints:
  - id: bench
    type: load_balancer
    command: {python} -m uvicorn app:app --host 127.0.0.1 --port $PORT --log-level warning --no-access-log
    concurrency_target: 64
    max_concurrency: 256
    scaling: {{min_workers: 1, max_workers: 1, idle_timeout_s: 600, scaler: request_count, scaler_value: 64}}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append(time.perf_counter() - t0)
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (the worker, and the shell that started it), from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += _cpu_s(pid)
        except FileNotFoundError:
            pass
    return total


async def _throughput(session: aiohttp.ClientSession, url: str, clients: int, seconds: float) -> tuple[float, int]:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            async with session.get(url) as r:
                await r.read()
                assert r.status == 200, r.status
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - t0), done


async def _measure(direct: str, proxy: str, server_pid: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    connector = {"limit": 0, "keepalive_timeout": 60}
    lat: dict[str, list[float]] = {"direct": [], "proxy": []}
    rps: dict[str, list[float]] = {"direct": [], "proxy": []}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector)) as d,  # type: ignore[arg-type]
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector)) as p,  # type: ignore[arg-type]
    ):
        targets = {"direct": (d, direct), "proxy": (p, proxy)}
        for session, url in targets.values():  # warm-up: connections, code paths
            await _sequential(session, url, 200)
            await _throughput(session, url, args.clients, 0.5)
        block = max(1, args.seq // args.rounds)
        for _ in range(args.rounds):
            for name, (session, url) in targets.items():
                lat[name] += await _sequential(session, url, block)
        cpu_s, served = 0.0, 0
        worker_pids = _descendants(server_pid)
        # CPU seconds per target of this client process and of the worker (it costs more per request
        # proxied: its requests come from the proxy's connections), and the requests they served.
        side: dict[str, list[float]] = {"direct": [0.0, 0.0, 0.0], "proxy": [0.0, 0.0, 0.0]}
        for _ in range(args.rounds):
            for name, (session, url) in targets.items():
                before = _cpu_s(server_pid)
                client0, worker0 = time.process_time(), _cpu_of(worker_pids)
                rate, n = await _throughput(session, url, args.clients, args.seconds)
                side[name][0] += time.process_time() - client0
                side[name][1] += _cpu_of(worker_pids) - worker0
                side[name][2] += n
                rps[name].append(rate)
                if name == "proxy":
                    cpu_s += _cpu_s(server_pid) - before
                    served += n
    return {
        name: {
            "p50_ms": _percentile(lat[name], 0.50) * 1000,
            "p99_ms": _percentile(lat[name], 0.99) * 1000,
            "rps": statistics.median(rps[name]),
            "rps_rounds": rps[name],  # type: ignore[dict-item]
            "cpu_ms_per_request": cpu_s / served * 1000 if name == "proxy" else 0.0,
            "client_cpu_ms_per_request": side[name][0] / side[name][2] * 1000,
            "worker_cpu_ms_per_request": side[name][1] / side[name][2] * 1000,
        }
        for name in ("direct", "proxy")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=2000, help="sequential requests per target (latency)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one throughput round")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpuserve-lb-bench-") as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        (folder / "endpoints.yaml").write_text(ENDPOINTS.format(python=sys.executable))
        server = subprocess.Popen(
            [sys.executable, "-m", "gpuserve.cli", "serve", str(folder / "endpoints.yaml"), "--port", "0",
             "--data-dir", str(folder / "data"), "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "300", "PYTHONPATH": str(ROOT)},
        )
        try:
            assert server.stdout is not None
            first = server.stdout.readline()
            url = first[first.index("http://") :].split()[0].rstrip(".,")
            proxy = f"{url}/lb/bench/hello"
            deadline = time.monotonic() + 120
            while True:  # held until the worker is ready, then answered
                try:
                    r = httpx.get(proxy, timeout=60)
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not become ready: {first}")
                time.sleep(0.2)
            direct = f"http://127.0.0.1:{r.json()['port']}/hello"
            load_before = os.getloadavg()[0]
            res = asyncio.run(_measure(direct, proxy, server.pid, args))
            load_after = os.getloadavg()[0]
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    d, p = res["direct"], res["proxy"]
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; "
          f"load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"latency, {args.seq} sequential requests per target ({args.rounds} alternating blocks):")
    print(f"  direct  p50 {d['p50_ms']:.3f} ms  p99 {d['p99_ms']:.3f} ms")
    print(f"  proxy   p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms")
    print(f"  added   p50 {p['p50_ms'] - d['p50_ms']:.3f} ms  p99 {p['p99_ms'] - d['p99_ms']:.3f} ms  (target: <= 1 ms at p50)")
    rounds_d = ", ".join(f"{x:.0f}" for x in d["rps_rounds"])  # type: ignore[attr-defined]
    rounds_p = ", ".join(f"{x:.0f}" for x in p["rps_rounds"])  # type: ignore[attr-defined]
    print(f"throughput, {args.clients} concurrent clients, {args.rounds} x {args.seconds:g} s per target:")
    print(f"  direct  {d['rps']:.0f} req/s (rounds: {rounds_d})")
    print(f"  proxy   {p['rps']:.0f} req/s (rounds: {rounds_p})")
    print(f"  ratio   {p['rps'] / d['rps']:.1%} of direct  (target: >= 50%)")
    print(f"proxy CPU per request (gpuserve server process): {p['cpu_ms_per_request']:.3f} ms")
    print(f"CPU per request in the throughput rounds, direct / proxied: client {d['client_cpu_ms_per_request']:.3f} / "
          f"{p['client_cpu_ms_per_request']:.3f} ms, worker {d['worker_cpu_ms_per_request']:.3f} / {p['worker_cpu_ms_per_request']:.3f} ms")


if __name__ == "__main__":
    main()
