"""A server-side request log: an ASGI middleware recording every request the server answers, with bodies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_LIMIT_BYTES = 256 * 1024  # compat handlers send small bodies; keep the log small too


@dataclass(frozen=True)
class Entry:
    """One answered request, stamped with the wall time at which the answer was sent."""

    at_s: float
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    request_body: bytes
    response_body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def request_json(self) -> Any:
        return json.loads(self.request_body) if self.request_body else None

    def response_json(self) -> Any:
        return json.loads(self.response_body) if self.response_body else None


class RequestLog:
    """Entries in the order answers were sent; thread-safe (the server runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []

    def add(self, entry: Entry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, path_part: str = "", endpoint_id: str | None = None) -> list[Entry]:
        """Entries whose path contains `path_part` (e.g. "/job-take-batch/"), on one endpoint if given."""
        prefix = f"/v2/{endpoint_id}/" if endpoint_id is not None else ""
        with self._lock:
            return [e for e in self._entries if path_part in e.path and e.path.startswith(prefix)]


class RecordRequests:
    """Pure ASGI middleware: passes everything through and appends an Entry per HTTP request."""

    def __init__(self, app: App, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_body = bytearray()
        response_body = bytearray()
        status = [0]

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < BODY_LIMIT_BYTES:
                request_body.extend(message.get("body", b""))
            return message

        async def send_and_keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and len(response_body) < BODY_LIMIT_BYTES:
                response_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_keep)
        finally:
            self.log.add(
                Entry(
                    at_s=time.time(),
                    method=scope["method"],
                    path=scope["path"],
                    query=parse_qs(scope.get("query_string", b"").decode()),
                    status=status[0],
                    request_body=bytes(request_body),
                    response_body=bytes(response_body),
                )
            )
