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
- rate limits: a checkout with them (gpuserve/server/rate_limit.py) gets a /runsync limit too high to
  refuse anything (Runpod's default, 2000 per 10 s, would cap the run at 200 jobs/s); the limiter
  and the other limits still run on every request.
- server CPU per job: the gpuserve server process's own CPU time (user + system, from /proc, worker
  processes not included) over the sequential and the throughput runs, divided by their jobs.
- `--baseline PATH` also runs the gpuserve checkout at PATH (e.g. a `git worktree` of an earlier
  commit) in the same alternation, as a third column: before-and-after figures from one run.
- database use per job (PostgreSQL): the CPU time of the database's server processes serving the run's
  database (its backends, from /proc: the database runs on this machine) and the transactions it
  counted (pg_stat_database; each autocommit statement is one), over the throughput run, per job.
- `--store postgresql` also runs gpuserve on the PostgreSQL store in the same alternation (a fresh
  database per run on the server GPUSERVE_TEST_POSTGRES names: `eval "$(bash scripts/postgres-setup.sh)"`),
  reported beside gpuserve on SQLite: once with one server, once with two replicas on one database
  (`--replicas 2`, the default; 1 skips it). With two, the leader's workers serve both; the sequential
  calls alternate between the replicas and half the throughput clients talk to each, so half the
  /runsync calls wait on a result another server stored (LISTEN/NOTIFY).
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


def sequential(base: str | list[str], path: str, n: int, headers: dict[str, str]) -> dict[str, float]:
    """n /runsync calls one after another on one keep-alive connection (per server, taking turns); latencies in ms."""
    lat: list[float] = []
    delay: list[float] = []
    execution: list[float] = []
    bases = [base] if isinstance(base, str) else base
    clients = [httpx.Client(base_url=b, headers=headers, timeout=60) for b in bases]
    try:
        for i in range(n + 50):
            c = clients[i % len(clients)]
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
    finally:
        for c in clients:
            c.close()
    out = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.fmean(lat)}
    if execution:
        out["delay_p50_ms"] = pct(delay, 50)
        out["execution_p50_ms"] = pct(execution, 50)
    return out


async def _throughput(base: str | list[str], path: str, jobs: int, clients: int, headers: dict[str, str]) -> float:
    # aiohttp rather than httpx here: the load generator shares the 2 cores with what it measures,
    # and aiohttp spends about a third of httpx's CPU per request.
    import aiohttp

    bases = [base] if isinstance(base, str) else base
    sessions = [
        aiohttp.ClientSession(b, headers=headers, connector=aiohttp.TCPConnector(limit=clients)) for b in bases
    ]
    try:
        counter = iter(range(jobs))

        async def post(c: aiohttp.ClientSession, i: int) -> None:
            async with c.post(path, json={"input": {"i": i}}) as r:
                body = await r.json()
            if body.get("status") != "COMPLETED" or body.get("output") != {"i": i}:
                raise RuntimeError(f"bad reply: {body}")

        async def client(c: aiohttp.ClientSession) -> None:
            for i in counter:
                await post(c, i)

        await asyncio.gather(*(post(sessions[k % len(sessions)], -1) for k in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(sessions[k % len(sessions)]) for k in range(clients)))
        return jobs / (time.perf_counter() - t0)
    finally:
        for c in sessions:
            await c.close()


def throughput(base: str | list[str], path: str, jobs: int, clients: int, headers: dict[str, str]) -> float:
    return asyncio.run(_throughput(base, path, jobs, clients, headers))


def fresh_database(server_url: str) -> tuple[str, str]:
    """A new, empty database on that PostgreSQL server: (its URL, its name)."""
    import uuid

    import psycopg

    name = f"gpuserve_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name, name


