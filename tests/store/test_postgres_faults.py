"""Faults on several `gpuserve serve` replicas of one PostgreSQL database, all real processes on 127.0.0.1.

- kill -9 the leader during 1,000 jobs: another replica leads within 10 s, every accepted job completes
  (none lost, none stuck), and no job ran more often than it was taken (the handler records each run;
  `jobs.attempt` counts the takes), so none ran twice within one attempt;
- restart PostgreSQL under load (its own throwaway cluster): both replicas reconnect, accept jobs again,
  and every job they accepted completes.

A late job-done from a worker whose lease expired is ignored: the store suite checks it on both stores
(tests/store/test_store.py, the lease tests), and over HTTP tests/server/test_leases.py.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import httpx
import psycopg

from tests.support.live import serving, wait_until
from tests.support.postgres import clear

KEY = "sk-faults"
ROOT = Path(__file__).resolve().parents[2]
HANDLER = """import os, time
from gpuserve import serverless

def handler(job):
    with open(os.environ["EXEC_LOG"], "a") as f:  # one line per run: a job run twice shows twice
        f.write(job["id"] + "\\n")
    time.sleep(job["input"].get("sleep_s", 0))
    return {"i": job["input"]["i"]}

serverless.start({"handler": handler})
"""


def _config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "handler.py").write_text(HANDLER)
    (tmp_path / "executions.log").touch()
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        # 0.5 s heartbeats: a lost worker's lease (twice the 1.5 s liveness timeout) expires in 3 s.
        f"server: {{store: '{url}', heartbeat_interval_s: 0.5, max_retries: 5, drain_timeout_s: 2}}\n"
        "endpoints:\n"
        f"  ep: {{handler: {tmp_path / 'handler.py'}, api_keys: [{KEY}],"
        f" env: {{EXEC_LOG: '{tmp_path / 'executions.log'}'}},"
        " concurrency_per_worker: 2, scaling: {min_workers: 2, max_workers: 2, idle_timeout_s: 60, extra_workers: 0}}\n"
    )
    return config


def _replica(config: Path, data_dir: Path) -> AbstractContextManager[tuple[subprocess.Popen[str], httpx.Client]]:
    return serving(config, data_dir, KEY, timeout_s=60, reap_workers=True)


def _idle_workers(client: httpx.Client) -> int:
    return int(client.get("/health").json()["workers"]["idle"])


def _statuses(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT id, status FROM jobs").fetchall())


def _completed(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'").fetchone()[0])


def _long_running(url: str) -> bool:
    with psycopg.connect(url) as conn:
        q = "SELECT 1 FROM jobs WHERE status = 'IN_PROGRESS' AND payload LIKE '%%sleep_s%%' LIMIT 1"
        return conn.execute(q).fetchone() is not None


def _leader(url: str) -> tuple[str, float] | None:
    """The endpoint's leader lease as the database holds it: (holder, seconds it still runs)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT holder, expires_s FROM leaders WHERE endpoint_id = 'ep'").fetchone()
    return (row[0], row[1] - time.time()) if row is not None else None


def _runs_within_attempts(url: str, log: Path) -> tuple[collections.Counter[str], dict[str, int]]:
    runs = collections.Counter(log.read_text().split())
    with psycopg.connect(url) as conn:
        attempts = dict(conn.execute("SELECT id, attempt FROM jobs").fetchall())
    return runs, attempts


def _two_replicas(stack: ExitStack, config: Path, tmp_path: Path) -> list[tuple[subprocess.Popen[str], httpx.Client]]:
    """Two replicas started together, the leader (the one whose Controller started the two workers) first."""
    both = [stack.enter_context(_replica(config, tmp_path / name)) for name in ("a", "b")]
    wait_until(lambda: sum(_idle_workers(c) for _, c in both) == 2, 60, "the leader's two workers")
    return sorted(both, key=lambda pc: -_idle_workers(pc[1]))


