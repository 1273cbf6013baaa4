"""What one connection may hold before its request is whole: header bytes and lines, header and body read timeouts, connections per client.

uvicorn's httptools protocol (the one gpuserve runs, corked in `corked.py`) has no limit on a
request's headers: httptools gathers a header value in memory until its line ends, so a 50 MB
header was read whole before the 401, and a client that sends half a request and waits keeps
its connection (and what it sent) forever. This subclass counts what arrives while a request's
headers are incomplete, refuses 431 past `max_header_bytes` or `max_headers`, and closes with
408 a request whose headers take longer than `header_timeout_s` from its first byte (or from
the connection's start), or whose body pauses longer than `body_timeout_s`. It also refuses,
with 429 at once, a connection past `max_connections_per_client` from one address.

Deadlines are checked by one sweep per server every fraction of the shortest timeout, not one
timer per request: the hot path only stores a time (one `loop.time()` per request phase).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any, ClassVar

import httptools

from gpuserve.server.corked import CorkedHttpToolsProtocol
from gpuserve.server.limits import HttpLimits

__all__ = ["GuardedHttpProtocol", "guarded_protocol"]

_HEADERS, _BODY = 1, 2  # the phase a request is in while the client owes bytes; 0: it owes none

_REASONS = {408: b"Request Timeout", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the status and message are on the protocol."""


def _raw_response(status: int, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n%s"
        % (status, _REASONS[status], len(body), extra, body)
    )


class GuardedHttpProtocol(CorkedHttpToolsProtocol):
    """CorkedHttpToolsProtocol with the limits of `limits`; make one class per server with `guarded_protocol`."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    # Per server (each `guarded_protocol` class has its own): open connections by client address,
    # every open guarded connection (for the sweep), and whether the sweep is scheduled.
    per_client: ClassVar[Counter[str]] = Counter()
    open_connections: ClassVar[set[GuardedHttpProtocol]] = set()
    sweeping: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = 0
        self._deadline_s = 0.0
        self._header_bytes = 0
        self._header_lines = 0
        self._counted_host: str | None = None
        self._refusal: tuple[int, str] | None = None

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cls = type(self)
        limits = cls.limits
        host = self.client[0] if self.client else None
        cap = limits.max_connections_per_client
        if host is not None and cap is not None:
            if cls.per_client[host] >= cap:
                message = f"too many connections from {host}: at most {cap} open at once (server.limits.max_connections_per_client)"
                self.transport.write(_raw_response(429, message, b"retry-after: 1\r\n"))
                self.transport.close()
                return
            cls.per_client[host] += 1
            self._counted_host = host
        self._start(_HEADERS)
        cls.open_connections.add(self)
        if not cls.sweeping and self._sweep_interval_s() is not None:
            cls.sweeping = True
            self.loop.call_later(self._sweep_interval_s() or 1.0, cls._sweep, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport (and its connection_lost) from here on: a
        # WebSocket (load-balancing endpoints) is not counted against its client's connections.
        self._forget()
        super().handle_websocket_upgrade()

    def _forget(self) -> None:
        cls = type(self)
        self._phase = 0
        cls.open_connections.discard(self)
        if self._counted_host is not None:
            cls.per_client[self._counted_host] -= 1
            if cls.per_client[self._counted_host] <= 0:
                del cls.per_client[self._counted_host]
            self._counted_host = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, plus the header count: what arrives while headers are incomplete counts
        # (after a pipelined request's body in the same read, a little more: never less).
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._phase == _HEADERS:
            self._header_bytes += len(data)
            cap = type(self).limits.max_header_bytes
            if cap is not None and self._header_bytes > cap:
                self._refuse(431, f"request line and headers exceed {cap} bytes (server.limits.max_header_bytes)")

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start(_HEADERS)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        cap = type(self).limits.max_headers
        if cap is not None and self._header_lines > cap:
            self._refusal = (431, f"request has more than {cap} header lines (server.limits.max_headers)")
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        has_body = any(
            (n == b"content-length" and v.strip() not in (b"", b"0")) or n == b"transfer-encoding" for n, v in self.headers
        )
        if has_body:
            self._start(_BODY)
        else:
            self._phase = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        timeout_s = type(self).limits.body_timeout_s
        if timeout_s is not None:
            self._deadline_s = self.loop.time() + timeout_s
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = 0
        super().on_message_complete()

    # -- limits --------------------------------------------------------------------------------

    def _start(self, phase: int) -> None:
        self._phase = phase
        if phase == _HEADERS:
            self._header_bytes = 0
            self._header_lines = 0
            timeout_s = type(self).limits.header_timeout_s
        else:
            timeout_s = type(self).limits.body_timeout_s
        self._deadline_s = self.loop.time() + timeout_s if timeout_s is not None else float("inf")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close: before the app has started a response, or instead of the body it waits for."""
        self._phase = 0
        self._refusal = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() sees a disconnect; its own answer is dropped
            cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message))
            self.transport.close()

    @classmethod
    def _sweep_interval_s(cls) -> float | None:
        timeouts = [t for t in (cls.limits.header_timeout_s, cls.limits.body_timeout_s) if t is not None]
        return min([1.0, *(t / 4 for t in timeouts)]) if timeouts else None

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections past their deadline; runs while any guarded connection is open."""
        now = loop.time()
        for conn in list(cls.open_connections):
            if conn._phase and now > conn._deadline_s:
                conn._expire(now)
        if cls.open_connections:
            loop.call_later(cls._sweep_interval_s() or 1.0, cls._sweep, loop)
        else:
            cls.sweeping = False

    def _expire(self, now_s: float) -> None:
        limits = type(self).limits
        if self._phase == _HEADERS:
            self._refuse(408, f"request headers did not arrive within {limits.header_timeout_s} s (server.limits.header_timeout_s)")
        elif (self.flow is not None and self.flow.read_paused) or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            # The server has not read what came (reading is paused), or the client waits for its
            # 100 Continue: the wait is not the client's.
            self._deadline_s = now_s + (limits.body_timeout_s or 0.0)
        else:
            self._refuse(408, f"request body paused longer than {limits.body_timeout_s} s (server.limits.body_timeout_s)")


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for one server: its limits, its per-client counts and its sweep."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"limits": limits, "per_client": Counter(), "open_connections": set(), "sweeping": False},
    )
