"""An ASGI front that sends the hot job routes straight to their handlers, past FastAPI's per-request layers.

Every job costs three requests (runsync or run, job-take, job-done) and, on a small host, FastAPI's
middleware stack and parameter resolution cost more CPU than the work itself. The same handler
functions run either way, so behaviour is identical; everything else (docs, operator routes, rare
client routes, lifespan) goes to the FastAPI app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gpuserve.server import client_api, worker_api
from gpuserve.server.http import ApiError, json_response

__all__ = ["FastPath"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _query(scope: Scope) -> dict[str, list[str]]:
    raw: bytes = scope["query_string"]
    if not raw:
        return {}
    text = raw.decode()
    if "%" in text or "+" in text or ";" in text:
        return parse_qs(text)
    query: dict[str, list[str]] = {}
    for pair in text.split("&"):  # the SDKs' plain `k=v&k=v`, without parse_qs's general machinery
        key, sep, value = pair.partition("=")
        if sep and value:  # parse_qs drops blank values too
            query.setdefault(key, []).append(value)
    return query


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise ApiError(422, f"{name} must be an integer, was {values[-1]!r}") from None


def _str_param(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


class FastPath:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parts = scope["path"].split("/")
            if len(parts) >= 4 and parts[1] == "v2":
                response = await self._route(scope, receive, parts)
                if response is not None:
                    await response(scope, receive, send)  # type: ignore[arg-type]
                    return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    async def _route(self, scope: Scope, receive: Receive, parts: list[str]) -> Response | None:
        method, n, ep, op = scope["method"], len(parts), parts[2], parts[3]
        call: Callable[[Request], Awaitable[Response]] | None = None
        if n == 4 and method == "POST" and op == "run":
            def call(r: Request) -> Awaitable[Response]:
                return client_api.run(r, ep)
        elif n == 4 and method == "POST" and op == "runsync":
            def call(r: Request) -> Awaitable[Response]:
                return client_api.runsync(r, ep, _int_param(_query(scope), "wait"))
        elif n == 5 and op == "status" and method in ("GET", "POST"):
            def call(r: Request) -> Awaitable[Response]:
                return client_api.status(r, ep, parts[4])
        elif n == 5 and method == "GET" and op == "job-take":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_take(r, ep, parts[4])
        elif n == 5 and method == "GET" and op == "job-take-batch":
            def call(r: Request) -> Awaitable[Response]:
                size = _int_param(_query(scope), "batch_size")
                return worker_api.job_take_batch(r, ep, parts[4], 1 if size is None else size)
        elif n == 6 and method == "POST" and op == "job-done":
            def call(r: Request) -> Awaitable[Response]:
                take = _int_param(_query(scope), "gpuserve_take")
                return worker_api.job_done(r, ep, parts[4], parts[5], take or 0)
        elif n == 6 and method == "POST" and op == "job-stream":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_stream(r, ep, parts[4], parts[5])
        elif n == 5 and method == "GET" and op == "ping":
            def call(r: Request) -> Awaitable[Response]:
                q = _query(scope)
                return worker_api.ping(
                    r, ep, parts[4], _str_param(q, "job_id"), _str_param(q, "status"),
                    _str_param(q, "check"), _str_param(q, "reason"),
                )
        elif n == 5 and method == "GET" and op == "job-stop":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_stop(r, ep, parts[4])
        if call is None:
            return None
        scope["app"] = self.app  # what request.app (and so the runtime) resolves to
        try:
            return await call(Request(scope, receive))
        except ApiError as exc:
            return json_response({"error": exc.message}, exc.status_code)
