"""The one composition root of a live gpuserve: store, worker registry, backend, runtime and HTTP server, wired once.

`gpuserve serve`, `gpuserve replay`, `gpuserve calibrate`, the benchmarks and the live
tests all build their platform here, so a new part (a store, a backend, a setting) is
wired in one place. The socket is bound first so the URL handed to workers is known even
for port 0; nothing starts until `start()` (a background thread) or `serve_forever()`.

    with Platform(endpoints, data_dir=tmp) as p:      # process backend, SQLite store
        httpx.post(f"{p.url}/v2/echo/run", ...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gpuserve.config.endpoints import ServeConfig
from gpuserve.core.clock import Clock
from gpuserve.core.errors import BackendError, ConfigError
from gpuserve.live.backend import LiveBackend
from gpuserve.live.clock import SteadyClock
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import ServerSettings
from gpuserve.server.serve import ServerThread, bind_socket, url_of
from gpuserve.store.base import JobStore
from gpuserve.store.sqlite import SqliteJobStore

__all__ = ["BackendFactory", "Platform", "backend_factory", "process_backend"]

# (registry, server_url, settings, clock, data_dir) -> backend
BackendFactory = Callable[[WorkerRegistry, str, ServerSettings, Clock, Path], LiveBackend]


def process_backend(
    registry: WorkerRegistry, server_url: str, settings: ServerSettings, clock: Clock, data_dir: Path
) -> LiveBackend:
    """The embedded default: local worker processes, logs under data_dir/logs."""
    from gpuserve.backends.process import ProcessBackend

    return ProcessBackend(
        server_url,
        registry,
        logs_dir=data_dir / "logs",
        ping_interval_ms=int(settings.heartbeat_interval_s * 1000),
        stop_grace_s=settings.drain_timeout_s,
        clock=clock,
    )


def backend_factory(name: str) -> BackendFactory:
    """The BackendFactory for a `--backend` name: `process` (the default) or `docker`."""
    if name == "process":
        return process_backend
    if name == "docker":
        try:
            from gpuserve.backends.docker import docker_backend_factory
        except ImportError as exc:
            raise BackendError(f"the docker backend needs the docker extra: pip install 'gpuserve[docker]' ({exc})") from None
        return docker_backend_factory()
    raise ConfigError("--backend", name, "must be 'process' or 'docker'")


class Platform:
    """A live gpuserve, built but not started.

    `backend` is a name (`process`, `docker`), a BackendFactory, or None for a server whose
    workers a caller registers by hand (tests of the worker API). `wrap_backend` lets an
    observer (the fidelity recorder) stand between the controller and the real backend.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        data_dir: Path,
        backend: str | BackendFactory | None = "process",
        settings: ServerSettings | None = None,
        clock: Clock | None = None,
        store: JobStore | None = None,
        registry: WorkerRegistry | None = None,
        global_key_hashes: frozenset[str] = frozenset(),
        host: str = "127.0.0.1",
        port: int = 0,
        fast_path: bool = True,
        log_level: str = "warning",
        wrap_backend: Callable[[LiveBackend], LiveBackend] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings or ServerSettings()
        self.clock = clock or SteadyClock()
        # The store first: it locks the data directory, so a second server on it is refused by
        # name (directory and holder) before it could fail less clearly on a taken port.
        self.store: JobStore = store or SqliteJobStore(data_dir / "jobs.sqlite3", now_s=self.clock.now_s())
        try:
            self._sock = bind_socket(host, port)
        except BaseException:
            self.store.close()
            raise
        self.url = url_of(self._sock)
        try:
            self.registry = registry or WorkerRegistry()
            factory = backend_factory(backend) if isinstance(backend, str) else backend
            self.backend: LiveBackend | None = None
            if factory is not None:
                self.backend = factory(self.registry, self.url, self.settings, self.clock, data_dir)
                if wrap_backend is not None:
                    self.backend = wrap_backend(self.backend)
            self.runtime = Runtime(
                endpoints,
                self.store,
                self.registry,
                backend=self.backend,
                clock=self.clock,
                settings=self.settings,
                global_key_hashes=global_key_hashes,
            )
            self._server = ServerThread(self.runtime, self._sock, fast_path=fast_path, log_level=log_level)
        except BaseException:
            self._sock.close()
            self.store.close()
            raise

    @classmethod
    def from_config(
        cls,
        config: ServeConfig,
        *,
        data_dir: Path | None = None,
        backend: str | BackendFactory | None = "process",
        host: str | None = None,
        port: int | None = None,
        settings: ServerSettings | None = None,
        log_level: str = "warning",
    ) -> Platform:
        """The platform endpoints.yaml describes; arguments given here win over the file's."""
        server = config.server
        return cls(
            [Endpoint(e.deployment, e.key_hashes) for e in config.endpoints],
            data_dir=data_dir or config.data_dir(),
            backend=backend,
            settings=settings
            or ServerSettings(
                heartbeat_interval_s=server.heartbeat_interval_s,
                max_retries=server.max_retries,
                poll_timeout_s=server.poll_timeout_s,
                drain_timeout_s=server.drain_timeout_s,
            ),
            global_key_hashes=config.global_key_hashes,
            host=host or server.host,
            port=server.port if port is None else port,
            log_level=log_level,
        )

    def wrap_asgi(self, wrap: Callable[[Any], Any]) -> None:
        """Put ASGI middleware around everything the server serves (request logs in tests, tracing)."""
        self._server.wrap_app(wrap)

    # -- running ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> Platform:
        """Serve from a background thread; returns once the server answers."""
        self._server.start(timeout_s)
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until SIGINT or SIGTERM, then drain the workers."""
        self._server.run_in_foreground()

    def stop(self, timeout_s: float | None = None, *, quiet: bool = False) -> None:
        """Drain workers and stop serving (SIGTERM's path). `quiet` hides the long polls the shutdown cuts short.

        `timeout_s`: how long to wait for the server thread; by default the drain plus 30 s.
        """
        if timeout_s is None:
            timeout_s = self.settings.drain_timeout_s + 30.0
        logger = logging.getLogger("uvicorn.error")
        level = logger.level
        if quiet:
            logger.setLevel(logging.CRITICAL)
        try:
            self._server.stop(timeout_s)
        finally:
            logger.setLevel(level)
            # Its data directory's lock goes with it, so a next server (a restart) may take over.
            self.store.close()

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
