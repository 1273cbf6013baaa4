"""The FastAPI app factory: client, worker and operator routes over one Runtime; errors as {"error": message}."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from gpuserve.live.runtime import Runtime
from gpuserve.server import admin_api, client_api, worker_api
from gpuserve.server.http import ApiError, json_response

__all__ = ["create_app"]


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


def create_app(runtime: Runtime) -> FastAPI:
    """An app serving `runtime`; the runtime starts with the app (lifespan) and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
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

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return json_response({"error": exc.message}, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0]
        value = err.get("input")
        return json_response({"error": f"{_field_of(tuple(err['loc']))} {err['msg'].lower()}, was {value!r}"}, 422)

    app.include_router(client_api.router)
    app.include_router(worker_api.router)
    app.include_router(admin_api.router)
    return app
