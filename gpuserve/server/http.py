"""HTTP plumbing shared by the routes: the JSON error type, fast JSON responses, size-limited bodies, auth."""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from gpuserve.live.auth import hash_token
from gpuserve.live.registry import LiveWorker
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import MB
from gpuserve.server.admission import BodyBudget
from gpuserve.server.limits import MAX_JSON_DEPTH

__all__ = ["ApiError", "admin_auth", "client_auth", "endpoint_or_404", "json_response", "read_body", "worker_auth"]


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


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def admin_auth(rt: Runtime, request: Request, action: str) -> None:
    """Operator routes (`action`: "deploy", "worker logs", "exec") take an admin key; a client key gets 403.

    The admin keys are `server.admin_keys`; a file without them keeps its top-level `api_keys`
    (valid for every endpoint) as the admin keys. A file with no keys at all is open on
    loopback only. Endpoint keys and worker tokens never open an operator route.
    """
    admins = rt.admin_key_hashes or rt.global_key_hashes
    key = _bearer(request)
    digest = hash_token(key) if key else ""
    if not admins:
        if any(ep.key_hashes for ep in rt.endpoints.values()):
            raise ApiError(403, f"{action} needs an admin key, and this server has none: set server.admin_keys")
        client = request.client.host if request.client is not None else ""
        if client not in _LOOPBACK:
            raise ApiError(403, f"{action} needs an admin key; with no keys configured it is open on 127.0.0.1 only")
        return
    if digest in admins:
        return
    if digest and (digest in rt.global_key_hashes or any(digest in ep.key_hashes for ep in rt.endpoints.values())):
        raise ApiError(403, f"{action} needs the admin role (a key in server.admin_keys); this key is a client key")
    raise ApiError(401, f"missing or invalid admin key ({action} needs a key in server.admin_keys)")


async def worker_auth(rt: Runtime, endpoint_id: str, worker_id: str, request: Request, *, slow: bool = False) -> LiveWorker:
    """Worker routes take the worker's own token (raw, as the SDK sends it); client keys do not work here.

    On a shared store, a worker another server started is recognised by the digest of its token there."""
    worker = await rt.authenticate_worker(endpoint_id, worker_id, _bearer(request))
    if worker is None or worker.endpoint_id != endpoint_id:
        if slow:
            # The SDK retries a failed take at once; make a rejected worker's loop cheap.
            await asyncio.sleep(rt.settings.unknown_worker_delay_s)
        raise ApiError(401, f"unknown worker {worker_id!r} or invalid worker token for endpoint {endpoint_id!r}")
    return worker


async def read_body(request: Request, limit_bytes: int, route: str, budget: BodyBudget | None = None) -> bytes:
    """The request body, refused with 413 past `limit_bytes` (checked on the header, then while reading).

    With a `budget`, the body's bytes are reserved in it while they are received (the declared
    Content-Length at once): a budget that cannot hold them answers 503 with Retry-After.
    """
    declared = request.headers.get("content-length")
    declared_bytes = int(declared) if declared is not None and declared.isdigit() else None
    if declared_bytes is not None and declared_bytes > limit_bytes:
        raise _too_big(limit_bytes, route, declared_bytes)
    reserved = 0
    if budget is not None and declared_bytes:
        if not budget.reserve(declared_bytes):
            raise _budget_full(budget)
        reserved = declared_bytes
    try:
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
                if budget is not None and size > reserved:
                    if not budget.reserve(size - reserved):
                        raise _budget_full(budget)
                    reserved = size
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if budget is not None:
            budget.release(reserved)


def _too_big(limit_bytes: int, route: str, declared_bytes: int | None = None) -> ApiError:
    # The limit as Runpod documents it (decimal MB) and the exact bytes, so nobody guesses at MiB.
    # A body sent without Content-Length is refused where it passed the limit: its size is unknown.
    size = "" if declared_bytes is None else f" of {declared_bytes} bytes"
    return ApiError(
        413, f"request body{size} exceeds the {limit_bytes / MB:g} MB ({limit_bytes} bytes) limit of /{route}"
    )


def _budget_full(budget: BodyBudget) -> ApiError:
    return ApiError(
        503,
        f"the server is receiving {budget.held_bytes} bytes of request bodies, its limit is {budget.cap_bytes} "
        "(server.limits.max_body_bytes_in_flight); retry after 1 s",
        {"Retry-After": "1"},
    )


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: one step per run)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_WEIGHT = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_json(raw: bytes, what: str = "body", max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """Strict JSON or a 400 naming what was wrong: no NaN/Infinity, no integer past 4,300 digits, at most `max_depth` levels.

    `max_depth` None: only the parser's own bound (about 1,000 levels, still a 400). Worker
    results take that: they may be 256 MiB, and the depth scan costs about 35 ms per MB of
    small objects, while a client body (20 MB at most) is scanned.
    """
    # Fewer brackets than the limit cannot nest past it: most bodies skip the scan.
    if max_depth is not None and raw.count(b"[") + raw.count(b"{") > max_depth and _depth_over(raw, max_depth):
        raise ApiError(400, f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:  # NaN, or an integer past Python's 4,300 digits
        raise ApiError(400, f"{what} is not acceptable JSON ({str(exc)[:200]})") from None


def _depth_over(raw: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`, found before parsing (which would recurse).

    At C speed throughout: strings removed, everything but brackets deleted, then with each
    opening bracket as 2 and each closing one as 0, the depth after k brackets is the running
    sum minus k.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    depths = map(operator.sub, itertools.accumulate(brackets.translate(_BRACKET_WEIGHT)), itertools.count(1))
    return max(depths, default=0) > limit
