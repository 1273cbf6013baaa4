"""An ASGI front that sends the hot job routes straight to their handlers, past FastAPI's per-request layers.

Every job costs three requests (runsync or run, job-take, job-done) and, on a small host, FastAPI's
middleware stack and parameter resolution cost more CPU than the work itself. The same handler
functions run either way, and the fast path takes a request only when it would resolve it exactly
as FastAPI does: anything unusual (an empty path segment, a query value that is not a plain
integer where one is expected) goes to the FastAPI app, which answers it, errors included.
Everything else (docs, operator routes, rare client routes, lifespan) goes to the FastAPI app too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from gpuserve.core.errors import StoreError
from gpuserve.server import client_api, worker_api
from gpuserve.server.http import ApiError
from gpuserve.server.metrics import COUNTED, HttpCounts, call_counted, route_of

__all__ = ["FastPath"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# The integers pydantic reads the same way as int() does; anything else ("1.0", "+5", " 5",
# "", "abc") goes to FastAPI, which accepts or refuses it with its own message.
_PLAIN_INT = re.compile(r"-?[0-9]{1,18}")


class _ToFastApi(Exception):
    """The request is one the fast path does not resolve itself; FastAPI answers it."""


def _query(scope: Scope) -> dict[str, str]:
    """The query as Starlette's QueryParams reads it: latin-1, blank values kept, the last value wins."""
    raw: bytes = scope["query_string"]
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    query: dict[str, str] = {}
    for pair in text.split("&"):  # the SDKs' plain `k=v&k=v`, without parse_qsl's unquoting
        if pair:  # parse_qsl skips empty pairs (`a=1&&b=2`) and reads `k` as `k=`
            key, _, value = pair.partition("=")
            query[key] = value
    return query


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _PLAIN_INT.fullmatch(value):
        raise _ToFastApi(name)
    return int(value)


class FastPath:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        # Requests by method, route and status (gpuserve.server.metrics), counted here for the hot
        # routes: the response's status is at hand, so no wrapper around `send` is needed.
        self.counts: HttpCounts | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            counts = self.counts if COUNTED not in scope else None
            parts = scope["path"].split("/")
            # A `{param}` of a FastAPI route matches one or more characters, so a path with an
            # empty segment (`/v2//run`) is not a route there: FastAPI answers its 404.
            if len(parts) >= 4 and parts[1] == "v2" and all(parts[2:]):
                try:
                    call = self._route(scope, parts)
                except _ToFastApi:
                    call = None
                if call is not None:
                    status = 500
                    try:
                        response = await self._answer(scope, receive, call)
                        status = response.status_code
                        await response(scope, receive, send)  # type: ignore[arg-type]
                    finally:
                        if counts is not None:
                            counts[(scope["method"], route_of(scope["path"]), status)] += 1
                    return
            if counts is not None:
                await call_counted(self.app, scope, receive, send, counts)  # type: ignore[arg-type]
                return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    async def _answer(self, scope: Scope, receive: Receive, call: Callable[[Request], Awaitable[Response]]) -> Response:
        scope["app"] = self.app  # what request.app (and so the runtime) resolves to
        request = Request(scope, receive)
        try:
            return await call(request)
        except (ApiError, StoreError) as exc:
            # The app's own handler, so an error reads the same on both paths.
            answer = self.app.exception_handlers[type(exc)](request, exc)
            return await answer if isinstance(answer, Awaitable) else answer
        except ClientDisconnect:
            # The client left (or its body timed out, conn_guard.py) mid-body: nobody reads an answer,
            # and a traceback per such request would be a log an attacker writes.
            return Response(status_code=400)

    def _route(self, scope: Scope, parts: list[str]) -> Callable[[Request], Awaitable[Response]] | None:
        """The handler call for a hot route, its query already read; None for any other request."""
        method, n, ep, op = scope["method"], len(parts), parts[2], parts[3]
        if n == 4 and method == "POST" and op == "run":
            def call(r: Request) -> Awaitable[Response]:
                return client_api.run(r, ep)
        elif n == 4 and method == "POST" and op == "runsync":
            wait = _int_param(_query(scope), "wait")

            def call(r: Request) -> Awaitable[Response]:
                return client_api.runsync(r, ep, wait)
        elif n == 5 and op == "status" and method in ("GET", "POST"):
            def call(r: Request) -> Awaitable[Response]:
                return client_api.status(r, ep, parts[4])
        elif n == 5 and method == "GET" and op == "job-take":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_take(r, ep, parts[4])
        elif n == 5 and method == "GET" and op == "job-take-batch":
            size = _int_param(_query(scope), "batch_size")

            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_take_batch(r, ep, parts[4], 1 if size is None else size)
        elif n == 6 and method == "POST" and op == "job-done":
            take = _int_param(_query(scope), "gpuserve_take")

            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_done(r, ep, parts[4], parts[5], 0 if take is None else take)
        elif n == 6 and method == "POST" and op == "job-stream":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_stream(r, ep, parts[4], parts[5])
        elif n == 5 and method == "GET" and op == "ping":
            q = _query(scope)

            def call(r: Request) -> Awaitable[Response]:
                return worker_api.ping(
                    r, ep, parts[4], q.get("job_id"), q.get("status"), q.get("check"), q.get("reason")
                )
        elif n == 5 and method == "GET" and op == "job-stop":
            def call(r: Request) -> Awaitable[Response]:
                return worker_api.job_stop(r, ep, parts[4])
        else:
            return None
        return call
