"""A TCP proxy on 127.0.0.1 that sends each connection to the first upstream that accepts it: nginx's `backup` servers.

With `round_robin`, each new connection starts from the next upstream instead (nginx picks one per
request; this proxy, which parses nothing, per connection). `cut()` closes every open connection,
so clients reconnect to whatever the upstreams are then.

Workers given its address reach the first replica while it lives and the next one once it is gone,
as behind the reverse proxy of a multi-host setup, without nginx on the test machine. Each
connection is piped both ways until either side closes; nothing is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["failover_proxy"]


class _Proxy:
    def __init__(self) -> None:
        self.upstreams: list[tuple[str, int]] = []  # tried in order for each new connection
        self.port = 0
        self.round_robin = False
        self._open: set[asyncio.StreamWriter] = set()
        self._turn = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="failover-proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        order = list(self.upstreams)
        if self.round_robin and order:
            self._turn += 1
            order = order[self._turn % len(order):] + order[: self._turn % len(order)]
        for host, port in order:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
                break
            except (TimeoutError, OSError):
                continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}

    def start(self) -> _Proxy:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def cut(self) -> None:
        """Close every connection open now (the clients reconnect through the upstreams as they are then)."""

        async def close() -> None:
            for w in list(self._open):
                with contextlib.suppress(OSError):
                    w.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextmanager
def failover_proxy() -> Iterator[_Proxy]:
    """A started proxy (`.port`); set `.upstreams` to [(host, port), ...], first choice first."""
    proxy = _Proxy().start()
    try:
        yield proxy
    finally:
        proxy.stop()
