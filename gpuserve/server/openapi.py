"""The OpenAPI schema with every error each route answers ({"error": message}) and the 204s of the long polls.

FastAPI documents a route's success and its 422; the routes' own answers (401 for a key, 404 for
a job, 413 for a body, 429 for a rate limit or a full queue...) are added here from one table,
so a client generator or a schema checker (schemathesis, in CI) sees what the server really says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

__all__ = ["ERRORS", "add_errors", "install"]

ERRORS: dict[int, str] = {
    400: "The request is malformed: the body is not JSON, or not acceptable JSON (NaN, nesting past 100 levels, "
    "a huge integer), or a webhook target is refused",
    401: "Missing or invalid credentials: the endpoint's API key (client routes), the worker's token (worker "
    "routes) or an admin key (operator routes)",
    403: "The key is valid but is not an admin key, or a server with no keys is reached from off loopback",
    404: "No such endpoint, job or worker (or the job's result has expired)",
    409: "Only FAILED or TIMED_OUT jobs can be retried",
    410: "The job was cancelled: its stream has ended",
    413: "The body is over the route's limit: 10 MB for /run, 20 MB for /runsync (decimal megabytes, as Runpod "
    "documents them; server.limits), 256 MiB for a worker's result",
    422: "A field's value is missing, out of range or of the wrong type (the message names the field and the value)",
    429: "A rate limit (server.rate_limits, per API key) or the endpoint's queue cap (server.limits.max_queued_jobs) "
    "was reached: retry after the Retry-After header's seconds",
    503: "The server is shutting down, or is receiving as many body bytes as it may "
    "(server.limits.max_body_bytes_in_flight): retry after the Retry-After header's seconds",
    504: "The command ran past its timeout and may still run",
}

_CLIENT = (401, 404, 422)
_LIMITED = (*_CLIENT, 429)
# (method, the path after the router's prefix) -> the errors it answers besides FastAPI's own.
_ROUTES: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/run"): (*_LIMITED, 400, 413, 503),
    ("post", "/runsync"): (*_LIMITED, 400, 413, 503),
    ("get", "/status/{job_id}"): _LIMITED,
    ("post", "/status/{job_id}"): _LIMITED,
    ("get", "/stream/{job_id}"): (*_LIMITED, 410),
    ("post", "/stream/{job_id}"): (*_LIMITED, 410),
    ("get", "/cancel/{job_id}"): _LIMITED,
    ("post", "/cancel/{job_id}"): _LIMITED,
    ("post", "/purge-queue"): _LIMITED,
    ("post", "/retry/{job_id}"): (*_CLIENT, 409),
    ("get", "/health"): (*_CLIENT, 400),
    ("post", "/job-done/{worker_id}/{job_id}"): (400, 401, 404, 413, 422),
    ("post", "/job-stream/{worker_id}/{job_id}"): (400, 401, 404, 413, 422),
}
_WORKER = (401, 404, 422)
_OPERATOR = (400, 401, 403, 404, 422, 504)
_NO_CONTENT = {"/job-take/{worker_id}": "No job arrived within the poll", "/job-take-batch/{worker_id}": "No job arrived within the poll",
               "/job-stop/{worker_id}": "Nothing to stop"}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}


def _errors_of(path: str, method: str, tags: list[str]) -> tuple[int, ...]:
    for prefix in ("/v2/{endpoint_id}", "/api"):
        if path.startswith(prefix):
            found = _ROUTES.get((method, path[len(prefix):]))
            if found is not None:
                return found
    if "operator" in tags or path.startswith("/api/"):  # the operator routes and the dashboard's data
        return _OPERATOR
    if "worker" in tags:
        return _WORKER
    return _CLIENT


def add_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Every operation's error responses (from ERRORS), an ErrorBody schema, and the long polls' 204."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what was wrong, naming the field and its value"}},
    }
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for code in _errors_of(path, method, op.get("tags", [])):
                entry: dict[str, Any] = {"description": ERRORS[code],
                                         "content": {"application/json": {"schema": ref}}}
                if code in (429, 503):
                    entry["headers"] = _RETRY_AFTER
                # 422 too: FastAPI's says {"detail": [...]}, but the app answers validation errors as {"error": ...}
                responses[str(code)] = entry
            for suffix, why in _NO_CONTENT.items():
                if path.endswith(suffix):
                    responses["204"] = {"description": why}
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` return FastAPI's schema (built once and cached by FastAPI) with the errors added."""
    build: Callable[[], dict[str, Any]] = app.openapi
    added: list[bool] = []

    def openapi() -> dict[str, Any]:
        schema = build()
        if not added:
            add_errors(schema)
            added.append(True)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
