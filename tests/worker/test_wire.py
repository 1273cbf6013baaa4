"""The worker's lean HTTP/1.1 client against a scripted server on 127.0.0.1: framing, keep-alive, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gpuserve.worker.wire import LeanClient, usable_for

Script = Callable[[int, bytes], list[bytes] | None]  # (request number, raw request) -> writes, None: hang up


class Scripted:
    """A TCP server that answers each request with scripted raw bytes and records what it got."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                raw = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(raw)
                writes = self.script(len(self.requests), raw)
                if writes is None:
                    break
                for part in writes:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0)  # separate segments: the client must reassemble
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_content_length_chunked_204_and_keep_alive() -> None:
    answers = {
        1: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Gpuserve-Take-On-Done: 1\r\n\r\n", b'{"a":', b' "b"}'],
        2: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n", b"3;ext=1\r\n2]\n\r\n0\r\n\r\n"],
        3: [b"HTTP/1.1 204 No Content\r\n\r\n"],
        4: [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"],
    }

    async def main() -> None:
        async with Scripted(lambda n, raw: answers[n]) as srv:
            client = LeanClient({"Authorization": "tok", "User-Agent": "ua"})
            r1 = await client.get(srv.url + "/v2/ep/job-take/w1?job_in_progress=0")
            assert r1.status_code == 200 and r1.json() == {"a": "b"}
            assert r1.headers["x-gpuserve-take-on-done"] == "1"
            r2 = await client.post(srv.url + "/v2/ep/job-done/w1/j1?isStream=false", b'{"output": 1}')
            assert r2.status_code == 200 and r2.json() == [1, 2]
            r3 = await client.get(srv.url + "/x")
            assert r3.status_code == 204 and r3.content == b""
            r4 = await client.post(srv.url + "/y", b"{}")
            assert (r4.status_code, r4.text) == (201, "ok")
            await client.aclose()
            assert srv.connections == 1  # all four over one kept-alive connection
            first, second = srv.requests[0], srv.requests[1]
            assert first.startswith(b"GET /v2/ep/job-take/w1?job_in_progress=0 HTTP/1.1\r\n")
            assert b"\r\nHost: 127.0.0.1:" in first and b"\r\nAuthorization: tok\r\n" in first
            assert b"Content-Length" not in first
            assert second.startswith(b"POST /v2/ep/job-done/w1/j1?isStream=false HTTP/1.1\r\n")
            assert b"\r\nContent-Type: application/json\r\nContent-Length: 13\r\n" in second
            assert second.endswith(b'\r\n\r\n{"output": 1}')

    run(main())


def test_connection_close_and_body_until_eof() -> None:
    answers = {
        1: [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"],
        2: [b"HTTP/1.1 200 OK\r\n\r\nread until the end"],
        3: [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"],
    }

    def script(n: int, raw: bytes) -> list[bytes] | None:
        return answers[n]

    async def main() -> None:
        class Closing(Scripted):
            async def _serve(self, reader, writer):  # type: ignore[no-untyped-def]
                # One answer per connection, then close (what Connection: close and EOF framing need).
                self.connections += 1
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                for part in self.script(len(self.requests), head) or []:
                    writer.write(part)
                await writer.drain()
                writer.close()

        async with Closing(script) as srv:
            client = LeanClient({})
            assert (await client.get(srv.url + "/1")).text == "a"
            assert (await client.get(srv.url + "/2")).text == "read until the end"
            assert (await client.get(srv.url + "/3")).text == "c"
            assert srv.connections == 3  # a closed connection is never reused
            await client.aclose()

    run(main())


def test_a_stale_kept_alive_connection_is_retried_once_on_a_fresh_one() -> None:
    def script(n: int, raw: bytes) -> list[bytes] | None:
        if n == 2:
            return None  # the server drops the idle connection as the second request arrives
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%d " % n]

    async def main() -> None:
        async with Scripted(script) as srv:
            client = LeanClient({})
            assert (await client.get(srv.url + "/a")).text == "1 "
            assert (await client.get(srv.url + "/b")).text == "3 "  # the second attempt, on a new connection
            assert srv.connections == 2 and len(srv.requests) == 3
            await client.aclose()

    run(main())


def test_errors_are_httpx_errors() -> None:
    async def main() -> None:
        async with Scripted(lambda n, raw: [] if n == 1 else [b"garbage\r\n\r\n"]) as srv:
            client = LeanClient({})
            with pytest.raises(httpx.ReadTimeout):
                await client.get(srv.url + "/silent", timeout_s=0.2)  # no answer at all
            with pytest.raises(httpx.RemoteProtocolError, match="not an HTTP"):
                await client.get(srv.url + "/garbage")
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.get("https://127.0.0.1:1/x")
            await client.aclose()
        free = Scripted(lambda n, raw: None)
        async with free:
            url = free.url
        with pytest.raises(httpx.ConnectError):
            await LeanClient({}).get(url + "/x", timeout_s=5)

    run(main())


def test_usable_only_for_plain_http_without_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "GPUSERVE_WORKER_HTTP"):
        monkeypatch.delenv(name, raising=False)
    assert usable_for("http://127.0.0.1:8000/v2/ep/job-take/w")
    assert not usable_for("https://api.runpod.ai/v2/ep/job-take/w")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not usable_for("http://127.0.0.1:8000/x")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("GPUSERVE_WORKER_HTTP", "httpx")
    assert not usable_for("http://127.0.0.1:8000/x")


def test_request_targets_keep_path_and_query_and_drop_the_fragment() -> None:
    async def main() -> None:
        async with Scripted(lambda n, raw: [b"HTTP/1.1 204 No Content\r\n\r\n"]) as srv:
            client = LeanClient({})
            for suffix in ("", "?q=1#frag", "/a/b%20c?x=1&y=2"):
                assert (await client.get(srv.url + suffix)).status_code == 204
            await client.aclose()
        lines = [r.split(b"\r\n", 1)[0] for r in srv.requests]
        assert lines == [b"GET / HTTP/1.1", b"GET /?q=1 HTTP/1.1", b"GET /a/b%20c?x=1&y=2 HTTP/1.1"]

    run(main())
