"""The proxy's upstream leg: aiohttp's connection pool, request writer and C response parser, without ClientSession's per-request layers.

`ClientSession.request` builds a ClientRequest and a ClientResponse per request, merges headers
three times, and consults cookies, proxies, auth, redirects, traces and middlewares: on a 2-core
host that was most of what the upstream leg cost the load-balancing proxy (BENCHMARKS.md,
"Load-balancing proxy"), and a proxy forwarding a request it already has needs none of it. This
module does what the session does underneath, with aiohttp's own parts: a keep-alive connection
from its `TCPConnector` pool, the request written with its `StreamWriter`, the response read by
its `ResponseHandler` (aiohttp's C HTTP parser), the connection handed back to the pool once the
body is read (or closed when it is not). As the session does, a request without a streamed body
whose pooled connection turns out closed by the worker is sent once more on a new one.

`ResponseHandler.set_response_params`/`read` and `StreamWriter` are aiohttp's internals, not its
documented API, so pyproject.toml caps aiohttp's version and tests/server/test_upstream.py checks
what this module relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from multidict import CIMultiDict
from yarl import URL

__all__ = ["Upstream", "UpstreamResponse"]

# RFC 9110 9.2.2: a request that may be sent twice, when the first try met a closed keep-alive connection.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_KEYS_KEPT = 1024
# A body up to this size goes out with the head, before the response is read; a larger one (or a
# stream) is written by a task of its own while the response is read, as aiohttp does, so a worker
# that answers before it has read the whole body (a 413) is heard.
_INLINE_BODY_BYTES = 64 * 1024


class UpstreamResponse:
    """A worker's response: its status and raw headers, and its body as aiohttp's StreamReader."""

    __slots__ = ("_conn", "_writer", "body", "raw_headers", "status")

    def __init__(
        self, status: int, raw_headers: tuple[tuple[bytes, bytes], ...], body: StreamReader, conn: Connection,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.body = body
        self._conn: Connection | None = conn
        self._writer = writer

    def close(self) -> None:
        """Done with it: the connection goes back to the pool when the body was read whole, else it is closed."""
        conn, self._conn = self._conn, None
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            if conn is not None:
                conn.close()
            return
        if conn is not None:
            if self.body.is_eof():
                conn.release()  # aiohttp closes it instead when the response said so (should_close)
            else:
                conn.close()


class Upstream:
    """One pool of keep-alive connections to workers (aiohttp's TCPConnector), and requests over it."""

    def __init__(self, connect_timeout_s: float = 10.0, keepalive_timeout_s: float = 30.0) -> None:
        self._connect_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        self._keepalive_timeout_s = keepalive_timeout_s
        self._connector: aiohttp.TCPConnector | None = None
        # Worker base URL -> a request that names it: what the connector keys its pool by.
        self._keys: dict[str, ClientRequest] = {}

    @property
    def connector(self) -> aiohttp.TCPConnector:
        if self._connector is None:  # made on the server's loop, at the first request
            self._connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout_s)
        return self._connector

    async def aclose(self) -> None:
        if self._connector is not None:
            await self._connector.close()
            self._connector = None
        self._keys.clear()

    def _key(self, base_url: str) -> ClientRequest:
        key = self._keys.get(base_url)
        if key is None:
            if len(self._keys) >= _KEYS_KEPT:  # workers come and go: forget them all now and then
                self._keys.clear()
            key = self._keys[base_url] = ClientRequest("GET", URL(base_url), loop=asyncio.get_running_loop())
        return key

    async def request(
        self,
        method: str,
        base_url: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        """Send `method target` to the worker at `base_url` (`http://host:port`); the caller closes the response.

        `headers` are sent as given (no Host among them: the worker's is added); a streamed
        `body` is sent chunked unless `headers` give its length. Errors are aiohttp's
        ClientError, or what the body iterator raised."""
        key = self._key(base_url)
        retry = method in _IDEMPOTENT and not isinstance(body, AsyncIterator)
        loop = asyncio.get_running_loop()
        out: CIMultiDict[str] = CIMultiDict(headers)
        out["Host"] = key.headers["Host"]
        line = f"{method} {target} HTTP/1.1"
        while True:
            conn = await self.connector.connect(key, [], self._connect_timeout)
            task: asyncio.Task[None] | None = None
            try:
                protocol = conn.protocol
                assert protocol is not None
                protocol.set_response_params(skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False)
                writer = StreamWriter(protocol, loop)
                if body is None:
                    await writer.write_headers(line, out)
                    await writer.write_eof()
                elif isinstance(body, bytes) and len(body) <= _INLINE_BODY_BYTES:
                    await writer.write_headers(line, out)
                    await writer.write_eof(body)
                else:
                    if not isinstance(body, bytes) and "Content-Length" not in out:
                        out["Transfer-Encoding"] = "chunked"
                        writer.enable_chunking()
                    await writer.write_headers(line, out)
                    task = asyncio.create_task(_write_body(writer, protocol, body))
                while True:
                    message, payload = await protocol.read()
                    # 1xx answers (103 Early Hints; 100 Continue, though gpuserve sends no Expect) come before the response.
                    if not 100 <= message.code < 200:
                        return UpstreamResponse(message.code, message.raw_headers, payload, conn, task)
            except aiohttp.ClientConnectionError:  # reset, disconnected: not a connect error (that is raised above)
                if task is not None:
                    task.cancel()
                conn.close()
                if not retry:
                    raise
                retry = False  # once, as aiohttp does: the pooled connection was closed by the worker
            except BaseException:
                if task is not None:
                    task.cancel()
                conn.close()
                raise


async def _write_body(writer: StreamWriter, protocol: ResponseHandler, body: bytes | AsyncIterator[bytes]) -> None:
    try:
        if isinstance(body, bytes):
            await writer.write_eof(body)
            return
        async for chunk in body:
            await writer.write(chunk)
        await writer.write_eof()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        # The response's reader is woken with the body's error (the body was too large, the
        # client went away, the worker stopped reading), as aiohttp's own body writer does.
        protocol.set_exception(exc)
