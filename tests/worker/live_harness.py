"""A real gpuserve server (uvicorn on 127.0.0.1) with the process backend, for end-to-end worker tests."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from gpuserve.backends.base import Deployment
from gpuserve.backends.process import ProcessBackend
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.server.runtime import Endpoint, Runtime
from gpuserve.server.serve import ServerThread
from gpuserve.server.settings import ServerSettings
from gpuserve.server.workers import WorkerRegistry, hash_token
from gpuserve.store.sqlite import SqliteJobStore

__all__ = ["API_KEY", "Live", "deployment"]

API_KEY = "sk-test"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}

FAST = ServerSettings(
    poll_timeout_s=2.0,
    heartbeat_interval_s=1.0,  # 3 s of silence = lost: robust on a busy 2-core machine
    tick_interval_s=0.2,
    maintenance_interval_s=0.05,
    webhook_retry_delay_s=0.2,
)


def deployment(
    tmp_path: Path,
    endpoint_id: str,
    code: str,
    *,
    sdk: str = "gpuserve",
    min_workers: int = 0,
    max_workers: int = 1,
    idle_timeout_s: float = 30.0,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
) -> Deployment:
    """An endpoint whose handler is `code`, written to tmp_path/<endpoint_id>/handler.py."""
    folder = tmp_path / endpoint_id
    folder.mkdir(parents=True, exist_ok=True)
    handler = folder / "handler.py"
    handler.write_text(textwrap.dedent(code))
    spec = EndpointSpec(
        endpoint_id,
        scaling=ScalingSpec(
            min_workers=min_workers,
            max_workers=max_workers,
            idle_timeout_s=idle_timeout_s,
            scaler=ScalerType.REQUEST_COUNT,
            scaler_value=float(concurrency),
        ),
        policy=PolicySpec("runpod_request_count"),
        concurrency_per_worker=concurrency,
    )
    return Deployment(spec=spec, handler_path=str(handler), sdk=sdk, env=env or {})  # type: ignore[arg-type]


class Live:
    """Server + store + registry + process backend, all real; `with Live(...) as live:`."""

    def __init__(self, tmp_path: Path, deployments: Iterable[Deployment], settings: ServerSettings = FAST) -> None:
        self.tmp_path = tmp_path
        self.registry = WorkerRegistry()
        deps = list(deployments)
        if any(d.sdk == "runpod" for d in deps) and settings.heartbeat_interval_s < 1.0:
            # Runpod's SDK pings in whole seconds (at least 1 s): widen the liveness window to match.
            settings = replace(settings, heartbeat_interval_s=1.0)
        self.settings = settings
        self.backend: ProcessBackend | None = None

        def runtime_for(url: str) -> Runtime:
            self.backend = ProcessBackend(
                url,
                self.registry,
                logs_dir=tmp_path / "logs",
                ping_interval_ms=int(settings.heartbeat_interval_s * 1000),
                stop_grace_s=3.0,
            )
            store = SqliteJobStore(tmp_path / "jobs.sqlite3", now_s=time.time())
            endpoints = [Endpoint(d, frozenset({hash_token(API_KEY)})) for d in deps]
            return Runtime(endpoints, store, self.registry, backend=self.backend, settings=settings)

        self.server = ServerThread(runtime_for)
        self.url = self.server.url
        self.http = httpx.Client(base_url=f"{self.url}/v2", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30.0)

    def __enter__(self) -> Live:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.stop()

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime

    # -- client helpers -------------------------------------------------------------------------

    def run(self, endpoint_id: str, job_input: Any, **extra: Any) -> str:
        r = self.http.post(f"/{endpoint_id}/run", json={"input": job_input, **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def status(self, endpoint_id: str, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/{endpoint_id}/status/{job_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait(self, endpoint_id: str, job_id: str, statuses: set[str] | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
        want = statuses or TERMINAL
        deadline = time.monotonic() + timeout_s
        while True:
            body = self.status(endpoint_id, job_id)
            if body["status"] in want:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {body} after {timeout_s} s; logs:\n{self.all_logs()}")
            time.sleep(0.02)

    def until(self, predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s; logs:\n{self.all_logs()}")
            time.sleep(0.02)

    def workers(self, endpoint_id: str) -> list[Any]:
        return self.registry.all(endpoint_id)

    def all_logs(self, tail_chars: int = 3000) -> str:
        folder = self.tmp_path / "logs"
        if not folder.is_dir():
            return ""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-tail_chars:]}" for p in sorted(folder.glob("*.log")))
