"""Per-key request limits on the client routes (Runpod's per-route table by default), answered 429 with Retry-After.

`RateLimiter` is pure (time is an argument): one token bucket and one in-flight count per
(endpoint, route group, principal). A bucket holds `per_10s` tokens and refills `per_10s / 10`
per second, so Runpod's "1000 requests per 10 seconds" admits a burst of 1000 and then 100 a
second. The principal is the API key's digest when the key opens the endpoint; otherwise the
client's address, so random keys cannot grow the table (an unknown key is also refused 401 by
the route, after this). `RateLimit` is the ASGI layer in front of the fast path.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gpuserve.live.auth import hash_token
from gpuserve.live.runtime import Runtime
from gpuserve.server.limits import RATE_LIMITED_ROUTES, RouteLimit

__all__ = ["RateLimit", "RateLimiter"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Key = tuple[str, str, str]  # (endpoint id, route group, principal)

_PRUNE_EVERY = 4096  # admissions between sweeps of idle buckets


class _Bucket:
    __slots__ = ("in_flight", "tokens", "updated_s")

    def __init__(self, tokens: float, now_s: float) -> None:
        self.tokens = tokens
        self.updated_s = now_s
        self.in_flight = 0


class RateLimiter:
    """Token buckets and in-flight counts by key; `admit` says when to retry, `release` ends a request."""

    def __init__(self, limits: Mapping[str, RouteLimit]) -> None:
        self.limits = dict(limits)
        self._buckets: dict[Key, _Bucket] = {}
        self._admitted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, key: Key, now_s: float) -> tuple[float, str] | None:
        """None: admitted (counted in flight until `release`); else (seconds to wait, which limit)."""
        limit = self.limits.get(key[1])
        if limit is None:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit.per_10s or 0), now_s)
        if limit.concurrent is not None and bucket.in_flight >= limit.concurrent:
            return 1.0, f"{limit.concurrent} requests in flight at once"
        if limit.per_10s is not None:
            rate_per_s = limit.per_10s / 10.0
            bucket.tokens = min(float(limit.per_10s), bucket.tokens + (now_s - bucket.updated_s) * rate_per_s)
            bucket.updated_s = now_s
            if bucket.tokens < 1.0:
                return (1.0 - bucket.tokens) / rate_per_s, f"{limit.per_10s} requests per 10 s"
            bucket.tokens -= 1.0
        bucket.in_flight += 1
        self._admitted += 1
        if self._admitted % _PRUNE_EVERY == 0:
            self.prune(now_s)
        return None

    def release(self, key: Key) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.in_flight > 0:
            bucket.in_flight -= 1

    def prune(self, now_s: float) -> None:
        """Forget buckets that are full again and idle: they would admit exactly as a new one does."""
        for key, bucket in list(self._buckets.items()):
            limit = self.limits.get(key[1])
            if bucket.in_flight:
                continue
            if limit is None or limit.per_10s is None or now_s - bucket.updated_s >= 10.0 * (1.0 - bucket.tokens / limit.per_10s):
                del self._buckets[key]


class RateLimit:
    """ASGI: counts /v2/{endpoint}/{run,runsync,status,stream,cancel,purge-queue} against the caller's limits."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], runtime: Runtime, limits: Mapping[str, RouteLimit],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.limiter = RateLimiter(limits)
        self.clock = clock
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope) if scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.admit(key, self.clock())
        if wait is not None:
            self.refused += 1
            await _too_many(send, key, *wait)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.release(key)

    def _key(self, scope: Scope) -> Key | None:
        parts = scope["path"].split("/", 4)
        if len(parts) < 4 or parts[1] != "v2":
            return None
        group = RATE_LIMITED_ROUTES.get(parts[3])
        if group is None or group not in self.limiter.limits:
            return None
        ep = self.runtime.endpoints.get(parts[2])
        if ep is None:
            return None  # the route answers 404
        principal = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                raw = value.decode("latin-1").strip()
                if raw[:7].lower() == "bearer ":
                    raw = raw[7:].strip()
                digest = hash_token(raw)
                if digest in ep.key_hashes or digest in self.runtime.global_key_hashes:
                    principal = digest
                break
        if principal is None:
            client = scope.get("client")
            principal = "addr:" + (client[0] if client else "")
        return parts[2], group, principal


async def _too_many(send: Send, key: Key, wait_s: float, which: str) -> None:
    retry_after_s = max(1, math.ceil(wait_s))
    body = json.dumps({
        "error": f"rate limit of /{key[1]} on endpoint {key[0]!r} reached ({which} per API key, "
        f"server.rate_limits.{key[1]}); retry after {retry_after_s} s"
    }).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after_s).encode())]})
    await send({"type": "http.response.body", "body": body})
