"""The limits of the HTTP API, stated once for the FastAPI routes, the fast path and the OpenAPI schema.

Fixed ones are constants; what an operator may change about what a client can hold (headers,
read timeouts, connections, request rates, queued jobs, body bytes being received) is
`HttpLimits`, set under `server.limits` and `server.rate_limits` in endpoints.yaml. The /run and
/runsync body limits are ServerSettings fields in gpuserve/live/settings.py (`max_run_bytes`
10 MB and `max_runsync_bytes` 20 MB, decimal megabytes as Runpod documents them), and so are the
job store's payload memory limits (`max_payload_bytes_in_memory`, `spill_payload_bytes`: store/spill.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpuserve.core.errors import ConfigError
from gpuserve.live.settings import MB, MIB

__all__ = [
    "DEFAULT_RUNSYNC_WAIT_MS",
    "EXECUTION_TIMEOUT_MS",
    "MAX_JOBS_PER_TAKE",
    "MAX_JSON_DEPTH",
    "MAX_RESULT_BYTES",
    "MAX_UNHEALTHY_REASON_CHARS",
    "POLICY_RANGES_MS",
    "RATE_LIMITED_ROUTES",
    "RUNPOD_RATE_LIMITS",
    "RUNSYNC_WAIT_MS",
    "TTL_MS",
    "WEEK_MS",
    "HttpLimits",
    "RouteLimit",
]

WEEK_MS = 7 * 24 * 3600 * 1000

# Runpod's job policy ranges (protocol §4), inclusive, in ms: executionTimeout 5 s..7 d, ttl 10 s..7 d.
EXECUTION_TIMEOUT_MS = (5_000, WEEK_MS)
TTL_MS = (10_000, WEEK_MS)
POLICY_RANGES_MS: dict[str, tuple[int, int]] = {"executionTimeout": EXECUTION_TIMEOUT_MS, "ttl": TTL_MS}

# /runsync?wait=: Runpod accepts 1 s..5 min and waits 90 s without it.
RUNSYNC_WAIT_MS = (1_000, 300_000)
DEFAULT_RUNSYNC_WAIT_MS = 90_000

# Results may be large (a model's output); the worker SDK does not retry a 4xx, so a refused
# result is a lost one. Accept far more than the client-side limits (job-done, job-stream).
MAX_RESULT_BYTES = 256 * MIB

# One take (job-take-batch's batch_size, job-done's gpuserve_take) hands out at most this many
# jobs: a worker asking for 10**9 gets 1024, and the answer stays a bounded JSON list.
MAX_JOBS_PER_TAKE = 1024

# Nesting of a JSON body (objects and arrays). Python's parser and encoder recurse once per level
# and fail near 1,000 (a 970-deep body answered 500, and its job could never be encoded again);
# real payloads (chat messages, tool calls) stay well under 20.
MAX_JSON_DEPTH = 100

# The SDK truncates a failed fitness check's reason to 256 characters; a hand-made ping is cut the same.
MAX_UNHEALTHY_REASON_CHARS = 256

# A 503 because the job store cannot write (a full disk) asks the caller to come back after this
# long; the server probes the store every second and accepts jobs again as soon as a write succeeds.
STORE_RETRY_AFTER_S = 5

# -- what a client may hold (configurable) --------------------------------------------------------


@dataclass(frozen=True)
class RouteLimit:
    """One route group's limit per API key: requests per 10 s (a token bucket that size, refilled
    evenly) and requests in flight at once; None: that part unlimited."""

    per_10s: int | None = None
    concurrent: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_10s", "concurrent"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(name, value, "must be a whole number of at least 1, or null for no limit")


# Runpod's documented per-endpoint limits (docs: serverless/references/operations): /status,
# /status-sync and /stream share one; /health and /retry have none documented.
RUNPOD_RATE_LIMITS: Mapping[str, RouteLimit] = MappingProxyType({
    "run": RouteLimit(1000, 200),
    "runsync": RouteLimit(2000, 400),
    "status": RouteLimit(2000, 400),
    "cancel": RouteLimit(100, 20),
    "purge-queue": RouteLimit(2, None),
})

# The client route (the segment after /v2/{endpoint_id}/) -> the limit group it counts against.
RATE_LIMITED_ROUTES: Mapping[str, str] = MappingProxyType({
    "run": "run",
    "runsync": "runsync",
    "status": "status",
    "status-sync": "status",
    "stream": "status",
    "cancel": "cancel",
    "purge-queue": "purge-queue",
})


def _positive(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value)):
        raise ConfigError(name, value, "must be a positive number, or null for no limit")


@dataclass(frozen=True)
class HttpLimits:
    """What one client can make the server hold; the defaults are `gpuserve serve`'s (README "Limits").

    Sizes in bytes, times in seconds; None switches a limit off.
    """

    # The request line and headers of one request (431 past it; read no further than one read
    # chunk beyond), and how many header lines (431). A runpod SDK request sends about 400 bytes.
    max_header_bytes: int | None = 64 * 1024
    max_headers: int | None = 100
    # A request's line and headers must arrive within this from its first byte (or from the
    # connection's start): a slowloris client sending one byte at a time is answered 408 and closed.
    header_timeout_s: float | None = 10.0
    # A body's bytes may pause at most this long while the server waits for them (nginx's
    # client_body_timeout); a pause the server causes (it has not read the last chunk) is not counted.
    body_timeout_s: float | None = 30.0
    # Open connections per client address (more are answered 429 and closed at once), and in all
    # (uvicorn's limit_concurrency: past it, requests get 503). Workers connect too: each holds
    # about three (job-take, job-stop, heartbeats), from 127.0.0.1 on the process backend.
    max_connections_per_client: int | None = 512
    max_connections: int | None = 4096
    # Queued jobs per endpoint (429 past it); None: Runpod's rule, more than 50 and more than
    # 500 per max_workers.
    max_queued_jobs: int | None = None
    # /run and /runsync bodies being received at once, all clients together (503 past it):
    # a client declaring 20 MB reserves 20 MB until its body is read.
    max_body_bytes_in_flight: int | None = 200 * MB
    rate_limits: Mapping[str, RouteLimit] = field(default_factory=lambda: RUNPOD_RATE_LIMITS)

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_connections_per_client", "max_connections",
                     "max_queued_jobs", "max_body_bytes_in_flight"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(name, value, "must be a whole number of at least 1, or null for no limit")
        _positive("header_timeout_s", self.header_timeout_s)
        _positive("body_timeout_s", self.body_timeout_s)
        for group in self.rate_limits:
            if group not in RUNPOD_RATE_LIMITS:
                raise ConfigError(
                    f"rate_limits.{group}", group, f"is not a limited route (known: {', '.join(RUNPOD_RATE_LIMITS)})"
                )

    def queue_cap(self, max_workers: int) -> int | None:
        """The most jobs an endpoint may hold queued; one more is refused."""
        if self.max_queued_jobs is not None:
            return self.max_queued_jobs
        return max(50, 500 * max_workers)

    @classmethod
    def off(cls) -> HttpLimits:
        """No limit at all (a benchmark's or an embedding's choice, never the default)."""
        return cls(None, None, None, None, None, None, None, None, {})
