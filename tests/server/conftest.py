"""Server test harness: a real uvicorn server on 127.0.0.1:0 in a thread, HTTP-driven workers, worker processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.backends.base import Deployment, worker_env
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalingSpec
from gpuserve.server.runtime import Endpoint, Runtime
from gpuserve.server.serve import ServerThread
from gpuserve.server.settings import ServerSettings
from gpuserve.server.workers import WorkerRegistry, hash_token
from gpuserve.store.sqlite import SqliteJobStore

HANDLERS = Path(__file__).parent / "handlers"
KEY = "sk-test-key"

# Short intervals so liveness, polls and webhook retries play out in a test's lifetime.
FAST = ServerSettings(
    poll_timeout_s=1.0,
    heartbeat_interval_s=1.0,  # the runpod SDK's heartbeat needs >= 1000 ms (below, its timeout is 0 and it dies)
    missed_heartbeats=3,
    webhook_retry_delay_s=0.05,
    maintenance_interval_s=0.05,
    tick_interval_s=0.1,
    unknown_worker_delay_s=0.05,
)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll with a generous deadline; tests assert on states, never on how long they took."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def deployment(
    endpoint_id: str = "ep",
    handler: str = "echo_runpod.py",
    *,
    min_workers: int = 0,
    max_workers: int = 3,
    idle_timeout_s: float = 5.0,
    concurrency: int = 1,
    policy: str = "runpod_request_count",
    scaler_value: float = 1.0,
    execution_timeout_s: float = 600.0,
) -> Deployment:
    spec = EndpointSpec(
        endpoint_id,
        scaling=ScalingSpec(
            min_workers=min_workers,
            max_workers=max_workers,
            idle_timeout_s=idle_timeout_s,
            scaler="request_count",  # type: ignore[arg-type]
            scaler_value=scaler_value,
        ),
        policy=PolicySpec(policy),
        concurrency_per_worker=concurrency,
        execution_timeout_s=execution_timeout_s,
    )
    return Deployment(spec=spec, handler_path=str(HANDLERS / handler), sdk="runpod")


class Harness:
    """One server life: its URL, runtime, store, registry, and helpers to act as clients and workers."""

    def __init__(self, server: ServerThread, data_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.rt: Runtime = server.runtime
        self.store: SqliteJobStore = server.runtime.store  # type: ignore[assignment]
        self.registry: WorkerRegistry = server.runtime.registry
        self.data_dir = data_dir
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- as a client ------------------------------------------------------------------
    def run(self, body: dict[str, Any], ep: str = "ep") -> str:
        r = self.client.post(f"/v2/{ep}/run", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def status(self, job_id: str, ep: str = "ep") -> dict[str, Any]:
        r = self.client.get(f"/v2/{ep}/status/{job_id}")
        if r.status_code == 404:
            return {"status": "NOT_FOUND"}
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_status(self, job_id: str, statuses: set[str], ep: str = "ep", timeout_s: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (b := self.status(job_id, ep))["status"] in statuses and b, timeout_s, f"{job_id} in {statuses}"
        )

    def maintain(self, now_s: float) -> None:
        """Run one maintenance pass at a chosen time, on the server's own event loop."""
        assert self.rt.loop is not None

        async def one_pass() -> None:
            self.rt.maintain(now_s)

        asyncio.run_coroutine_threadsafe(one_pass(), self.rt.loop).result(30)

    # -- as a worker (real HTTP on the worker routes) ---------------------------------
    def add_worker(self, worker_id: str = "w1", ep: str = "ep", capacity: int = 1) -> httpx.Client:
        token = self.registry.add(worker_id, ep, self.rt.clock.now_s(), capacity=capacity)
        return httpx.Client(base_url=f"{self.url}/v2/{ep}", headers={"Authorization": token}, timeout=60)

    # -- real worker processes ---------------------------------------------------------
    def spawn_worker(self, dep: Deployment, worker_id: str, ping_interval_ms: int = 1000) -> subprocess.Popen[bytes]:
        token = self.registry.add(worker_id, dep.endpoint_id, self.rt.clock.now_s(), capacity=dep.spec.concurrency_per_worker)
        env = {**os.environ, **worker_env(dep, worker_id, token, self.url, ping_interval_ms=ping_interval_ms)}
        env["RUNPOD_LOG_LEVEL"] = os.environ.get("TEST_RUNPOD_LOG_LEVEL", "WARN")
        log = open(self.data_dir / f"{worker_id}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, str(dep.handler_path)],
            env=env,
            cwd=str(HANDLERS),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
                p.wait(10)
        self.client.close()
        self.server.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Start servers; every one is stopped (and its worker processes killed) at teardown."""
    started: list[Harness] = []

    def start(
        deployments: list[Deployment] | None = None,
        *,
        settings: ServerSettings = FAST,
        backend: str | None = None,
        keys: tuple[str, ...] = (KEY,),
        data_dir: Path | None = None,
        fast_path: bool = True,
    ) -> Harness:
        deps = deployments or [deployment()]
        folder = data_dir or tmp_path
        registry = WorkerRegistry()

        def runtime_for(url: str) -> Runtime:
            be = None
            if backend == "process":
                from gpuserve.backends.process import ProcessBackend

                be = ProcessBackend(
                    server_url=url,
                    registry=registry,
                    logs_dir=folder / "logs",
                    ping_interval_ms=int(settings.heartbeat_interval_s * 1000),
                    stop_grace_s=3.0,
                )
            store = SqliteJobStore(folder / "jobs.sqlite3")
            eps = [Endpoint(d, frozenset(hash_token(k) for k in keys)) for d in deps]
            return Runtime(eps, store, registry, backend=be, settings=settings)

        h = Harness(ServerThread(runtime_for, fast_path=fast_path).start(), folder)
        started.append(h)
        return h

    yield start
    for h in reversed(started):
        h.close()
