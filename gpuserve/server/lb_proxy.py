"""The load-balancing proxy: `ANY /lb/{endpoint_id}/{path}` (or any path on an `{endpoint_id}.` host) to a worker's own server.

An ASGI layer in front of the app (server/serve.py puts it there). For a load-balancing
endpoint it authenticates the client with the endpoint's API keys (as the client API does),
takes a slot on a worker from the endpoint's router (held while none has room: live/lb.py),
and forwards the request over aiohttp's keep-alive pool and C parser (upstream.py; with httpx in
its place the proxy served about a fifth of the requests/s on a 2-core host, and aiohttp's
ClientSession cost more CPU per request: BENCHMARKS.md, "Load-balancing proxy"): method, path, query and headers (minus
hop-by-hop ones and the gpuserve API key) kept, bodies streamed both ways without buffering, so
chunked responses and server-sent events reach the client as the worker writes them. A
WebSocket upgrade is passed through with the `websockets` client. Each request's headers are
read in one pass, and the proxy counts its requests for /metrics itself (the metrics wrapper
sits behind it): on the hot path every layer a proxied request does not need is skipped.

Answers of its own, each `{"error": reason}`: 401 (key), 404 (no such endpoint), 413 (body
over 30 MB), 502 (the worker did not answer), 503 (held past `hold_timeout_s`, or shutting
down), 504 (past `request_timeout_s`; Runpod answers 524, a Cloudflare code, and gpuserve
uses the standard gateway-timeout status). A request that times out after its response has
begun is cut (the connection closes), since its status is already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from gpuserve.live.auth import hash_token
from gpuserve.live.lb import LbLease, LbRouter, Rejected
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.server.metrics import HttpCounts
from gpuserve.server.upstream import Upstream

__all__ = ["HOP_BY_HOP", "LB_ROUTE", "LbProxy"]

log = logging.getLogger("gpuserve.lb")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# RFC 9110 7.6.1 (and the ones proxies conventionally drop); plus those a Connection header names.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_WS_HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"})
# The request headers the one pass over them (`_scan`) looks at rather than forwards as they are:
# hop-by-hop ones; the Host (sent as X-Forwarded-Host, aiohttp writes the worker's); `expect:
# 100-continue`, which was the client's with this server (uvicorn answered it); the key; the length.
_SCANNED = HOP_BY_HOP | {b"host", b"expect", b"authorization", b"content-length"}
_WS_SCANNED = _SCANNED | _WS_HANDSHAKE
# uvicorn adds its own date and server headers to every response.
_RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server"}
# The route label of every proxied request in gpuserve_http_requests_total (metrics.py).
LB_ROUTE = "/lb/{endpoint_id}/*"
_DIGESTS_KEPT = 1024
_SWEEP_S = 0.05  # how often request timeouts are checked: a timeout fires at most this late


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class _Scan:
    """What one pass over a request's headers found: the headers to forward and what the checks need."""

    __slots__ = ("forward", "host", "key", "length")

    def __init__(self, headers: list[tuple[bytes, bytes]], keyed: bool, scanned: frozenset[bytes]) -> None:
        forward: list[tuple[str, str]] = []
        key: bytes | None = None
        length = 0
        host: bytes | None = None
        named: set[str] | None = None
        for name, value in headers:
            if name in scanned:
                if name == b"content-length":
                    if value.isdigit():
                        length = max(length, int(value))
                elif name == b"authorization":
                    if key is None:
                        key = value
                    if keyed:
                        continue  # the gpuserve API key is for gpuserve, not for the worker's code
                else:
                    if name == b"host":
                        host = value
                    elif name == b"connection":  # and the headers it names are hop-by-hop too
                        named = named or set()
                        named.update(t.strip().lower().decode("latin-1") for t in value.split(b","))
                    continue
            forward.append((name.decode("latin-1"), value.decode("latin-1")))
        if named:
            forward = [(k, v) for k, v in forward if k not in named]
        self.forward = forward
        self.key = key
        self.length = length
        self.host = host

    def add_forwarded(self, scope: Scope) -> list[tuple[str, str]]:
        """The headers to forward, with X-Forwarded-For, -Host and -Proto added."""
        forward = self.forward
        client = scope.get("client")
        if client:
            forward.append(("x-forwarded-for", str(client[0])))
        if self.host is not None:
            forward.append(("x-forwarded-host", self.host.decode("latin-1")))
        forward.append(("x-forwarded-proto", "https" if scope.get("scheme") in ("https", "wss") else "http"))
        return forward


def _response_headers(raw: tuple[tuple[bytes, bytes], ...], worker_id: bytes) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        lower = name.lower()
        if lower in _RESPONSE_DROPPED:
            if lower == b"connection":
                named = named or set()
                named.update(t.strip().lower() for t in value.split(b","))
            continue
        out.append((name, value))
    if named:
        out = [(k, v) for k, v in out if k.lower() not in named]
    out.append((b"x-gpuserve-worker", worker_id))
    return out


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> int:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": data})
    return status


