"""Prometheus metrics at /metrics: a per-server CollectorRegistry over the runtime's counts, ledger and registry.

Everything is read at scrape time (prometheus-client's custom-collector API), from what the
live runtime keeps anyway: `Runtime.telemetry` (jobs, waits, run times, worker starts, scale
actions), `Runtime.ledger` (GPU-seconds and cost by state), the worker registry and the job
store. HTTP requests are counted with one dict increment each, by an ASGI wrapper in front of
the app and the fast path (the fast path counts its own routes) or, for load-balancing
endpoints, by their proxy in front of it all; the route label is the route's template
(`/v2/{endpoint_id}/run`, `/lb/{endpoint_id}/*`), so ids never become label values. Each Platform has its own
registry, so several servers in one process (the tests) never share a metric. The route is open
(Prometheus' default) unless `ServerSettings.metrics_auth` is "admin": then it takes an admin key.

    gpuserve_jobs_submitted_total{endpoint}              gpuserve_jobs_ended_total{endpoint,status}
    gpuserve_jobs_queued{endpoint}                       gpuserve_jobs_in_progress{endpoint}
    gpuserve_job_queue_delay_seconds{endpoint}           gpuserve_job_execution_seconds{endpoint}   (histograms)
    gpuserve_workers{endpoint,state}                     gpuserve_worker_starts_total{endpoint,kind}
    gpuserve_worker_start_stage_seconds{endpoint,stage}  gpuserve_scale_actions_total{endpoint,action,reason}
    gpuserve_worker_seconds_total{endpoint,state}        gpuserve_billed_gpu_seconds_total{endpoint,state}
    gpuserve_cost_usd_total{endpoint,state}              gpuserve_job_charges_usd_total{endpoint}
    gpuserve_bill_usd{endpoint}                          gpuserve_http_requests_total{method,route,status}
    process_*, python_gc_*, python_info
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request

from gpuserve.core.types import WorkerState
from gpuserve.live.runtime import Runtime
from gpuserve.live.telemetry import Histogram
from gpuserve.server.http import ApiError, admin_auth

__all__ = ["COUNTED", "METRICS_PATH", "HttpCounts", "Metrics", "call_counted", "route_of"]

METRICS_PATH = "/metrics"
COUNTED = "gpuserve.counted"  # a scope key: this request is counted already, further in front

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
HttpCounts = Counter[tuple[str, str, int]]  # (method, route template, status) -> requests

# The Runpod routes under /v2/{endpoint_id}/ and the ids that follow each one.
_V2_ROUTES: dict[str, tuple[str, ...]] = {
    "run": (), "runsync": (), "purge-queue": (), "health": (),
    "status": ("{job_id}",), "stream": ("{job_id}",), "cancel": ("{job_id}",), "retry": ("{job_id}",),
    "job-take": ("{worker_id}",), "job-take-batch": ("{worker_id}",), "ping": ("{worker_id}",), "job-stop": ("{worker_id}",),
    "job-done": ("{worker_id}", "{job_id}"), "job-stream": ("{worker_id}", "{job_id}"),
}
_OTHER = "other"
# op -> (the route's template, how many segments its path has): built once, looked up per request.
_V2_TEMPLATES = {op: ("/".join(("/v2/{endpoint_id}", op, *ids)), 4 + len(ids)) for op, ids in _V2_ROUTES.items()}
_V2_ANY = "/v2/{endpoint_id}/*"


def route_of(path: str, route: object = None) -> str:
    """A request path as its route template: `/v2/ep1/status/abc` -> `/v2/{endpoint_id}/status/{job_id}`.

    The hot /v2 routes by hand (a split and a dict lookup: the fast path routes them without
    FastAPI); any other path by the route FastAPI matched (`scope["route"]`), else `other`. A
    load-balancing endpoint's own paths are `/v2/{endpoint_id}/*`."""
    if path.startswith("/v2/"):
        parts = path.split("/")
        if len(parts) >= 4 and parts[2]:
            known = _V2_TEMPLATES.get(parts[3])
            if known is not None and len(parts) == known[1]:
                return known[0]
            return _V2_ANY
        return _OTHER
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else _OTHER


