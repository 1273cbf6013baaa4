"""uvicorn's httptools protocol with writes gathered per event-loop turn: one send() per response, not two.

An ASGI response is two messages (start, then body) and uvicorn writes each to the socket at
once, so every small JSON answer costs two send() system calls. On loopback a send() runs the
receiver's side of TCP too, and on a small host those calls were a third of the server's CPU
under load. The transport wrapper here keeps what is written during one turn of the event loop
and hands it to the real transport in one write at the end of the turn; closing flushes first,
so nothing is reordered or lost.

HttpToolsProtocol is private to uvicorn, so pyproject.toml caps uvicorn's version and
tests/server/test_corked.py checks what this module relies on (the class, connection_made's
signature, self.loop, the transport methods uvicorn calls) on the installed release.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CorkedHttpToolsProtocol"]

_FLUSH_AT_BYTES = 64 * 1024


class _CorkedTransport:
    """Delegates to a real transport; write() is deferred to the end of the current loop turn."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= _FLUSH_AT_BYTES:
            # A streamed response writing a lot in one turn goes out now, so the real
            # transport's flow control (pause_writing) sees it.
            self._flush()

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol over a _CorkedTransport; everything else is uvicorn's."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
