"""Operator routes into workers, admin key only: a worker's log (tail, since, follow), an endpoint's logs interleaved, exec."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from gpuserve.live.backend import LiveBackend
from gpuserve.live.runtime import Runtime
from gpuserve.live.worker_ops import LogReader
from gpuserve.server.http import ApiError, admin_auth, endpoint_or_404, json_response, read_body, runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["operator"])

LOG_POLL_S = 0.2  # a followed log with nothing new is looked at again this often
WORKER_SCAN_S = 1.0  # an endpoint's followed logs pick up new workers this often
MAX_EXEC_TIMEOUT_S = 600.0
EXEC_BODY_BYTES = 64 * 1024
_TEXT = "text/plain; charset=utf-8"


def _backend(rt: Runtime) -> LiveBackend:
    if rt.backend is None:
        raise ApiError(404, "this server runs no backend, so it keeps no worker logs and runs no commands")
    return rt.backend


def _since_wall_s(since_s: float | None) -> float | None:
    if since_s is None:
        return None
    if since_s <= 0:
        raise ApiError(422, f"since_s must be more than 0 (seconds back from now), was {since_s:g}")
    return time.time() - since_s


def _check_tail(tail: int) -> None:
    if tail < 1:
        raise ApiError(422, f"tail must be at least 1, was {tail}")


def _open(backend: LiveBackend, worker_id: str, tail: int, since_wall_s: float | None, follow: bool) -> LogReader:
    try:
        return backend.open_log(worker_id, tail_lines=tail, since_wall_s=since_wall_s, follow=follow)
    except LookupError as exc:
        raise ApiError(404, f"worker {worker_id!r} is unknown ({exc})") from None


@router.get("/workers/{worker_id}/logs", summary="The last lines a worker wrote (stdout and stderr), as JSON")
async def worker_logs(request: Request, worker_id: str, tail: int = 200) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "reading worker logs")
    _check_tail(tail)
    try:
        text = _backend(rt).logs(worker_id, tail)
    except LookupError as exc:
        raise ApiError(404, f"worker {worker_id!r} is unknown ({exc})") from None
    return json_response({"workerId": worker_id, "logs": text})


@router.get(
    "/workers/{worker_id}/logs/stream",
    summary="A worker's log as plain text: the last `tail` lines or those of the last `since_s` seconds; `follow` keeps streaming",
)
async def worker_log_stream(
    request: Request, worker_id: str, tail: int = 200, since_s: float | None = None, follow: bool = False
) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "reading worker logs")
    _check_tail(tail)
    reader = _open(_backend(rt), worker_id, tail, _since_wall_s(since_s), follow)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while not rt.closing:
                chunk = reader.read()
                if chunk is None:
                    return
                if chunk:
                    yield chunk
                else:
                    await asyncio.sleep(LOG_POLL_S)
        finally:
            reader.close()

    return StreamingResponse(chunks(), media_type=_TEXT)


@router.get(
    "/endpoints/{endpoint_id}/logs/stream",
    summary="Every worker's log of an endpoint, line by line, each line prefixed with its worker id; `follow` adds new workers",
)
async def endpoint_log_stream(
    request: Request, endpoint_id: str, tail: int = 200, since_s: float | None = None, follow: bool = False
) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "reading worker logs")
    endpoint_or_404(rt, endpoint_id)
    _check_tail(tail)
    backend = _backend(rt)
    since_wall_s = _since_wall_s(since_s)
    started_wall_s = time.time()
    readers: dict[str, LogReader] = {}
    seen: set[str] = set()

    def scan(first: bool) -> None:
        for view in rt.registry.views(endpoint_id):
            if view.worker_id in seen:
                continue
            seen.add(view.worker_id)
            try:
                # A worker that appears while following is read from its start (since we began).
                readers[view.worker_id] = backend.open_log(
                    view.worker_id,
                    tail_lines=tail,
                    since_wall_s=since_wall_s if first else started_wall_s,
                    follow=follow,
                )
            except LookupError:  # no log yet (a worker waiting out a back-off): looked at again next scan
                seen.discard(view.worker_id)

    scan(first=True)

    async def lines() -> AsyncIterator[bytes]:
        partial: dict[str, bytes] = {}
        scanned_s = time.monotonic()
        try:
            while not rt.closing:
                if follow and time.monotonic() - scanned_s >= WORKER_SCAN_S:
                    scan(first=False)
                    scanned_s = time.monotonic()
                got = False
                for wid, reader in list(readers.items()):
                    chunk = reader.read()
                    if chunk is None:  # ended: its unfinished last line too
                        rest = partial.pop(wid, b"")
                        if rest:
                            yield _prefixed(wid, [rest])
                        readers.pop(wid).close()
                        continue
                    if chunk:
                        got = True
                        *done, partial[wid] = (partial.get(wid, b"") + chunk).split(b"\n")
                        if done:
                            yield _prefixed(wid, done)
                if not readers and not follow:
                    return
                if not got:
                    await asyncio.sleep(LOG_POLL_S)
        finally:
            for reader in readers.values():
                reader.close()

    return StreamingResponse(lines(), media_type=_TEXT)


def _prefixed(worker_id: str, lines: list[bytes]) -> bytes:
    head = f"{worker_id} | ".encode()
    return b"".join(head + line + b"\n" for line in lines)


@router.post(
    "/workers/{worker_id}/exec",
    summary="Run a command in a worker: docker exec in its container, or in a process worker's directory and environment",
)
async def worker_exec(request: Request, worker_id: str) -> Response:
    """Body `{"command": ["ls", "-l"], "timeoutS": 60}`; answers its exit code and output (stdout and stderr merged)."""
    rt = runtime_of(request)
    admin_auth(rt, request, "exec")
    backend = _backend(rt)
    try:
        body = json.loads(await read_body(request, EXEC_BODY_BYTES, "exec") or b"{}")
    except ValueError:
        raise ApiError(400, 'the body must be JSON like {"command": ["ls", "-l"]}') from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, was {type(body).__name__}")
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise ApiError(422, f"command must be a non-empty list of strings, was {command!r}")
    timeout_s = body.get("timeoutS", 60)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= MAX_EXEC_TIMEOUT_S:
        raise ApiError(422, f"timeoutS must be a number of seconds in (0, {MAX_EXEC_TIMEOUT_S:g}], was {timeout_s!r}")
    try:
        # The backend enforces the timeout where it can (a process); the wait is bounded either way.
        result = await asyncio.wait_for(asyncio.to_thread(backend.exec, worker_id, command, float(timeout_s)), timeout_s + 5)
    except LookupError as exc:
        raise ApiError(404, f"worker {worker_id!r}: {exc}") from None
    except TimeoutError:
        raise ApiError(504, f"the command ran past timeoutS={timeout_s:g} in worker {worker_id!r} and may still run") from None
    return json_response(
        {
            "workerId": worker_id,
            "exitCode": result.exit_code,
            "timedOut": result.exit_code is None,
            "output": result.output.decode(errors="replace"),
            "truncated": result.truncated,
        }
    )
