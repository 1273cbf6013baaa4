"""Run one job through a handler of any kind and shape the result body the way Runpod's SDK posts it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "JobOutcome",
    "JobSink",
    "error_body",
    "handler_kind",
    "progress_update",
    "run_job",
    "shape_return",
]

log = logging.getLogger("gpuserve.worker")

Job = dict[str, Any]
Handler = Callable[[Job], Any]

_VERSION = "0.1.0"
_END = object()  # sentinel for a sync generator that is exhausted


class JobSink(Protocol):
    """Where a running job's side output goes: the platform, a terminal, or the dev server."""

    async def stream(self, job: Job, body: dict[str, Any]) -> None: ...

    async def progress(self, job: Job, data: Any) -> None: ...


@dataclass
class JobOutcome:
    """The body to post to job-done, whether it ends a stream, and whether the worker must stop."""

    body: dict[str, Any]
    is_stream: bool = False
    stop_pod: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.body.get("error"))


def handler_kind(handler: Handler) -> str:
    """One of 'async_generator', 'generator', 'async', 'sync' (callable objects count by __call__)."""
    target: Any = handler
    if not inspect.isfunction(target) and not inspect.ismethod(target) and callable(target):
        call = target.__call__
        if inspect.isfunction(call) or inspect.ismethod(call):
            target = call
    if inspect.isasyncgenfunction(target):
        return "async_generator"
    if inspect.isgeneratorfunction(target):
        return "generator"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


def error_body(exc: BaseException, worker_id: str | None = None) -> dict[str, Any]:
    """An exception as Runpod reports it: a JSON *string* of type, message, traceback and origin."""
    info = {
        "error_type": str(type(exc)),
        "error_message": str(exc),
        "error_traceback": "".join(traceback.format_exception(exc)),
        "hostname": os.environ.get("RUNPOD_POD_HOSTNAME") or socket.gethostname(),
        "worker_id": worker_id or os.environ.get("RUNPOD_POD_ID") or os.environ.get("GPUSERVE_WORKER_ID") or "unknown",
        "gpuserve_version": _VERSION,
    }
    return {"error": json.dumps(info)}


def shape_return(value: Any) -> tuple[dict[str, Any], bool]:
    """A handler's return value -> (job-done body, refresh requested), exactly as Runpod shapes it.

    A dict loses its `error` and `refresh_worker` keys; a truthy `error` is posted beside the
    rest (it may be a dict: the server marks the job FAILED); an empty output dict is dropped
    so `{}` posts `{}`.
    """
    refresh = False
    if isinstance(value, dict):
        rest = dict(value)
        error = rest.pop("error", None)
        refresh = bool(rest.pop("refresh_worker", None))
        body: dict[str, Any] = {"output": rest}
        if error:
            body["error"] = error
    else:
        body = {"output": value}
    if body.get("output") == {}:
        body.pop("output")
    return body, refresh


def _check_json(body: dict[str, Any]) -> dict[str, Any]:
    """A result that cannot be sent as JSON becomes a clear error instead of a lost job."""
    try:
        json.dumps(body)
    except (TypeError, ValueError) as exc:
        return error_body(TypeError(f"handler output is not JSON-serialisable: {exc}"))
    return body


# -- progress updates -----------------------------------------------------------------------


@dataclass
class _Route:
    loop: asyncio.AbstractEventLoop
    sink: JobSink
    job: Job
    pending: list[concurrent.futures.Future[Any] | asyncio.Future[Any]] = field(default_factory=list)
    # Posts go out one at a time, in call order: three quick updates must not overtake each other.
    order: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _in_order(route: _Route, data: Any) -> None:
    async with route.order:
        await route.sink.progress(route.job, data)


_routes: dict[str, _Route] = {}
_routes_lock = threading.Lock()


def progress_update(job: Job, data: Any) -> None:
    """Report interim progress for a running job (shows on /status as IN_PROGRESS with `data`).

    Callable from a sync handler's thread or an async handler. The post is sent in the
    background, and the job's final result is posted only after it, so a progress update
    can never land after (and regress) the finished job.
    """
    job_id = str(job.get("id"))
    with _routes_lock:
        route = _routes.get(job_id)
    if route is None:
        log.info("progress %s: %s (no running job to report to)", job_id, data)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    fut: concurrent.futures.Future[Any] | asyncio.Future[Any]
    if running is route.loop:
        fut = route.loop.create_task(_in_order(route, data))
    else:
        fut = asyncio.run_coroutine_threadsafe(_in_order(route, data), route.loop)
    with _routes_lock:
        route.pending.append(fut)


