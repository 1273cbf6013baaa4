"""Leader failover: how long an endpoint is without a Controller when its leader replica is killed (kill -9).

    eval "$(bash scripts/postgres-setup.sh)"
    .venv/bin/python bench/failover.py [--kills 10]
    eval "$(bash scripts/ray-setup.sh)"          # for --backends ray
    .venv/bin/python bench/failover.py --kills 5 --backends process,ray

Two `gpuserve serve` replicas on one fresh PostgreSQL database (GPUSERVE_TEST_POSTGRES names the
server), one endpoint with two warm workers (min_workers 2), all on this machine. Each round: kill -9
the replica whose Controller leads the endpoint, then measure
- takeover: from the kill until the database's leader lease names the other replica (`leaders` row,
  polled every 20 ms): the store's lease length (LEADER_LEASE_S) plus at most one renewal interval;
- service back: from the kill until a /runsync sent to the survivor at the kill completes. On the
  process backend the killed replica's workers die with it (a process worker never outlives its
  server), so this adds the new leader's cold start of a worker to the takeover. On the Ray backend
  (`--backends ray`, the cluster at GPUSERVE_RAY_ADDRESS with declared A100s, as scripts/ray-setup.sh
  starts it) the workers are detached actors given a proxy's address (each connection to the first
  replica that answers, tests/support/proxy.py): they run on, reach the survivor, and are adopted by
  it when it leads; `adopted` counts the rounds whose workers after the kill were the same two.
A new replica then replaces the killed one (as a follower) and the next round kills the new leader.
Reports each round and the median and max of both over all rounds, per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_plane import ROOT, drop_database, free_port, fresh_database, wait_http

sys.path.insert(0, str(ROOT))
from tests.support.proxy import failover_proxy

KEY = "sk-failover"
HANDLER = """from gpuserve import serverless


def handler(job):
    return job["input"]


serverless.start({"handler": handler})
"""


class Replica:
    """One `gpuserve serve` process on the shared database."""

    def __init__(self, work: Path, name: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpuserve.cli", "serve", str(work / "endpoints.yaml"), "--port", str(self.port),
             "--data-dir", str(work / name), "--log-level", "warning", *extra],
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"{name}.log", "wb"),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wait_http(f"{self.base}/v2/ep/health", headers=HEADERS)

    def idle(self) -> int:
        return int(httpx.get(f"{self.base}/v2/ep/health", headers=HEADERS, timeout=10).json()["workers"]["idle"])

    def worker_ids(self) -> set[str]:
        """The workers this replica counts (its own and those it adopted), from the admin API."""
        body = httpx.get(f"{self.base}/api/endpoints", headers=ADMIN, timeout=10).json()
        return {str(w["id"]) for e in body["endpoints"] if e["id"] == "ep" for w in e["workers"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


HEADERS = {"Authorization": f"Bearer {KEY}"}
ADMIN = {"Authorization": "Bearer sk-failover-admin"}


def holder(url: str) -> str | None:
    """The replica the endpoint's unexpired leader lease names (its store's id), or None."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT holder, expires_s FROM leaders WHERE endpoint_id = 'ep'").fetchone()
    return str(row[0]) if row is not None and row[1] > time.time() else None


def wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_round(url: str, replicas: list[Replica]) -> dict[str, float]:
    wait(lambda: sum(r.idle() for r in replicas) == 2, 90, "the leader's two idle workers")
    leader = max(replicas, key=lambda r: r.idle())
    survivor = next(r for r in replicas if r is not leader)
    workers_before = leader.worker_ids()
    before = holder(url)
    assert before is not None
    done: dict[str, float] = {}

    def runsync() -> None:
        body = httpx.post(f"{survivor.base}/v2/ep/runsync?wait=60000", json={"input": {"k": 1}}, headers=HEADERS,
                          timeout=90).json()
        if body.get("status") != "COMPLETED":
            raise RuntimeError(f"the job sent at the kill did not complete: {body}")
        done["at"] = time.monotonic()

    leader.proc.kill()
    killed = time.monotonic()
    job = threading.Thread(target=runsync)
    job.start()
    while True:
        now = holder(url)
        if now is not None and now != before:
            takeover_s = time.monotonic() - killed
            break
        if time.monotonic() - killed > 60:
            raise RuntimeError("no new leader within 60 s")
        time.sleep(0.02)
    job.join(90)
    leader.proc.wait(30)
    wait(lambda: survivor.idle() == 2, 90, "the new leader's two idle workers")
    adopted = survivor.worker_ids() == workers_before
    return {"takeover_s": takeover_s, "service_back_s": done["at"] - killed, "adopted": float(adopted)}


