"""Running the server: build a Runtime from endpoints.yaml, bind a socket, run uvicorn (in the foreground or a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from gpuserve.backends.base import LiveBackend
from gpuserve.config.endpoints import ServeConfig
from gpuserve.core.clock import Clock
from gpuserve.core.errors import BackendError, ConfigError
from gpuserve.server.app import create_app
from gpuserve.server.corked import CorkedHttpToolsProtocol
from gpuserve.server.fastpath import FastPath
from gpuserve.server.runtime import Endpoint, Runtime
from gpuserve.server.settings import ServerSettings
from gpuserve.server.workers import WorkerRegistry
from gpuserve.store.sqlite import SqliteJobStore
from gpuserve.wallclock import WallClock

__all__ = [
    "BackendFactory",
    "GracefulServer",
    "ServerThread",
    "backend_factory",
    "bind_socket",
    "default_backend",
    "runtime_from_config", "uvicorn_config"]

# (registry, server_url, settings, clock, data_dir) -> backend
BackendFactory = Callable[[WorkerRegistry, str, ServerSettings, Clock, Path], LiveBackend]


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind before the app starts so the URL handed to workers is known even for port 0."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def default_backend(
    registry: WorkerRegistry, server_url: str, settings: ServerSettings, clock: Clock, data_dir: Path
) -> LiveBackend:
    """The embedded default: local worker processes."""
    try:
        from gpuserve.backends.process import ProcessBackend
    except ImportError as exc:  # pragma: no cover - the package ships it
        raise BackendError(f"the process backend is not available ({exc})") from None
    return ProcessBackend(
        server_url,
        registry,
        logs_dir=data_dir / "logs",
        ping_interval_ms=int(settings.heartbeat_interval_s * 1000),
        clock=clock,
    )


def backend_factory(name: str) -> BackendFactory:
    """The BackendFactory for a `--backend` name: `process` (the default) or `docker`."""
    if name == "process":
        return default_backend
    if name == "docker":
        try:
            from gpuserve.backends.docker import docker_backend_factory
        except ImportError as exc:
            raise BackendError(f"the docker backend needs the docker extra: pip install 'gpuserve[docker]' ({exc})") from None
        return docker_backend_factory()
    raise ConfigError("--backend", name, "must be 'process' or 'docker'")


def runtime_from_config(
    config: ServeConfig,
    *,
    server_url: str,
    data_dir: Path | None = None,
    settings: ServerSettings | None = None,
    backend_factory: BackendFactory | None = default_backend,
    clock: Clock | None = None,
    registry: WorkerRegistry | None = None,
) -> Runtime:
    clock = clock or WallClock()
    settings = settings or ServerSettings(
        heartbeat_interval_s=config.server.heartbeat_interval_s,
        max_retries=config.server.max_retries,
        poll_timeout_s=config.server.poll_timeout_s,
    )
    folder = data_dir or config.data_dir()
    store = SqliteJobStore(folder / "jobs.sqlite3", now_s=clock.now_s())
    registry = registry or WorkerRegistry()
    backend = backend_factory(registry, server_url, settings, clock, folder) if backend_factory is not None else None
    endpoints = [Endpoint(e.deployment, e.key_hashes) for e in config.endpoints]
    return Runtime(
        endpoints,
        store,
        registry,
        backend=backend,
        clock=clock,
        settings=settings,
        global_key_hashes=config.global_key_hashes,
    )


def uvicorn_config(app: Any, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http=CorkedHttpToolsProtocol,  # httptools, one send() per response
        lifespan="on",
        # Long polls hold connections open; do not wait them out on shutdown.
        timeout_graceful_shutdown=1,
        # A worker's result may be large; h11/httptools default limits do not apply to bodies.
        timeout_keep_alive=75,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, but workers are drained before the listening socket closes (see Runtime.drain_workers)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.runtime.drain_workers()
        await super().shutdown(sockets)


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread (tests, benchmarks, embedding)."""

    def __init__(
        self,
        runtime_for_url: Callable[[str], Runtime],
        host: str = "127.0.0.1",
        port: int = 0,
        fast_path: bool = True,
    ) -> None:
        self._sock = bind_socket(host, port)
        self.url = url_of(self._sock)
        self.runtime = runtime_for_url(self.url)
        self.app = create_app(self.runtime)
        self._server = GracefulServer(uvicorn_config(FastPath(self.app) if fast_path else self.app), self.runtime)
        self._thread = threading.Thread(target=self._run, name="gpuserve-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

