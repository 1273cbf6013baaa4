"""The one composition root of a live gpuserve: store, worker registry, backend, runtime and HTTP server, wired once.

`gpuserve serve`, `gpuserve replay`, `gpuserve calibrate`, the benchmarks and the live
tests all build their platform here, so a new part (a store, a backend, a setting) is
wired in one place. The socket is bound first so the URL handed to workers is known even
for port 0; nothing starts until `start()` (a background thread) or `serve_forever()`.

    with Platform(endpoints, data_dir=tmp) as p:      # process backend, SQLite store
        httpx.post(f"{p.url}/v2/echo/run", ...)
    Platform(endpoints, data_dir=tmp, store="postgresql://...")   # jobs in PostgreSQL
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gpuserve.config.endpoints import ServeConfig, ServerSection
from gpuserve.config.updates import EndpointBook
from gpuserve.core.billing import BillingModel
from gpuserve.core.clock import Clock
from gpuserve.core.errors import BackendError, ConfigError
from gpuserve.live.backend import LiveBackend
from gpuserve.live.clock import SteadyClock
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import ServerSettings
from gpuserve.server.limits import RUNPOD_RATE_LIMITS, HttpLimits, RouteLimit
from gpuserve.server.metrics import Metrics
from gpuserve.server.serve import ServerThread, bind_socket, url_of
from gpuserve.store.base import JobStore
from gpuserve.store.location import open_store

__all__ = ["BackendFactory", "Platform", "backend_factory", "http_limits", "process_backend"]

log = logging.getLogger("gpuserve.server")

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
    """The BackendFactory for a `--backend` name: `process` (the default), `docker` or `ray` (at $RAY_ADDRESS)."""
    if name == "process":
        return process_backend
    if name == "ray":
        from gpuserve.backends.ray_backend import ray_backend_factory

        return ray_backend_factory()
    if name == "docker":
        try:
            from gpuserve.backends.docker import docker_backend_factory
        except ImportError as exc:
            raise BackendError(f"the docker backend needs the docker extra: pip install 'gpuserve[docker]' ({exc})") from None
        return docker_backend_factory()
    raise ConfigError("--backend", name, "must be 'process', 'docker' or 'ray'")


def http_limits(server: ServerSection) -> HttpLimits:
    """`server.limits` and `server.rate_limits` of endpoints.yaml as the HTTP server's limits."""
    lim = server.limits
    rates = dict(RUNPOD_RATE_LIMITS)
    for group, entry in server.rate_limits.items():
        if entry is None:
            rates.pop(group, None)
        else:
            rates[group] = RouteLimit(entry.per_10s, entry.concurrent)
    return HttpLimits(
        max_header_bytes=lim.max_header_bytes,
        max_headers=lim.max_headers,
        header_timeout_s=lim.header_timeout_s,
        body_timeout_s=lim.body_timeout_s,
        max_connections_per_client=lim.max_connections_per_client,
        max_connections=lim.max_connections,
        max_queued_jobs=lim.max_queued_jobs,
        max_body_bytes_in_flight=lim.max_body_bytes_in_flight,
        rate_limits=rates,
    )