def run(backend: str, kills: int, server: str) -> list[dict[str, float]]:
    url, name = fresh_database(server)
    rounds: list[dict[str, float]] = []
    endpoint: dict[str, object] = {
        "id": "ep", "scaling": {"min_workers": 2, "max_workers": 2, "idle_timeout_s": 60, "extra_workers": 0},
    }
    with tempfile.TemporaryDirectory(prefix="gpuserve-failover-") as tmp, failover_proxy() as proxy:
        work = Path(tmp)
        (work / "handler.py").write_text(HANDLER)
        endpoint["handler"] = str(work / "handler.py")
        server_section: dict[str, object] = {"store": url, "heartbeat_interval_s": 1, "admin_keys": ["sk-failover-admin"]}
        extra: tuple[str, ...] = ()
        if backend == "ray":
            address = os.environ.get("GPUSERVE_RAY_ADDRESS", "")
            if not address:
                raise SystemExit('--backends ray needs GPUSERVE_RAY_ADDRESS (eval "$(bash scripts/ray-setup.sh)")')
            extra = ("--backend", "ray", "--ray-address", address)
            endpoint.update({"gpu_type": "A100", "gpus_per_worker": 1})
            server_section["worker_url"] = f"http://127.0.0.1:{proxy.port}"
        (work / "endpoints.yaml").write_text(json.dumps({
            "server": server_section, "api_keys": [KEY], "endpoints": [endpoint],
        }))
        replicas = [Replica(work, "r0", extra)]
        proxy.upstreams = [("127.0.0.1", r.port) for r in replicas]
        replicas.append(Replica(work, "r1", extra))
        proxy.upstreams = [("127.0.0.1", r.port) for r in replicas]
        try:
            for k in range(kills):
                result = one_round(url, replicas)
                rounds.append(result)
                print(f"{backend} kill {k + 1}/{kills}: takeover {result['takeover_s']:.2f} s, "
                      f"service back {result['service_back_s']:.2f} s, adopted {bool(result['adopted'])}, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
                replicas = [r for r in replicas if r.proc.poll() is None] + [Replica(work, f"r{k + 2}", extra)]
                proxy.upstreams = [("127.0.0.1", r.port) for r in replicas]
        finally:
            for r in replicas:
                r.stop()
            drop_database(server, name)
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10, help="rounds per backend: each kills the leader once")
    ap.add_argument("--backends", default="process", help="comma-separated: process, ray (run one after the other)")
    args = ap.parse_args()
    server = os.environ.get("GPUSERVE_TEST_POSTGRES", "")
    if not server:
        ap.error('needs GPUSERVE_TEST_POSTGRES (eval "$(bash scripts/postgres-setup.sh)")')
    report: dict[str, object] = {}
    for backend in args.backends.split(","):
        if backend not in ("process", "ray"):
            ap.error(f"--backends: {backend!r} is not 'process' or 'ray'")
        rounds = run(backend, args.kills, server)
        summary = {
            key: {"median": statistics.median(r[key] for r in rounds), "max": max(r[key] for r in rounds)}
            for key in ("takeover_s", "service_back_s")
        }
        adopted = sum(int(r["adopted"]) for r in rounds)
        print(f"{backend}: takeover median {summary['takeover_s']['median']:.2f} s, max {summary['takeover_s']['max']:.2f} s;"
              f" service back median {summary['service_back_s']['median']:.2f} s,"
              f" max {summary['service_back_s']['max']:.2f} s; workers adopted in {adopted}/{len(rounds)} rounds")
        report[backend] = {"rounds": rounds, "summary": summary, "adopted_rounds": adopted}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