def database_use(url: str, known: dict[int, float] | None = None) -> tuple[float, int, dict[int, float]]:
    """What the database's server processes have spent on `url`'s database: (CPU s of its backends, transactions
    committed or rolled back, {backend pid: its CPU s}). With `known` (an earlier call's), a backend that was there
    then counts from its CPU then, one started since from zero (its whole life is in between)."""
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()]
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    now: dict[int, float] = {}
    for pid in {*pids, *(known or {})}:
        try:
            now[pid] = cpu_s(pid)
        except OSError:  # gone: what it spent until then
            now[pid] = (known or {}).get(pid, 0.0)
    spent = sum(now.values()) - sum((known or {}).get(pid, 0.0) for pid in now)
    return (spent if known is not None else 0.0), int(row[0]) if row else 0, now


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_gpuserve(
    args: argparse.Namespace, work: Path, root: Path = ROOT, store: str | None = None, replicas: int = 1
) -> dict[str, object]:
    """One gpuserve setup measured; `replicas` servers on one store (PostgreSQL) share the load and the leader's workers."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "handler.py").write_text(HANDLER_GPUSERVE)
    server: dict[str, object] = {"heartbeat_interval_s": 10, **({"store": store} if store else {})}
    if (root / "gpuserve" / "server" / "rate_limit.py").exists():
        # Runpod's default for /runsync (2000 per 10 s, 400 at once) would cap this benchmark at
        # 200 jobs/s: raised out of reach, so the limiter still runs on every call but refuses none.
        server["rate_limits"] = {"runsync": {"per_10s": 10**9, "concurrent": 10**6}}
    (work / "endpoints.yaml").write_text(
        json.dumps(
            {
                "server": server,
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
    servers: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    for r in range(replicas):
        port = free_port()
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "gpuserve.cli", "serve", str(work / "endpoints.yaml"), "--port", str(port),
             "--data-dir", str(work / f"data{r or ''}"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"server{r or ''}.log", "wb"),
            cwd=root,
            # The server and the workers it spawns import gpuserve from `root`, not from the install.
            env={**os.environ, "PYTHONPATH": str(root)},
        ))
        bases.append(f"http://127.0.0.1:{port}")
    headers = {"Authorization": f"Bearer {KEY}"}

    def idle() -> int:  # the leader's workers (each server reports those it started)
        return sum(httpx.get(f"{b}/v2/echo/health", headers=headers).json()["workers"]["idle"] for b in bases)

    def cpu() -> float:
        return sum(cpu_s(s.pid) for s in servers)

    try:
        for b in bases:
            wait_http(f"{b}/v2/echo/health", headers=headers)
        deadline = time.monotonic() + 60
        while idle() < args.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not become ready")
            time.sleep(0.1)
        cold = httpx.post(f"{bases[0]}/v2/cold/runsync", json={"input": {"i": 0}}, headers=headers, timeout=60).json()
        cpu0 = cpu()
        seq = sequential(bases, "/v2/echo/runsync", args.seq, headers)
        db0 = database_use(store) if store else None
        cpu1 = cpu()
        tput = throughput(bases, "/v2/echo/runsync", args.jobs, args.clients, headers)
        cpu2 = cpu()
        # The sequential run also makes 50 warm-up calls; the throughput run `clients` warm-up calls.
        # Server CPU: all replicas together.
        out: dict[str, object] = {
            **seq,
            "jobs_per_s": tput,
            "cold_start_to_first_job_ms": cold.get("delayTime"),
            "server_cpu_ms_per_job_seq": (cpu1 - cpu0) * 1000 / (args.seq + 50),
            "server_cpu_ms_per_job_tput": (cpu2 - cpu1) * 1000 / (args.jobs + args.clients),
        }
        if store and db0 is not None:
            time.sleep(0.6)  # PostgreSQL's statistics reach pg_stat_database within 0.5 s
            db1 = database_use(store, db0[2])
            n = args.jobs + args.clients
            out["db_cpu_ms_per_job_tput"] = (db1[0] - db0[0]) * 1000 / n
            out["db_transactions_per_job_tput"] = (db1[1] - db0[1]) / n
        return out
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
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
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                    help="postgresql: also run gpuserve on the PostgreSQL store (GPUSERVE_TEST_POSTGRES), beside SQLite")
    ap.add_argument("--replicas", type=int, choices=[1, 2], default=2,
                    help="with --store postgresql: also run two server replicas on one database (1: one server only)")
    ap.add_argument("--synchronous-commit", choices=["on", "off"], default="on",
                    help="PostgreSQL's synchronous_commit for the store's connections (off: like SQLite's synchronous=NORMAL)")
    args = ap.parse_args()
    pg_server = os.environ.get("GPUSERVE_TEST_POSTGRES", "")
    if args.store == "postgresql" and not pg_server:
        ap.error('--store postgresql needs GPUSERVE_TEST_POSTGRES (eval "$(bash scripts/postgres-setup.sh)")')
    runs_pg: list[dict[str, object]] = []
    runs_pg2: list[dict[str, object]] = []
    runs_base_pg: list[dict[str, object]] = []
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
            if args.store == "postgresql":
                url, name = fresh_database(pg_server)
                try:
                    if args.synchronous_commit == "off":
                        url += "?options=-c%20synchronous_commit%3Doff"
                    runs_pg.append(run_gpuserve(args, work / "postgres", store=url))
                finally:
                    drop_database(pg_server, name)
                if args.baseline is not None:  # the other checkout on PostgreSQL too (one server)
                    url, name = fresh_database(pg_server)
                    try:
                        runs_base_pg.append(run_gpuserve(args, work / "baseline-pg", args.baseline.resolve(), store=url))
                    finally:
                        drop_database(pg_server, name)
                if args.replicas == 2:
                    url, name = fresh_database(pg_server)
                    try:
                        if args.synchronous_commit == "off":
                            url += "?options=-c%20synchronous_commit%3Doff"
                        runs_pg2.append(run_gpuserve(args, work / "postgres2", store=url, replicas=2))
                    finally:
                        drop_database(pg_server, name)
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
            )
            + (
                f"; postgresql p50 {runs_pg[-1]['p50_ms']:.2f} p99 {runs_pg[-1]['p99_ms']:.2f} ms "
                f"{runs_pg[-1]['jobs_per_s']:.0f} jobs/s server CPU {runs_pg[-1]['server_cpu_ms_per_job_seq']:.3f}/"
                f"{runs_pg[-1]['server_cpu_ms_per_job_tput']:.3f} ms/job"
                if runs_pg
                else ""
            )
            + (
                f"; postgresql x2 p50 {runs_pg2[-1]['p50_ms']:.2f} p99 {runs_pg2[-1]['p99_ms']:.2f} ms "
                f"{runs_pg2[-1]['jobs_per_s']:.0f} jobs/s server CPU {runs_pg2[-1]['server_cpu_ms_per_job_seq']:.3f}/"
                f"{runs_pg2[-1]['server_cpu_ms_per_job_tput']:.3f} ms/job"
                if runs_pg2
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
    pg = _medians(runs_pg) if runs_pg else {}
    if pg:
        print(f"{'store':34}{'postgresql':>12}{'sqlite':>14}{'ratio':>8}")
        for label, key in [*rows, ("server CPU ms/job, sequential", "server_cpu_ms_per_job_seq"), ("server CPU ms/job, throughput", "server_cpu_ms_per_job_tput")]:
            a, b = float(pg[key]), float(ours[key])  # type: ignore[arg-type]
            print(f"{label:34}{a:12.3f}{b:14.3f}{a / b:8.2f}")
    base_pg = _medians(runs_base_pg) if runs_base_pg else {}
    if base_pg:
        print(f"{'postgresql, baseline':34}{'this':>12}{'baseline':>14}{'ratio':>8}")
        for label, key in [*rows, ("server CPU ms/job, sequential", "server_cpu_ms_per_job_seq"), ("server CPU ms/job, throughput", "server_cpu_ms_per_job_tput")]:
            a, b = float(pg[key]), float(base_pg[key])  # type: ignore[arg-type]
            print(f"{label:34}{a:12.3f}{b:14.3f}{a / b:8.2f}")
    pg2 = _medians(runs_pg2) if runs_pg2 else {}
    if pg2:
        print(f"{'store':34}{'pg x2':>12}{'sqlite':>14}{'ratio':>8}")
        for label, key in [*rows, ("server CPU ms/job, sequential", "server_cpu_ms_per_job_seq"), ("server CPU ms/job, throughput", "server_cpu_ms_per_job_tput")]:
            a, b = float(pg2[key]), float(ours[key])  # type: ignore[arg-type]
            print(f"{label:34}{a:12.3f}{b:14.3f}{a / b:8.2f}")
    for label, db in (("postgresql", pg), ("pg x2", pg2), ("postgresql, baseline", base_pg)):
        if "db_cpu_ms_per_job_tput" in db:
            print(f"{label}: the database's CPU {float(db['db_cpu_ms_per_job_tput']):.3f} ms/job and "  # type: ignore[arg-type]
                  f"{float(db['db_transactions_per_job_tput']):.2f} transactions/job under {args.clients} clients")  # type: ignore[arg-type]
    print(json.dumps({"gpuserve": ours, "runpod_local": theirs, "baseline": base, "postgresql": pg, "postgresql_2_replicas": pg2, "baseline_postgresql": base_pg,
                      "args": vars(args) | {"baseline": str(args.baseline)},
                      "runs": {"gpuserve": runs_ours, "runpod_local": runs_theirs, "baseline": runs_base, "postgresql": runs_pg,
                               "postgresql_2_replicas": runs_pg2, "baseline_postgresql": runs_base_pg}}))


def _medians(runs: list[dict[str, object]]) -> dict[str, object]:
    keys = [k for k in runs[0] if all(isinstance(r.get(k), int | float) for r in runs)]
    return {k: statistics.median(float(r[k]) for r in runs) for k in keys}  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
