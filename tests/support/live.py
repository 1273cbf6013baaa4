"""The one live-test harness: a real gpuserve Platform (uvicorn on 127.0.0.1, SQLite, a real backend) per test.

Every live test folder builds its server here, through gpuserve.platform.Platform, the same
composition root `gpuserve serve` uses. `Live` is the harness; `Harness` adds the helpers
the worker-API tests use to act as workers by hand (real HTTP on the worker routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from gpuserve.backends.base import worker_env
from gpuserve.core.billing import BillingModel
from gpuserve.core.clock import Clock
from gpuserve.core.jobs import TERMINAL_STATUSES
from gpuserve.core.types import EndpointSpec, PolicySpec, ScalerType, ScalingSpec
from gpuserve.live.auth import hash_token
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import ServerSettings
from gpuserve.platform import BackendFactory, Platform

__all__ = [
    "ADMIN_KEY",
    "API_KEY",
    "FAST",
    "HANDLERS",
    "KEY",
    "SERVER_FAST",
    "TERMINAL",
    "Harness",
    "Live",
    "children_of",
    "code_deployment",
    "deployment",
    "endpoint_spec",
    "serve_process",
    "stop_process",
    "wait_until",
]

HANDLERS = Path(__file__).resolve().parents[1] / "server" / "handlers"
API_KEY = "sk-test"
ADMIN_KEY = "sk-test-admin"  # server.admin_keys of every Live server; `live.admin` sends it
KEY = "sk-test-key"
TERMINAL = {s.value for s in TERMINAL_STATUSES}

# Short intervals so liveness, polls and webhook retries play out in a test's lifetime; 3 s of
# silence means lost, robust on a busy 2-core machine. The runpod SDK's heartbeat needs
# >= 1000 ms (below, its timeout is 0 and it dies).
FAST = ServerSettings(
    poll_timeout_s=2.0,
    heartbeat_interval_s=1.0,
    missed_heartbeats=3,
    tick_interval_s=0.2,
    maintenance_interval_s=0.05,
    webhook_retry_delay_s=0.2,
    webhook_allowed_networks=("127.0.0.0/8",),  # the tests' receivers listen on loopback
)

# Shorter polls and ticks than the shared FAST settings: these tests drive workers by hand.
SERVER_FAST = ServerSettings(
    poll_timeout_s=1.0,
    heartbeat_interval_s=1.0,  # the runpod SDK's heartbeat needs >= 1000 ms (below, its timeout is 0 and it dies)
    missed_heartbeats=3,
    webhook_retry_delay_s=0.05,
    webhook_allowed_networks=("127.0.0.0/8",),  # the tests' receivers listen on loopback
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


def endpoint_spec(
    endpoint_id: str,
    *,
    min_workers: int = 0,
    max_workers: int = 3,
    idle_timeout_s: float = 5.0,
    concurrency: int = 1,
    policy: str = "runpod_request_count",
    scaler_value: float = 1.0,
    execution_timeout_s: float = 600.0,
    flash_boot: bool = False,
    gpu_type: str | None = None,
    gpus_per_worker: int = 1,
    extra_workers: int = 0,
) -> EndpointSpec:
    """A live test endpoint: Runpod's request-count scaler unless another policy is named.

    No extra workers unless asked for (Runpod's default is 2): a live test's max_workers is the
    cap it asserts; tests/server/test_extra_workers.py asks for them.
    """
    return EndpointSpec(
        endpoint_id,
        scaling=ScalingSpec(
            min_workers=min_workers,
            max_workers=max_workers,
            idle_timeout_s=idle_timeout_s,
            scaler=ScalerType.REQUEST_COUNT,
            scaler_value=scaler_value,
            flash_boot=flash_boot,
            extra_workers=extra_workers,
        ),
        policy=PolicySpec(policy),
        concurrency_per_worker=concurrency,
        execution_timeout_s=execution_timeout_s,
        gpu_type=gpu_type,
        gpus_per_worker=gpus_per_worker,
    )


def deployment(endpoint_id: str = "ep", handler: str = "echo_runpod.py", **spec: Any) -> Deployment:
    """An endpoint running one of the handler files in tests/server/handlers (runpod SDK)."""
    return Deployment(spec=endpoint_spec(endpoint_id, **spec), handler_path=str(HANDLERS / handler), sdk="runpod")


def code_deployment(
    tmp_path: Path,
    endpoint_id: str,
    code: str,
    *,
    sdk: str = "gpuserve",
    max_workers: int = 1,
    idle_timeout_s: float = 30.0,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    **spec: Any,
) -> Deployment:
    """An endpoint whose handler is `code`, written to tmp_path/<endpoint_id>/handler.py."""
    folder = tmp_path / endpoint_id
    folder.mkdir(parents=True, exist_ok=True)
    handler = folder / "handler.py"
    handler.write_text(textwrap.dedent(code))
    endpoint = endpoint_spec(
        endpoint_id,
        max_workers=max_workers,
        idle_timeout_s=idle_timeout_s,
        concurrency=concurrency,
        scaler_value=float(concurrency),
        **spec,
    )
    return Deployment(spec=endpoint, handler_path=str(handler), sdk=sdk, env=env or {})  # type: ignore[arg-type]


def process_backend_for_tests(stop_grace_s: float = 3.0) -> BackendFactory:
    """The process backend with a short stop grace, so test teardown does not wait out 30 s."""

    def make(registry: Any, url: str, settings: ServerSettings, clock: Any, data_dir: Path) -> Any:
        from gpuserve.backends.process import ProcessBackend

        return ProcessBackend(
            url,
            registry,
            logs_dir=data_dir / "logs",
            ping_interval_ms=int(settings.heartbeat_interval_s * 1000),
            stop_grace_s=stop_grace_s,
            clock=clock,
        )

    return make


def serve_process(config: Path, data_dir: Path, *extra_args: str) -> tuple[subprocess.Popen[str], str]:
    """`gpuserve serve CONFIG [EXTRA_ARGS]` as a real process on 127.0.0.1 (port 0); returns it and its URL once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuserve.cli", "serve", str(config), "--port", "0",
         "--data-dir", str(data_dir), "--log-level", "warning", *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        assert proc.stdout is not None
        # Warnings may come before the line naming the address (a reaped leftover worker, say).
        read: list[str] = []
        match = None
        while match is None and len(read) < 50:
            line = proc.stdout.readline()
            if not line:
                break
            read.append(line)
            match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert match, "".join(read)
        url = match.group(1)

        def up() -> bool:
            try:
                return httpx.get(f"{url}/docs", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the server answers")
    except BaseException:
        proc.kill()  # a server that never came up does not outlive the test
        proc.wait()
        raise
    return proc, url


@contextlib.contextmanager
def serving(
    config: Path, data_dir: Path, api_key: str, *, timeout_s: float = 30.0, reap_workers: bool = False
) -> Iterator[tuple[subprocess.Popen[str], httpx.Client]]:
    """`serve_process` with a client on its endpoint `ep` (`api_key`); SIGTERM at the end unless the test ended it.

    `reap_workers`: SIGKILL any worker the server left after (a killed server's workers follow it; none may linger).
    """
    proc, url = serve_process(config, data_dir)
    client = httpx.Client(base_url=f"{url}/v2/ep", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s)
    try:
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            stop_process(proc, signal.SIGTERM, timeout_s=30)
        if reap_workers:
            for pid in children_of(proc.pid):
                os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Worker processes the server `pid` spawned (the process backend names their parent in the environment)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if f"GPUSERVE_PARENT_PID={pid}".encode() in environ.split(b"\0"):
            found.append(int(entry))
    return found


def stop_process(proc: subprocess.Popen[str], sig: int, timeout_s: float = 60.0) -> None:
    """Send `sig` (SIGTERM, SIGINT) and wait; a process that outlives `timeout_s` is killed."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Live:
    """Platform + client helpers, all real; `with Live(tmp_path, [dep]) as live:`.

    `backend` is "process" (default, with a short stop grace), "docker", a BackendFactory, or
    None (no backend: the test registers workers itself). `keys` protect every endpoint.
    `clock` replaces the platform's steady clock (a test that compares clocks); `billing` prices the ledger.
    """

    def __init__(
        self,
        tmp_path: Path,
        deployments: Iterable[Deployment],
        settings: ServerSettings = FAST,
        *,
        backend: str | BackendFactory | None = "process",
        keys: Sequence[str] = (API_KEY,),
        port: int = 0,
        fast_path: bool = True,
        data_dir: Path | None = None,
        registry: WorkerRegistry | None = None,
        clock: Clock | None = None,
        billing: BillingModel | None = None,
        admin_keys: Sequence[str] = (ADMIN_KEY,),
    ) -> None:
        self.tmp_path = tmp_path
        self.data_dir = data_dir or tmp_path
        deps = list(deployments)
        if any(d.sdk == "runpod" for d in deps) and settings.heartbeat_interval_s < 1.0:
            # Runpod's SDK pings in whole seconds (at least 1 s): widen the liveness window to match.
            settings = replace(settings, heartbeat_interval_s=1.0)
        self.settings = settings
        key_hashes = frozenset(hash_token(k) for k in keys)
        self.platform = Platform(
            [Endpoint(d, key_hashes) for d in deps],
            data_dir=self.data_dir,
            backend=process_backend_for_tests() if backend == "process" else backend,
            settings=settings,
            port=port,
            fast_path=fast_path,
            registry=registry,
            clock=clock,
            billing=billing,
            admin_key_hashes=frozenset(hash_token(k) for k in admin_keys),
        )
        self.url = self.platform.url
        self.port = int(self.url.rsplit(":", 1)[1])
        auth = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
        self.http = httpx.Client(base_url=f"{self.url}/v2", headers=auth, timeout=30.0)
        admin = {"Authorization": f"Bearer {admin_keys[0]}"} if admin_keys else {}
        self.admin = httpx.Client(base_url=self.url, headers=admin, timeout=60.0)  # the operator routes

    def start(self) -> Live:
        self.platform.start()
        return self

    def stop(self) -> None:
        self.http.close()
        self.admin.close()
        self.platform.stop()

    def __enter__(self) -> Live:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def runtime(self) -> Runtime:
        return self.platform.runtime

    @property
    def registry(self) -> Any:
        return self.platform.registry

    @property
    def store(self) -> Any:
        return self.platform.store

    @property
    def backend(self) -> Any:
        return self.platform.backend

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

    def until(self, predicate: Callable[[], Any], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s; logs:\n{self.all_logs()}")
            time.sleep(0.02)

    def workers(self, endpoint_id: str) -> list[Any]:
        return list(self.registry.all(endpoint_id))

    def all_logs(self, tail_chars: int = 3000) -> str:
        """The workers' logs: the log files the process backend writes, else what the backend keeps."""
        folder = self.data_dir / "logs"
        if folder.is_dir():
            return "\n".join(f"--- {p.name}\n{p.read_text()[-tail_chars:]}" for p in sorted(folder.glob("*.log")))
        if self.backend is None:
            return ""
        return "\n".join(f"--- {w.worker_id}\n{self.backend.logs(w.worker_id)[-tail_chars:]}" for w in self.registry.all())


class Harness(Live):
    """A Live server plus helpers to act as a client of endpoint "ep" and as workers by hand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rt: Runtime = self.platform.runtime
        self.client = httpx.Client(base_url=self.url, headers=dict(self.http.headers), timeout=60)
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- as a client ------------------------------------------------------------------
    def submit(self, body: dict[str, Any], ep: str = "ep") -> str:
        r = self.client.post(f"/v2/{ep}/run", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def job_status(self, job_id: str, ep: str = "ep") -> dict[str, Any]:
        r = self.client.get(f"/v2/{ep}/status/{job_id}")
        if r.status_code == 404:
            return {"status": "NOT_FOUND"}
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_status(self, job_id: str, statuses: set[str], ep: str = "ep", timeout_s: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (b := self.job_status(job_id, ep))["status"] in statuses and b, timeout_s, f"{job_id} in {statuses}"
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

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
                p.wait(10)
        self.client.close()
        super().stop()
