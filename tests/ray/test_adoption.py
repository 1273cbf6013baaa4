"""Adoption: kill -9 of the leader replica while its Ray workers run jobs; the next leader adopts those workers.

Two real `gpuserve serve --backend ray` processes on one real PostgreSQL and the real local Ray
cluster, their workers given the address of a proxy that sends each connection to the first
replica that answers (as nginx's backup servers do). Replica A leads and starts two workers
(detached Ray actors, since the store is shared); each takes a job that waits for a release file.
A is killed with SIGKILL. Checked: B leads within 10 s, B adopts the same two workers (same ids,
still the only two actors: no cold start), they finish the jobs they held through B in their
first attempt (0 lost, none run twice), and B's own shutdown ends the adopted actors.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.ray.conftest import GPU_TYPE, RayCluster
from tests.support.live import serve_process, stop_process, wait_until
from tests.support.postgres import postgres_url, throwaway_database
from tests.support.proxy import failover_proxy

KEY = "sk-adopt"
EP = "adopt"
HANDLER = """import os, time
from pathlib import Path
from gpuserve import serverless

def handler(job):
    with open(os.environ["EXEC_LOG"], "a") as f:  # one line per run: a job run twice shows twice
        f.write(job["id"] + "\\n")
    release = Path(os.environ["RELEASE_FILE"])
    for _ in range(1200):  # held until the test releases it (at most 2 minutes)
        if release.exists():
            break
        time.sleep(0.1)
    return {"worker": os.environ["GPUSERVE_WORKER_ID"]}

serverless.start({"handler": handler})
"""


@pytest.fixture
def database() -> Iterator[str]:
    with throwaway_database(postgres_url()) as url:
        yield url


def _config(tmp_path: Path, url: str, worker_url: str) -> Path:
    (tmp_path / "handler.py").write_text(HANDLER)
    (tmp_path / "executions.log").touch()
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        f"server: {{store: '{url}', worker_url: '{worker_url}', heartbeat_interval_s: 1, drain_timeout_s: 3,"
        " max_retries: 3}\n"
        "endpoints:\n"
        f"  {EP}: {{handler: {tmp_path / 'handler.py'}, api_keys: [{KEY}], gpu_type: {GPU_TYPE}, gpus_per_worker: 1,"
        f" env: {{EXEC_LOG: '{tmp_path / 'executions.log'}', RELEASE_FILE: '{tmp_path / 'release'}'}},"
        " scaling: {min_workers: 2, max_workers: 2, idle_timeout_s: 60, extra_workers: 0}}\n"
    )
    return config


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def _leader(url: str) -> tuple[str, float] | None:
    rows = _query(url, f"SELECT holder, expires_s FROM leaders WHERE endpoint_id = '{EP}'")
    return (str(rows[0][0]), float(str(rows[0][1])) - time.time()) if rows else None


def _jobs(url: str) -> dict[str, tuple[str, str | None, int]]:
    """job id -> (status, worker, attempt) as the database holds them."""
    return {str(r[0]): (str(r[1]), r[2] and str(r[2]), int(str(r[3])))
            for r in _query(url, "SELECT id, status, worker_id, attempt FROM jobs")}


def _actors() -> set[str]:
    import ray

    return {a for a in ray.util.list_named_actors() if a.startswith(f"{EP}-")}


def _workers(client: httpx.Client) -> dict[str, int]:
    return dict(client.get("/health").json()["workers"])


def _end_leftovers() -> None:
    """Actors and placement groups of this test that a failed run left (the cluster serves the other tests)."""
    import ray

    for name in _actors():
        try:
            ray.kill(ray.get_actor(name), no_restart=True)
        except ValueError:
            pass
        try:
            ray.util.remove_placement_group(ray.util.get_placement_group(name))
        except Exception:
            pass


def test_the_next_leader_adopts_the_ray_workers_of_a_killed_leader(tmp_path, ray_cluster: RayCluster, database):
    with ExitStack() as stack:
        stack.callback(_end_leftovers)
        proxy = stack.enter_context(failover_proxy())
        config = _config(tmp_path, database, f"http://127.0.0.1:{proxy.port}")
        ray_args = ("--backend", "ray", "--ray-address", ray_cluster.address)

        a, a_url = serve_process(config, tmp_path / "a", *ray_args)
        stack.callback(lambda: a.poll() is None and a.kill())
        proxy.upstreams = [("127.0.0.1", int(a_url.rsplit(":", 1)[1]))]
        ca = stack.enter_context(httpx.Client(base_url=f"{a_url}/v2/{EP}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30))
        wait_until(lambda: _workers(ca)["idle"] == 2, 60, "A's two Ray workers to poll")
        first = _leader(database)
        assert first is not None and first[1] > 0
        started = _actors()
        assert len(started) == 2

        b, b_url = serve_process(config, tmp_path / "b", *ray_args)
        stack.callback(lambda: b.poll() is None and stop_process(b, signal.SIGTERM, 30))
        proxy.upstreams.append(("127.0.0.1", int(b_url.rsplit(":", 1)[1])))  # the backup
        cb = stack.enter_context(httpx.Client(base_url=f"{b_url}/v2/{EP}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30))
        assert _workers(cb)["idle"] + _workers(cb)["running"] == 0  # B leads nothing, starts nothing

        ids = [cb.post("/run", json={"input": {"n": i}}).json()["id"] for i in range(2)]
        wait_until(lambda: all(_jobs(database)[i][0] == "IN_PROGRESS" for i in ids), 30, "both jobs to run")
        holders = {i: _jobs(database)[i][1] for i in ids}
        assert set(holders.values()) == started  # one job on each of A's workers

        a.kill()  # SIGKILL: no drain, no resign, its Ray driver gone; the detached actors run on
        killed_s = time.monotonic()
        a.wait(30)
        wait_until(
            lambda: (lead := _leader(database)) is not None and lead[0] != first[0] and lead[1] > 0,
            10,
            "B to lead within 10 s of the kill",
        )
        took_over_s = time.monotonic() - killed_s
        # B counts the two workers it adopted (RUNNING: each holds its job), and starts none of its own.
        wait_until(lambda: _workers(cb)["running"] == 2, 15, "B to adopt the two running workers")
        assert _actors() == started

        (tmp_path / "release").touch()
        wait_until(lambda: all(_jobs(database)[i][0] == "COMPLETED" for i in ids), 30, "the held jobs to complete")
        jobs = _jobs(database)
        assert {i: jobs[i][1] for i in ids} == holders  # finished by the workers that held them
        assert all(jobs[i][2] == 1 for i in ids)  # in their first attempt: never requeued
        for i in ids:
            assert cb.get(f"/status/{i}").json()["output"] == {"worker": holders[i]}
        assert sorted((tmp_path / "executions.log").read_text().split()) == sorted(ids)  # each ran once

        # Later jobs run on the adopted workers too; still no new worker anywhere.
        body = cb.post("/runsync?wait=30000", json={"input": {"n": 9}}).json()
        assert body["status"] == "COMPLETED" and body["output"]["worker"] in started, body
        assert _actors() == started
        assert _workers(cb)["idle"] + _workers(cb)["running"] == 2

        stop_process(b, signal.SIGTERM, 30)  # B's drain ends the workers it adopted
        wait_until(lambda: not _actors(), 30, "the adopted actors to end with B's shutdown")
        assert _query(database, f"SELECT worker_id FROM workers WHERE endpoint_id = '{EP}'") == []
        print(f"B led {took_over_s:.1f} s after the kill")