class Platform:
    """A live gpuserve, built but not started.

    `backend` is a name (`process`, `docker`), a BackendFactory, or None for a server whose
    workers a caller registers by hand (tests of the worker API). `wrap_backend` lets an
    observer (the fidelity recorder) stand between the controller and the real backend.
    `store` is a JobStore, a postgresql:// URL, or None for SQLite in `data_dir`. `limits` is
    what a client may make the server hold (headers, timeouts, connections, rates, queued jobs);
    None: `gpuserve serve`'s defaults (README "Limits").
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        data_dir: Path,
        backend: str | BackendFactory | None = "process",
        settings: ServerSettings | None = None,
        clock: Clock | None = None,
        store: JobStore | str | None = None,
        registry: WorkerRegistry | None = None,
        global_key_hashes: frozenset[str] = frozenset(),
        admin_key_hashes: frozenset[str] = frozenset(),
        admin_key_names: dict[str, str] | None = None,
        base_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fast_path: bool = True,
        log_level: str = "warning",
        wrap_backend: Callable[[LiveBackend], LiveBackend] | None = None,
        billing: BillingModel | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings or ServerSettings()
        self.clock = clock or SteadyClock()
        # The store first: it locks the data directory, so a second server on it is refused by
        # name (directory and holder) before it could fail less clearly on a taken port.
        if store is None or isinstance(store, str):
            # A lease outlives the registry's own verdict on a silent worker (liveness timeout) twice over.
            store = open_store(
                store,
                data_dir,
                now_s=self.clock.now_s(),
                lease_s=2 * self.settings.liveness_timeout_s,
                max_retries=self.settings.max_retries,
                max_payload_bytes_in_memory=self.settings.max_payload_bytes_in_memory,
                spill_payload_bytes=self.settings.spill_payload_bytes,
            )
        self.store: JobStore = store
        if store.poll_fallback_s is not None and not self.settings.adoptable_workers:
            # Other replicas share the store: workers that can outlive this server may be adopted by them.
            self.settings = dataclasses.replace(self.settings, adoptable_workers=True)
        try:
            # Endpoints changed at run time: their stored versions replayed over what was given (config/updates.py).
            given = {e.endpoint_id: e for e in endpoints}
            self.book = EndpointBook(given.values(), base_dir or Path.cwd())
            stored = self.store.changes()
            self.book.replay(stored)
            for setting in self.book.shadowed:
                log.warning("%s: the stored run-time value wins over the file's (gpuserve endpoints history)", setting)
            endpoints = self.book.endpoints(given)
        except BaseException:
            self.store.close()
            raise
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
                worker_url = (self.settings.worker_url or self.url).rstrip("/")
                self.backend = factory(self.registry, worker_url, self.settings, self.clock, data_dir)
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
                billing=billing,
                admin_key_hashes=admin_key_hashes,
                admin_key_names=admin_key_names,
            )
            self._server = ServerThread(self.runtime, self._sock, fast_path=fast_path, log_level=log_level, limits=limits)
            self._server.app.state.book = self.book  # the endpoint routes' documents (server/endpoints_api.py)
            # Other servers on a shared store: their later changes reach this one through the book.
            self.runtime.changes_seq = max((c.seq for c in stored), default=0)
            self.runtime.endpoint_changes = self.book.apply_stored
            # /metrics, and every request counted: in front of the fast path, behind the proxy (which
            # counts its own requests, so they pay for no wrapper).
            self.metrics = Metrics(self.runtime)
            self._server.wrap_behind_proxy(self.metrics.wrap)
            self._server.lb_proxy.counts = self.metrics.http_requests
            if self._server.fast_path is not None:
                self._server.fast_path.counts = self.metrics.http_requests
                self.metrics.fast_path_counts = True
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
        store: str | None = None,
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
                account_max_workers=server.account_max_workers,
                poll_timeout_s=server.poll_timeout_s,
                drain_timeout_s=server.drain_timeout_s,
                webhook_allowed_networks=tuple(server.webhook_allowed_networks),
                metrics_auth=server.metrics_auth,
                webhook_attempts=server.webhook_attempts,
                webhook_retry_delay_s=server.webhook_retry_delay_s,
                max_run_bytes=server.limits.max_run_bytes,
                max_runsync_bytes=server.limits.max_runsync_bytes,
                worker_url=server.worker_url,
                max_payload_bytes_in_memory=server.limits.max_payload_bytes_in_memory,
                spill_payload_bytes=server.limits.spill_payload_bytes,
            ),
            global_key_hashes=config.global_key_hashes,
            admin_key_hashes=config.admin_key_hashes,
            admin_key_names=config.admin_key_names,
            base_dir=config.base_dir,
            host=host or server.host,
            port=server.port if port is None else port,
            log_level=log_level,
            billing=config.billing,
            store=store or server.store,
            limits=http_limits(server),
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
