"""A lean HTTP/1.1 keep-alive client on asyncio for the worker's hot routes (job-take, job-done) over plain http.

httpx spends more CPU per request than the rest of a trivial job's work together (its
transport layers, and httpcore probing for trio on every request), and a worker makes two
requests per job. This client does one write per request and parses the answer in a single
asyncio Protocol. It speaks only what the server side needs: HTTP/1.1 over TCP, bodies
framed by Content-Length, chunked or end of connection. Errors are raised as httpx's
exception types so callers handle both clients alike; https URLs and configured proxies are
left to httpx (see `usable_for`).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["LeanClient", "LeanResponse", "usable_for"]

_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def usable_for(url: str) -> bool:
    """Plain-http URLs with no proxy configured (httpx would honour one; this client does not)."""
    if os.environ.get("GPUSERVE_WORKER_HTTP", "").lower() == "httpx":
        return False
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return False
    return url.startswith("http://")


class LeanResponse:
    """The parts of httpx.Response the worker reads."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers or {}  # names in lower case

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._buf = bytearray()
        self._waiter: asyncio.Future[LeanResponse] | None = None
        self._head: tuple[int, int | None, bool] | None = None  # status, content length, chunked
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self.got_bytes = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self._buf += data
        if self._waiter is not None:
            try:
                self._parse()
            except httpx.HTTPError as exc:
                self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes a read-until-close body

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._head is not None and self._head[1] is None and not self._head[2]:
            self._finish(bytes(self._buf))  # body delimited by the end of the connection
            return
        self._fail(httpx.RemoteProtocolError(f"server closed the connection before the response ended ({exc})"))

    # -- requests -------------------------------------------------------------------------------

    def send(self, data: bytes, waiter: asyncio.Future[LeanResponse]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self._head = None
        self._chunks = []
        self.got_bytes = False
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def _finish(self, body: bytes) -> None:
        assert self._head is not None
        status = self._head[0]
        waiter, self._waiter = self._waiter, None
        if self._buf:  # bytes past the response: the framing is off, do not reuse
            self.reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_result(LeanResponse(status, body, self._headers))

    def _parse(self) -> None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise httpx.RemoteProtocolError("response headers larger than 64 KiB")
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise httpx.RemoteProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
            try:
                status = int(parts[1])
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad status line: {lines[0][:80]!r}") from None
            length: int | None = None
            chunked = False
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                headers[key.decode("latin-1")] = value.strip().decode("latin-1")
                if key == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        raise httpx.RemoteProtocolError(f"bad Content-Length: {value[:40]!r}") from None
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif key == b"connection" and b"close" in value.lower():
                    self.reusable = False
            if parts[0] == b"HTTP/1.0":
                self.reusable = False
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                self._parse()
                return
            if status in (204, 304) or self._method_head:
                length, chunked = 0, False
            if length is None and not chunked:
                self.reusable = False  # read until the server closes
            self._head = (status, length, chunked)
            self._headers = headers
        status, length, chunked = self._head
        if chunked:
            self._parse_chunks()
        elif length is not None and len(buf) >= length:
            body = bytes(buf[:length])
            del buf[:length]
            self._finish(body)

    _method_head = False

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return
            size_text = bytes(buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return
                del buf[: trailer_end + 4]
                self._finish(b"".join(self._chunks))
                return
            if len(buf) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self._chunks.append(bytes(buf[start : start + size]))
            del buf[: start + size + 2]


class LeanClient:
    """A keep-alive connection pool per host for plain-http GET and POST; see the module docstring."""

    def __init__(self, headers: dict[str, str], timeout_s: float = 30.0, max_idle: int = 64) -> None:
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if "\r" not in v and "\n" not in v)
        self.timeout_s = timeout_s
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._origins: dict[str, tuple[str, int, str]] = {}  # "http://netloc" -> (host, port, Host header)
        self._closed = False

    def _target(self, url: str) -> tuple[str, int, str, str]:
        """(host, port, Host header, path with query); the origin is parsed once, the path per call."""
        if not url.startswith("http://"):
            raise httpx.UnsupportedProtocol(f"the lean client only speaks plain http, not {url!r}")
        ends = [i for i in (url.find("/", 7), url.find("?", 7), url.find("#", 7)) if i >= 0]
        cut = min(ends) if ends else len(url)
        origin, path = url[:cut], url[cut:]
        if not path.startswith("/"):
            path = "/" + path
        fragment = path.find("#")
        if fragment >= 0:
            path = path[:fragment]
        hit = self._origins.get(origin)
        if hit is None:
            parts = urlsplit(origin)
            if not parts.hostname:
                raise httpx.UnsupportedProtocol(f"no host in {url!r}")
            hit = (parts.hostname, parts.port or 80, parts.netloc.rpartition("@")[2])
            self._origins[origin] = hit
        return (*hit, path)

    async def _connect(self, host: str, port: int, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Connection, host, port), timeout_s)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out after {timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return conn

    async def request(
        self, method: str, url: str, body: bytes | None = None, *, content_type: str = "application/json",
        timeout_s: float | None = None,
    ) -> LeanResponse:
        if self._closed:
            raise httpx.ConnectError("the client is closed")
        host, port, host_header, path = self._target(url)
        head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n{self._extra}"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        idle = self._idle.setdefault((host, port), [])
        loop = asyncio.get_running_loop()
        while True:
            reused = False
            conn: _Connection | None = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed and candidate.transport is not None and not candidate.transport.is_closing():
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect(host, port, timeout)
            conn._method_head = method == "HEAD"
            waiter: asyncio.Future[LeanResponse] = loop.create_future()
            conn.send(data, waiter)
            timer = loop.call_later(timeout, _time_out, waiter, timeout)
            try:
                response = await waiter
            except httpx.RemoteProtocolError:
                if reused and not conn.got_bytes:
                    continue  # the server had closed this idle connection: send again on a fresh one
                raise
            except BaseException:
                conn.close()  # timed out or cancelled mid-response: the connection's state is unknown
                raise
            finally:
                timer.cancel()
            if conn.reusable and not conn.closed and len(idle) < self._max_idle and not self._closed:
                idle.append(conn)
            else:
                conn.close()
            return response

    async def get(self, url: str, *, timeout_s: float | None = None) -> LeanResponse:
        return await self.request("GET", url, timeout_s=timeout_s)

    async def post(self, url: str, body: bytes, *, timeout_s: float | None = None) -> LeanResponse:
        return await self.request("POST", url, body, timeout_s=timeout_s)

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _time_out(waiter: asyncio.Future[LeanResponse], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no response within {timeout_s:g} s"))
