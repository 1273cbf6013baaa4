"""The FastAPI app factory: client, worker and operator routes over one Runtime; errors as {"error": message}."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from gpuserve.core.errors import StoreError
from gpuserve.live.history import History, Sampling
from gpuserve.live.runtime import Runtime
from gpuserve.server import admin_api, client_api, dashboard_api, endpoints_api, openapi, ops_api, worker_api
from gpuserve.server.http import ApiError, json_response
from gpuserve.server.limits import STORE_RETRY_AFTER_S

__all__ = ["create_app"]


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


def create_app(runtime: Runtime) -> FastAPI:
    """An app serving `runtime`; the runtime starts with the app (lifespan) and stops with it."""

    # The dashboard's charts: one sample a second, bounded (gpuserve.live.history).
    sampling = Sampling(History(runtime))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        sampling.start()
        try:
            yield
        finally:
            await sampling.stop()
            await runtime.stop()

    app = FastAPI(
        title="gpuserve",
        summary="Serverless workers behind Runpod's job API",
        description=(
            "Client API (`/v2/{endpoint_id}/run`, `runsync`, `status`, `stream`, `cancel`, `retry`, "
            "`purge-queue`, `health`) with `Authorization: Bearer KEY`; worker API (`job-take`, "
            "`job-take-batch`, `job-done`, `job-stream`, `ping`, `job-stop`) with the worker's token."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.dashboard_history = sampling.history

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return json_response({"error": exc.message}, exc.status_code, exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        # Write first, then tell: nothing changed, so the caller may simply try again.
        runtime.store_failed(exc.reason)
        return json_response(
            {"error": f"the job store could not write ({exc.reason}); nothing was changed, retry later"},
            503,
            {"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # the client left mid-body: nobody reads it, no traceback logged

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0]
        value = err.get("input")
        return json_response({"error": f"{_field_of(tuple(err['loc']))} {err['msg'].lower()}, was {value!r}"}, 422)

    app.include_router(client_api.router)
    app.include_router(worker_api.router)
    app.include_router(admin_api.router)
    app.include_router(ops_api.router)
    app.include_router(dashboard_api.router)
    app.include_router(endpoints_api.router)
    openapi.install(app)  # every route's error answers in /openapi.json
    return app