async def _drain_progress(route: _Route) -> None:
    with _routes_lock:
        pending, route.pending = route.pending, []
    for fut in pending:
        try:
            await (asyncio.wrap_future(fut) if isinstance(fut, concurrent.futures.Future) else fut)
        except Exception as exc:  # a lost progress post must not fail the job
            log.warning("progress update for %s failed: %s", route.job.get("id"), exc)


# -- running a job ----------------------------------------------------------------------------


async def _iterate_sync(gen: Iterator[Any], executor: concurrent.futures.Executor | None) -> AsyncIterator[Any]:
    """Each next() runs in a thread, so CPU work between yields never stalls the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        item = await loop.run_in_executor(executor, next, gen, _END)
        if item is _END:
            return
        yield item


async def _stream(
    produced: Any,
    job: Job,
    sink: JobSink,
    aggregate: bool,
    executor: concurrent.futures.Executor | None,
    worker_id: str | None,
) -> dict[str, Any]:
    chunks: list[Any] = []
    items: AsyncIterator[Any] = produced if inspect.isasyncgen(produced) else _iterate_sync(produced, executor)
    try:
        async for chunk in items:
            if isinstance(chunk, dict) and chunk.get("error"):
                # Yielding {"error": ...} ends the job as failed, as in Runpod's SDK.
                return {"error": chunk["error"]}
            await sink.stream(job, {"output": chunk})
            if aggregate:
                chunks.append(chunk)
    except Exception as exc:
        return error_body(exc, worker_id)
    finally:
        closer = getattr(items, "aclose", None)
        if closer is not None:
            await closer()
        if inspect.isgenerator(produced):
            try:
                produced.close()
            except ValueError:  # still running in its thread after a cancel; it ends on its own
                pass
    return {"output": chunks}


async def run_job(
    handler: Handler,
    job: Job,
    sink: JobSink,
    *,
    aggregate_stream: bool = False,
    refresh_worker: bool = False,
    executor: concurrent.futures.Executor | None = None,
    worker_id: str | None = None,
) -> JobOutcome:
    """Run `handler(job)` to completion and return what to post to job-done.

    Sync handlers (and sync generators, one next() at a time) run in `executor`'s threads,
    so a CPU-bound handler never blocks heartbeats, job takes or other jobs. Cancelling
    the calling task raises CancelledError inside async handlers; a sync handler cannot
    be interrupted, so its thread finishes and the result is dropped.
    """
    job_id = str(job.get("id"))
    route = _Route(loop=asyncio.get_running_loop(), sink=sink, job=job)
    with _routes_lock:
        _routes[job_id] = route
    try:
        if "input" not in job:
            outcome = JobOutcome(error_body(KeyError("job has no 'input' field"), worker_id))
        else:
            outcome = await _run(handler, job, sink, aggregate_stream, executor, worker_id)
        await _drain_progress(route)
    finally:
        with _routes_lock:
            if _routes.get(job_id) is route:
                del _routes[job_id]
    outcome.body = _check_json(outcome.body)
    if refresh_worker:
        outcome.stop_pod = True
    if outcome.stop_pod:
        outcome.body["stopPod"] = True
    return outcome


async def _run(
    handler: Handler,
    job: Job,
    sink: JobSink,
    aggregate: bool,
    executor: concurrent.futures.Executor | None,
    worker_id: str | None,
) -> JobOutcome:
    loop = asyncio.get_running_loop()
    try:
        if handler_kind(handler) == "sync":
            produced = await loop.run_in_executor(executor, handler, job)
        else:
            # Calling an async or generator function only builds the coroutine or generator.
            produced = handler(job)
        if inspect.isawaitable(produced):
            produced = await _await(produced)
    except Exception as exc:
        return JobOutcome(error_body(exc, worker_id))
    if inspect.isasyncgen(produced) or inspect.isgenerator(produced):
        body = await _stream(produced, job, sink, aggregate, executor, worker_id)
        # Like Runpod's SDK, a generator's returned flags are not read; config refresh still applies.
        return JobOutcome(body, is_stream=True)
    body, refresh = shape_return(produced)
    return JobOutcome(body, stop_pod=refresh)


async def _await(value: Awaitable[Any]) -> Any:
    return await value
