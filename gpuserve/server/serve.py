"""Serving HTTP: bind a socket, run uvicorn over a runtime's app (in the foreground or a thread), drain on shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from gpuserve.live.runtime import Runtime
from gpuserve.server.admission import Admission, BodyBudget
from gpuserve.server.app import create_app
from gpuserve.server.conn_guard import guarded_protocol
from gpuserve.server.corked import CorkedHttpToolsProtocol
from gpuserve.server.fastpath import FastPath
from gpuserve.server.lb_proxy import LbProxy
from gpuserve.server.limits import HttpLimits
from gpuserve.server.rate_limit import RateLimit

__all__ = ["GracefulServer", "ServerThread", "bind_socket", "url_of", "uvicorn_config"]


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


def uvicorn_config(app: Any, log_level: str = "warning", limits: HttpLimits | None = None) -> uvicorn.Config:
    """`limits`: the connection limits (conn_guard.py) and uvicorn's limit_concurrency; None: neither."""
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        # httptools, one send() per response; with limits, also bounded headers and read timeouts
        http=CorkedHttpToolsProtocol if limits is None else guarded_protocol(limits),
        limit_concurrency=None if limits is None else limits.max_connections,
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
    """A real uvicorn server for one runtime in a background thread, on a socket bound beforehand."""

    def __init__(
        self, runtime: Runtime, sock: socket.socket, fast_path: bool = True, log_level: str = "warning",
        limits: HttpLimits | None = None,
    ) -> None:
        self._sock = sock
        self.url = url_of(sock)
        self.runtime = runtime
        self.limits = HttpLimits() if limits is None else limits
        self.app = create_app(runtime)
        self.app.state.admission = Admission(self.limits.queue_cap, BodyBudget(self.limits.max_body_bytes_in_flight))
        self.fast_path = FastPath(self.app) if fast_path else None
        inner: Any = self.fast_path or self.app
        self.rate_limit = RateLimit(inner, runtime, self.limits.rate_limits) if self.limits.rate_limits else None
        inner = self.rate_limit or inner
        # Load-balancing endpoints' requests go to their workers before anything else sees them.
        self.lb_proxy = LbProxy(inner, runtime)
        self._server = GracefulServer(uvicorn_config(self.lb_proxy, log_level, self.limits), runtime)
        self._thread = threading.Thread(target=self._run, name="gpuserve-server", daemon=True)
        self._error: BaseException | None = None

    def wrap_app(self, wrap: Callable[[Any], Any]) -> None:
        """Put ASGI middleware around the outermost app (before the proxy and the fast path), before the server starts."""
        self._server.config.app = wrap(self._server.config.app)

    def wrap_behind_proxy(self, wrap: Callable[[Any], Any]) -> None:
        """Put ASGI middleware behind the load-balancing proxy (around the fast path): proxied requests skip it."""
        self.lb_proxy.app = wrap(self.lb_proxy.app)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc

    def run_in_foreground(self) -> None:
        """Serve on this thread until SIGINT/SIGTERM (`gpuserve serve`)."""
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._sock.close()