def test_kill_9_of_the_leader_during_1000_jobs_loses_none_and_a_new_leader_takes_over(tmp_path, pg_database):
    clear(pg_database)
    config = _config(tmp_path, pg_database)
    with ExitStack() as stack:
        (leader, cl), (_follower, cf) = _two_replicas(stack, config, tmp_path)
        first = _leader(pg_database)
        assert first is not None and first[1] > 0
        accepted: list[str] = []
        cut = [0]  # posts cut by the kill: each may or may not have committed its job

        def submit(client: httpx.Client, inputs: range) -> None:
            for i in inputs:
                job = {"input": {"i": i, "sleep_s": 1.0} if i % 100 == 50 else {"i": i}}  # a few run long
                try:
                    r = client.post("/run", json=job)
                except httpx.HTTPError:  # the leader is gone: the follower takes the rest
                    cut[0] += 1
                    client = cf
                    r = client.post("/run", json=job)
                assert r.json()["status"] == "IN_QUEUE", r.text  # an answer with an id means committed
                accepted.append(r.json()["id"])

        # Both replicas accept, while the leader's workers run what is queued.
        threads = [threading.Thread(target=submit, args=(c, range(k, 1000, 2))) for k, c in enumerate((cl, cf))]
        for t in threads:
            t.start()
        try:
            # Killed mid-run: 150 jobs done and a long one (1 s) running, so the kill cuts one short for sure.
            wait_until(lambda: _long_running(pg_database) and _completed(pg_database) >= 150, 60, "a long job to run")
            leader.kill()  # SIGKILL: no drain, no resign; its workers die with it, holding jobs
            wait_until(
                lambda: (lead := _leader(pg_database)) is not None and lead[0] != first[0] and lead[1] > 0,
                10,
                "the other replica to lead within 10 s of the kill",
            )
        finally:
            for t in threads:
                t.join(60)
        leader.wait(30)
        assert len(accepted) == 1000
        wait_until(lambda: set(_statuses(pg_database).values()) == {"COMPLETED"}, 120, "every job to complete")
        statuses = _statuses(pg_database)
        assert set(accepted) <= set(statuses)  # 0 lost, 0 stuck (all COMPLETED)
        assert len(statuses) - len(accepted) <= cut[0]  # at most the posts the kill cut also stored a job
        body = cf.get(f"/status/{accepted[-1]}").json()
        assert body["status"] == "COMPLETED" and isinstance(body["output"]["i"], int)
        workers = cf.get("/health").json()["workers"]
        assert workers["idle"] + workers["running"] == 2  # the new leader's own two, not more
    runs, attempts = _runs_within_attempts(pg_database, tmp_path / "executions.log")
    assert set(accepted) <= set(runs)
    twice = {j: (runs[j], attempts[j]) for j in statuses if runs[j] > attempts[j]}
    assert twice == {}, twice  # no job ran more often than it was taken
    assert any(a > 1 for a in attempts.values())  # the kill cut some short: they were taken again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres(port: int, data: Path, *args: str) -> str:
    env = {**os.environ, "GPUSERVE_PG_PORT": str(port), "GPUSERVE_PG_DATA": str(data)}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "postgres-setup.sh"), *args], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip().removeprefix("export GPUSERVE_TEST_POSTGRES=")


def test_a_restart_of_postgresql_under_load_loses_no_accepted_job(tmp_path):
    # A cluster of its own, so the restart cuts no other test's connections; in a folder the
    # `postgres` account (the server's owner when the tests run as root) can reach.
    home = Path(tempfile.mkdtemp(prefix="gpuserve-pg-"))
    home.chmod(0o755)
    port, data = _free_port(), home / "data"
    url = _postgres(port, data)
    try:
        config = _config(tmp_path, url)
        with ExitStack() as stack:
            (_a, ca), (_b, cb) = _two_replicas(stack, config, tmp_path)
            accepted: dict[str, list[str]] = {"a": [], "b": []}
            restarted = threading.Event()
            after: dict[str, int] = {"a": 0, "b": 0}
            stop = threading.Event()

            def load() -> None:
                i = 0
                while not stop.is_set() and i < 5000:
                    name, client = ("a", ca) if i % 2 else ("b", cb)
                    i += 1
                    try:
                        r = client.post("/run", json={"input": {"i": i}})
                    except httpx.HTTPError:
                        continue  # refused or cut while the database was down: not accepted
                    if r.status_code == 200:
                        accepted[name].append(r.json()["id"])
                        if restarted.is_set():
                            after[name] += 1
                    time.sleep(0.01)

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            try:
                wait_until(lambda: len(accepted["a"]) + len(accepted["b"]) >= 60, 60, "load before the restart")
                _postgres(port, data, "--stop")
                time.sleep(1.0)
                _postgres(port, data)
                restarted.set()
                wait_until(lambda: min(after.values()) >= 20, 60, "both replicas to accept jobs again")
            finally:
                stop.set()
                loader.join(60)
            ids = accepted["a"] + accepted["b"]

            def all_completed() -> bool:
                statuses = _statuses(url)
                return all(statuses.get(i) == "COMPLETED" for i in ids)

            wait_until(all_completed, 120, "every accepted job to complete after the restart")
        runs, attempts = _runs_within_attempts(url, tmp_path / "executions.log")
        assert set(ids) <= set(runs)
        assert {j: (runs[j], attempts[j]) for j in ids if runs[j] > attempts[j]} == {}
    finally:
        _postgres(port, data, "--stop")
        shutil.rmtree(home, ignore_errors=True)
