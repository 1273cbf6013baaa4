"""The proxy's upstream leg (gpuserve/server/upstream.py) against a real HTTP server on 127.0.0.1, and what it relies on in aiohttp.

upstream.py uses aiohttp below ClientSession: `TCPConnector.connect`, `ResponseHandler.set_response_params`
and `read`, `StreamWriter`, and a `ClientRequest` as the pool's key. These are not aiohttp's documented
API, so a release may change them; the first tests name what changed, and pyproject.toml caps aiohttp
until they pass on a newer one. The server here is a few lines of asyncio that answer by a script
per connection, so keep-alive reuse, a worker closing a pooled connection, 1xx answers and
chunked bodies happen exactly when the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_writer import StreamWriter

from gpuserve.server.upstream import Upstream

AIOHTTP = importlib.metadata.version("aiohttp")


def test_installed_aiohttp_is_within_the_pin() -> None:
    requirements = pytest.importorskip("packaging.requirements")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [
        requirements.Requirement(r) for r in pyproject["project"]["optional-dependencies"]["server"] if r.startswith("aiohttp")
    ]
    assert len(pins) == 1, pins
    spec = pins[0].specifier
    assert any(s.operator == "<" for s in spec), f"the aiohttp requirement {pins[0]} has no upper bound"
    assert spec.contains(AIOHTTP), f"installed aiohttp {AIOHTTP} is outside the pin {pins[0]}"


def test_the_aiohttp_internals_upstream_uses_are_there() -> None:
    params = inspect.signature(ResponseHandler.set_response_params).parameters
    for name in ("skip_payload", "read_until_eof", "auto_decompress"):
        assert name in params, f"aiohttp {AIOHTTP}: ResponseHandler.set_response_params has no {name!r}"
    assert inspect.iscoroutinefunction(ResponseHandler.read), f"aiohttp {AIOHTTP}: ResponseHandler.read is not a coroutine"
    for name in ("write_headers", "write", "write_eof"):
        assert inspect.iscoroutinefunction(getattr(StreamWriter, name, None)), f"aiohttp {AIOHTTP}: StreamWriter.{name}"
    assert callable(getattr(StreamWriter, "enable_chunking", None)), f"aiohttp {AIOHTTP}: StreamWriter.enable_chunking"
    assert list(inspect.signature(StreamWriter).parameters)[:2] == ["protocol", "loop"]
    assert list(inspect.signature(aiohttp.TCPConnector.connect).parameters)[1:4] == ["req", "traces", "timeout"]


# -- a scripted server ---------------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(request line, headers, body) of one request: a test server's reading, Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines)}
    body = b""
    if headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    elif b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    return line, headers, body


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@contextlib.asynccontextmanager
async def _upstream_to(script: Script) -> AsyncIterator[tuple[Upstream, str, list[int]]]:
    """An Upstream and a server running `script(reader, writer, n)` for the n-th request on each connection, until it
    returns False; yields the Upstream, the server's URL and each connection's client port; closes both after."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername")[1])
        n = 0
        try:
            while await script(reader, writer, n):
                n += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    up = Upstream()
    try:
        yield up, f"http://127.0.0.1:{port}", connections
    finally:
        await up.aclose()
        server.close()


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_request_and_its_answer_and_the_connection_reused() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        seen.append(await _read_request(reader))
        writer.write(_answer(b"hello %d" % n, b"x-answer: yes\r\n"))
        return True

    async def test() -> None:
        async with _upstream_to(script) as (up, url, connections):
            for i in range(3):
                r = await up.request("POST", url, "/a%20b?q=1", [("x-custom", "kept"), ("content-length", "4")], b"body")
                assert r.status == 200
                assert (b"x-answer", b"yes") in r.raw_headers
                assert await r.body.read() == b"hello %d" % i
                r.close()
        assert len(connections) == 1, "each request opened a connection: none went back to the pool"
        line, headers, body = seen[0]
        assert line == b"POST /a%20b?q=1 HTTP/1.1"
        assert headers[b"host"] == url.removeprefix("http://").encode() and headers[b"x-custom"] == b"kept"
        assert body == b"body"

    _run(test)


def test_a_pooled_connection_the_worker_closed_is_retried_once_for_an_idempotent_request() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await _read_request(reader)
        if n == 1:  # the second request on a connection: closed unanswered, as a keep-alive timeout does
            return False
        writer.write(_answer(b"ok"))
        return True

    async def test() -> None:
        async with _upstream_to(script) as (up, url, connections):
            for _ in range(2):
                r = await up.request("GET", url, "/", [], None)
                assert (r.status, await r.body.read()) == (200, b"ok")
                r.close()
            assert len(connections) == 2, connections  # the second GET went again, on a new connection
            # POST may not be sent twice: the error reaches the caller.
            with pytest.raises(aiohttp.ClientConnectionError):
                await up.request("POST", url, "/", [("content-length", "1")], b"x")

    _run(test)


def test_a_streamed_body_goes_chunked_and_1xx_answers_are_skipped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        _, headers, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        writer.write(_answer(headers.get(b"transfer-encoding", b"-") + b" " + body))
        return True

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three" * 30_000):
            yield part

    async def test() -> None:
        async with _upstream_to(script) as (up, url, _):
            r = await up.request("PUT", url, "/", [], chunks())
            assert r.status == 200
            assert await r.body.read() == b"chunked one two " + b"three" * 30_000
            r.close()

    _run(test)


def test_a_body_read_only_in_part_closes_its_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")  # the rest never comes
        await writer.drain()
        return True

    async def test() -> None:
        async with _upstream_to(script) as (up, url, connections):
            for _ in range(2):
                r = await up.request("GET", url, "/", [], None)
                assert await r.body.readany() == b"12345"
                r.close()  # the client went away mid-body
        assert len(connections) == 2, "a connection with a body still owed went back to the pool"

    _run(test)


def test_an_error_of_the_body_reaches_the_caller() -> None:
    class Gone(Exception):
        pass

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        return False

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise Gone

    async def test() -> None:
        async with _upstream_to(script) as (up, url, _):
            with pytest.raises(Gone):
                await up.request("POST", url, "/", [], chunks())

    _run(test)
