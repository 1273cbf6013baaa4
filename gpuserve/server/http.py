"""HTTP plumbing shared by the routes: the JSON error type, fast JSON responses, size-limited bodies, auth."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from gpuserve.live.auth import hash_token
from gpuserve.live.registry import LiveWorker
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import MIB

__all__ = ["ApiError", "client_auth", "endpoint_or_404", "json_response", "read_body", "worker_auth"]


class ApiError(Exception):
    """An HTTP error answered as `{"error": message}`; the message names the field and value."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False).encode(), status_code=status_code, media_type="application/json", headers=headers
    )


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def endpoint_or_404(rt: Runtime, endpoint_id: str) -> Endpoint:
    ep = rt.endpoints.get(endpoint_id)
    if ep is None:
        raise ApiError(404, f"endpoint {endpoint_id!r} does not exist")
    return ep


def _bearer(request: Request) -> str:
    raw = request.headers.get("authorization", "").strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    return raw


def client_auth(rt: Runtime, ep: Endpoint, request: Request) -> None:
    """Client routes take `Authorization: Bearer KEY` or the bare key; an endpoint with no keys is open."""
    allowed = ep.key_hashes | rt.global_key_hashes
    if not allowed:
        return
    key = _bearer(request)
    if not key or hash_token(key) not in allowed:
        raise ApiError(401, f"missing or invalid API key for endpoint {ep.endpoint_id!r}")


async def worker_auth(rt: Runtime, endpoint_id: str, worker_id: str, request: Request, *, slow: bool = False) -> LiveWorker:
    """Worker routes take the worker's own token (raw, as the SDK sends it); client keys do not work here."""
    worker = rt.registry.authenticate(worker_id, _bearer(request))
    if worker is None or worker.endpoint_id != endpoint_id:
        if slow:
            # The SDK retries a failed take at once; make a rejected worker's loop cheap.
            await asyncio.sleep(rt.settings.unknown_worker_delay_s)
        raise ApiError(401, f"unknown worker {worker_id!r} or invalid worker token for endpoint {endpoint_id!r}")
    return worker


async def read_body(request: Request, limit_bytes: int, route: str) -> bytes:
    """The request body, refused with 413 past `limit_bytes` (checked on the header, then while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_big(limit_bytes, route)
    # ASGI receive() directly rather than request.stream(): the routes read the body once, and
    # the async generator costs more than the read on a small body.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit_bytes:
                raise _too_big(limit_bytes, route)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_big(limit_bytes: int, route: str) -> ApiError:
    return ApiError(413, f"request body exceeds the {limit_bytes // MIB} MB limit of /{route}")


def parse_json(raw: bytes, what: str = "body") -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON ({exc})") from None