async def call_counted(app: App, scope: Scope, receive: Receive, send: Send, counts: HttpCounts) -> None:
    """Run `app` and count the request by the status its response started with (500 if none)."""
    scope[COUNTED] = True
    status = 500

    async def counted_send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, counted_send)
    finally:
        counts[(scope["method"], route_of(scope["path"], scope.get("route")), status)] += 1


class Metrics:
    """One server's metrics: its CollectorRegistry, the HTTP counts and the ASGI wrapper that serves /metrics."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_requests: HttpCounts = Counter()
        self.fast_path_counts = False  # set by the platform when its fast path counts the /v2 requests
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def scrape(self) -> bytes:
        """The exposition text, as Prometheus scrapes it."""
        return generate_latest(self.registry)

    def wrap(self, app: App) -> App:
        """ASGI middleware: answer GET /metrics and count the requests the fast path does not.

        The hot /v2 routes are counted by the fast path itself (`FastPath.counts`, no wrapper
        around `send` on the three requests every job costs), and the load-balancing proxy's
        requests by the proxy, in front of this wrapper (`LbProxy.counts`, route
        `/lb/{endpoint_id}/*`); everything else here, by the status its response starts with."""
        counts = self.http_requests
        runtime = self.runtime

        async def metrics_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path: str = scope["path"]
            if path == METRICS_PATH and scope["method"] == "GET":
                refused = _refused(runtime, scope)
                if refused is not None:
                    status, message = refused
                    await _send_json(send, status, {"error": message})
                    counts[("GET", METRICS_PATH, status)] += 1
                    return
                body = self.scrape()
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                counts[("GET", METRICS_PATH, 200)] += 1
                return
            if self.fast_path_counts and path.startswith("/v2/"):
                await app(scope, receive, send)  # the fast path counts it, or its fallback does
                return
            await call_counted(app, scope, receive, send, counts)

        return metrics_app


def _refused(runtime: Runtime, scope: Scope) -> tuple[int, str] | None:
    """With `metrics_auth: admin`, a scrape without an admin key: (status, why); else None."""
    if runtime.settings.metrics_auth != "admin":
        return None
    try:
        admin_auth(runtime, Request(scope), "metrics")
    except ApiError as exc:
        return exc.status_code, exc.message
    return None


async def _send_json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _histogram(name: str, doc: str, labels: list[str], series: dict[Any, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, hist in sorted(series.items()):
        values = list(key) if isinstance(key, tuple) else [key]
        family.add_metric(values, hist.cumulative(), hist.sum)
    return family


class _Collector:
    """Reads the runtime at scrape time; see the module docstring for what it exposes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        rt = self.metrics.runtime
        now = rt.clock.now_s()
        tel = rt.telemetry
        backend = rt.backend

        def endpoint_of(worker_id: str) -> str | None:
            w = rt.registry.get(worker_id)
            return w.endpoint_id if w is not None else None

        tel.collect_starts(lambda wid: backend.cold_start(wid) if backend is not None else None, endpoint_of)
        eids = sorted(rt.endpoints)

        submitted = CounterMetricFamily("gpuserve_jobs_submitted", "Jobs submitted (run, runsync)", labels=["endpoint"])
        for eid in eids:
            submitted.add_metric([eid], tel.jobs_submitted[eid])
        yield submitted
        ended = CounterMetricFamily(
            "gpuserve_jobs_ended", "Jobs that reached a terminal status (or TTL_EXPIRED: deleted unfinished)",
            labels=["endpoint", "status"],
        )
        for (eid, status), n in sorted(tel.jobs_ended.items()):
            ended.add_metric([eid, status], n)
        yield ended
        queued = GaugeMetricFamily(
            "gpuserve_jobs_queued", "Jobs IN_QUEUE now (the queue depth; a load-balancing endpoint: held requests)",
            labels=["endpoint"],
        )
        running = GaugeMetricFamily(
            "gpuserve_jobs_in_progress", "Jobs IN_PROGRESS now (a load-balancing endpoint: requests in flight)", labels=["endpoint"]
        )
        for eid in eids:
            stats = rt.queue_stats(eid, now)
            queued.add_metric([eid], stats.in_queue)
            running.add_metric([eid], stats.in_progress)
        yield queued
        yield running
        yield _histogram(
            "gpuserve_job_queue_delay_seconds", "Submit to take, per job taken", ["endpoint"], dict(tel.queue_delay_s)
        )
        yield _histogram(
            "gpuserve_job_execution_seconds", "Take to end, per job that ran to a result, failure or timeout",
            ["endpoint"], dict(tel.execution_s),
        )

        workers = GaugeMetricFamily("gpuserve_workers", "Registered workers by state", labels=["endpoint", "state"])
        by_state: Counter[tuple[str, str]] = Counter((w.endpoint_id, w.state.value) for w in rt.registry.all())
        for eid in eids:
            for state in WorkerState:
                workers.add_metric([eid, state.value], by_state[(eid, state.value)])
        yield workers
        starts = CounterMetricFamily(
            "gpuserve_worker_starts", "Workers that became ready (their first job-take), by kind: cold or flash boot",
            labels=["endpoint", "kind"],
        )
        for (eid, kind), n in sorted(tel.worker_starts.items()):
            starts.add_metric([eid, kind], n)
        yield starts
        stages = {(eid, stage.removesuffix("_s")): h for (eid, stage), h in tel.start_stage_s.items()}
        yield _histogram(
            "gpuserve_worker_start_stage_seconds", "Cold-start stages of each worker that became ready (create, start, "
            "runtime_init, first_take) and their total", ["endpoint", "stage"], stages,
        )
        actions = CounterMetricFamily(
            "gpuserve_scale_actions", "Controller actions that started or stopped workers, by reason (numbers as N)",
            labels=["endpoint", "action", "reason"],
        )
        for (eid, action, reason), n in sorted(tel.scale_actions.items()):
            actions.add_metric([eid, action, reason], n)
        yield actions

        yield from self._ledger(rt, eids, now)

        http = CounterMetricFamily("gpuserve_http_requests", "HTTP requests by method, route template and status",
                                   labels=["method", "route", "status"])
        for (method, route, code), n in sorted(self.metrics.http_requests.items()):
            http.add_metric([method, route, str(code)], n)
        yield http

    def _ledger(self, rt: Runtime, eids: list[str], now: float) -> Iterator[Metric]:
        seconds = CounterMetricFamily("gpuserve_worker_seconds", "Wall seconds workers spent in each state", labels=["endpoint", "state"])
        gpu_s = CounterMetricFamily(
            "gpuserve_billed_gpu_seconds", "GPU-seconds billed by state, before each worker's per-life rounding",
            labels=["endpoint", "state"],
        )
        cost = CounterMetricFamily(
            "gpuserve_cost_usd", "USD billed by state, before each worker's per-life rounding", labels=["endpoint", "state"]
        )
        charges = CounterMetricFamily("gpuserve_job_charges_usd", "USD of per-request fees and execution charges", labels=["endpoint"])
        bill = GaugeMetricFamily(
            "gpuserve_bill_usd", "The bill so far (the ledger's total: per-life rounding and job charges included)", labels=["endpoint"]
        )
        for eid in eids:
            raw = rt.ledger.endpoint_bill(eid, now, rounded=False)
            for state in WorkerState:
                b = raw.by_state.get(state)
                seconds.add_metric([eid, state.value], b.seconds if b else 0.0)
                gpu_s.add_metric([eid, state.value], b.gpu_s if b else 0.0)
                cost.add_metric([eid, state.value], b.cost_usd if b else 0.0)
            charges.add_metric([eid], raw.jobs_cost_usd)
            bill.add_metric([eid], rt.ledger.endpoint_bill(eid, now).cost_usd)
        yield from (seconds, gpu_s, cost, charges, bill)