class _Deadlines:
    """Request timeouts without a timer per request: deadlines by task, and one sweep that cancels those past theirs.

    asyncio.timeout() costs a timer set and cancelled per request (a few % of the proxy's CPU);
    here a request costs a dict entry, and the sweep runs every `_SWEEP_S` while any is watched,
    so a timeout fires at most that late. A task the sweep cancelled says so (`expired`) and is
    uncancelled there, as asyncio.timeout does, so its CancelledError becomes the 504.
    """

    __slots__ = ("_cancelled", "_due", "_sweeping")

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._sweeping = False

    def watch(self, task: asyncio.Task[Any], timeout_s: float) -> None:
        loop = task.get_loop()
        self._due[task] = loop.time() + timeout_s
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(_SWEEP_S, self._sweep, loop)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)
        self._cancelled.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the CancelledError `task` is handling is its timeout's (then it is uncancelled), not another's."""
        return task in self._cancelled and task.uncancel() == 0

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in self._due.items():
            if now >= due and task not in self._cancelled:
                self._cancelled.add(task)
                task.cancel()
        if self._due:
            loop.call_later(_SWEEP_S, self._sweep, loop)
        else:
            self._sweeping = False


class LbProxy:
    """Wraps the app: requests for load-balancing endpoints are proxied, everything else goes to `app`."""

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.upstream = Upstream()
        self._deadlines = _Deadlines()
        # Requests by method, route and status (metrics.py), counted here: the metrics wrapper sits
        # behind the proxy, so a proxied request pays for no wrapper around `send`.
        self.counts: HttpCounts | None = None
        self._digests: dict[str, str] = {}  # API key -> its digest, for the keys clients send again and again

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.runtime.lb:
                target = self._target(scope)
                if target is not None:
                    status = 500
                    try:
                        status = await self._http(scope, receive, send, *target)
                    finally:
                        if self.counts is not None:
                            self.counts[(scope["method"], LB_ROUTE, status)] += 1
                    return
        elif kind == "websocket":
            if self.runtime.lb:
                target = self._target(scope)
                if target is not None:
                    await self._websocket(scope, receive, send, *target)
                    return
        elif kind == "lifespan":
            app_send = send

            async def send_and_close(message: dict[str, Any]) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    await self.aclose()
                await app_send(message)

            send = send_and_close
        await self.app(scope, receive, send)

    def _target(self, scope: Scope) -> tuple[str, bytes] | None:
        """(endpoint id, the path to forward, raw and with its query) or None when the request is not ours."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        if raw.startswith(b"/lb/"):
            endpoint_id, _, rest = raw[4:].partition(b"/")
            return endpoint_id.decode("latin-1"), b"/" + rest + b"?" + query if query else b"/" + rest
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.split(b":", 1)[0].decode("latin-1").lower()
                label, dot, _ = host.partition(".")
                # `{endpoint_id}.anything`: Runpod's per-endpoint host names.
                if dot and label in self.runtime.lb:
                    return label, raw + b"?" + query if query else raw
                return None
        return None

    def _authorized(self, ep: Endpoint, key: bytes | None) -> bool:
        """Whether the Authorization header's value `key` (None: there was none) opens `ep`."""
        keys, global_keys = ep.key_hashes, self.runtime.global_key_hashes
        if not keys and not global_keys:
            return True
        if key is None:
            return False
        text = key.decode("latin-1").strip()
        if text[:7].lower() == "bearer ":
            text = text[7:].strip()
        if not text:
            return False
        digest = self._digests.get(text)
        if digest is None:
            digest = hash_token(text)
            if len(self._digests) >= _DIGESTS_KEPT:  # wrong keys sent at random do not grow it
                self._digests.clear()
            self._digests[text] = digest
        return digest in keys or digest in global_keys

    def _endpoint(self, endpoint_id: str) -> tuple[Endpoint, LbRouter] | None:
        ep = self.runtime.endpoints.get(endpoint_id)
        router = self.runtime.lb.get(endpoint_id)
        return None if ep is None or router is None else (ep, router)

    def _keyed(self, ep: Endpoint) -> bool:
        return bool(ep.key_hashes or self.runtime.global_key_hashes)

    async def _acquire(self, endpoint_id: str, router: LbRouter) -> LbLease:
        if self.runtime.closing:
            raise Rejected("the server is shutting down")
        return await router.acquire(on_hold=lambda: self.runtime.lb_held(endpoint_id))

    # -- HTTP -------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, endpoint_id: str, path: bytes) -> int:
        """Answer one request, proxied or refused; returns the status sent (500: none was)."""
        runtime = self.runtime
        ep = runtime.endpoints.get(endpoint_id)
        router = runtime.lb.get(endpoint_id)
        if ep is None or router is None:
            return await _json(send, 404, {"error": f"load-balancing endpoint {endpoint_id!r} does not exist"})
        spec = ep.deployment.spec.load_balancing
        assert spec is not None
        scan = _Scan(scope["headers"], self._keyed(ep), _SCANNED)
        if not self._authorized(ep, scan.key):
            return await _json(send, 401, {"error": f"missing or invalid API key for endpoint {endpoint_id!r}"})
        limit = runtime.settings.max_lb_body_bytes
        if scan.length > limit:
            return await _json(send, 413, {"error": f"body of {scan.length} bytes is over the {limit} byte limit"})
        lease = None if runtime.closing else router.acquire_nowait()
        if lease is None:
            try:
                lease = await self._acquire(endpoint_id, router)
            except Rejected as exc:
                return await _json(send, 503, {"error": exc.reason})
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.watch(task, spec.request_timeout_s)
        status = 0  # the response's, once its start is sent
        try:
            # The first body message is read here: a body that fits in it (most) is sent with its
            # length; a longer one streams upstream as it arrives, chunk by chunk.
            first = await receive()
            if first["type"] == "http.disconnect":
                return 500
            head: bytes = first.get("body", b"")
            content: bytes | AsyncIterator[bytes] | None
            if first.get("more_body"):
                content = self._body(receive, head, limit)
            else:
                if len(head) > limit:
                    return await _json(send, 413, {"error": f"body is over the {limit} byte limit"})
                content = head or None
            response = await self.upstream.request(
                scope["method"], lease.upstream_url, path.decode("latin-1"), scan.add_forwarded(scope), content
            )
            try:
                start = {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _response_headers(response.raw_headers, lease.worker_id.encode()),
                }
                body = response.body
                if body.is_eof():  # the whole body came with the head (most small answers): one message
                    await send(start)
                    status = response.status
                    await send({"type": "http.response.body", "body": body.read_nowait()})
                    return status
                await send(start)
                status = response.status
                async for chunk in body.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return status
            finally:
                response.close()
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            if not status:
                return await _json(send, 504, {"error": f"the worker did not answer within request_timeout_s ({spec.request_timeout_s:g} s)"})
            log.warning("request to %s ran past request_timeout_s; cut", lease.worker_id)
        except _TooLarge:
            if not status:
                return await _json(send, 413, {"error": f"body is over the {limit} byte limit"})
        except _ClientGone:
            pass
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _TooLarge):
                if not status:
                    return await _json(send, 413, {"error": f"body is over the {limit} byte limit"})
            elif isinstance(cause, _ClientGone):
                pass
            elif not status:
                return await _json(send, 502, {"error": f"worker {lease.worker_id} did not answer: {type(exc).__name__} {exc}".strip()})
            else:
                log.warning("worker %s broke off a response: %s", lease.worker_id, exc)
        finally:
            self._deadlines.forget(task)
            router.release(lease)
        return status or 500

    async def _body(self, receive: Receive, head: bytes, limit: int) -> AsyncIterator[bytes]:
        total = len(head)
        if total > limit:
            raise _TooLarge
        if head:
            yield head
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise _TooLarge
            if chunk:
                yield chunk
            if not message.get("more_body"):
                return

    # -- WebSocket ----------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, endpoint_id: str, path: bytes) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        first = await receive()
        if first["type"] != "websocket.connect":
            return
        found = self._endpoint(endpoint_id)
        scan = _Scan(scope["headers"], found is not None and self._keyed(found[0]), _WS_SCANNED)
        if found is None or not self._authorized(found[0], scan.key):
            await send({"type": "websocket.close", "code": 1008})  # before accept: the client sees 403
            return
        router = found[1]
        try:
            lease = await self._acquire(endpoint_id, router)
        except Rejected:
            await send({"type": "websocket.close", "code": 1013})
            return
        try:
            url = "ws" + lease.upstream_url[len("http") :] + path.decode("latin-1")
            headers = scan.add_forwarded(scope)
            try:
                upstream = await connect(
                    url,
                    additional_headers=headers,
                    subprotocols=scope.get("subprotocols") or None,
                    max_size=self.runtime.settings.max_lb_body_bytes,
                    compression=None,
                    proxy=None,
                    user_agent_header=None,
                )
            except (OSError, WebSocketException, TimeoutError):
                await send({"type": "websocket.close", "code": 1011})
                return
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

            async def client_to_worker() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        await upstream.close(message.get("code", 1000))
                        return
                    if message.get("bytes") is not None:
                        await upstream.send(message["bytes"])
                    elif message.get("text") is not None:
                        await upstream.send(message["text"])

            async def worker_to_client() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for data in upstream:
                        if isinstance(data, bytes):
                            await send({"type": "websocket.send", "bytes": data})
                        else:
                            await send({"type": "websocket.send", "text": data})
                code = upstream.close_code or 1000
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": code})

            tasks = [asyncio.create_task(client_to_worker()), asyncio.create_task(worker_to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
                await upstream.close()
        finally:
            router.release(lease)
