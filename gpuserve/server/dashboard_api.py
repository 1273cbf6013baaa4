"""The live dashboard: its static page at /dashboard (package files) and its data at /api/dashboard (admin key).

The page holds no data and no secret, so it is served to anyone; everything it shows comes
from `GET /api/dashboard`, which takes an admin key like every operator route (401 without
one, 403 for a client key). The browser keeps the key in sessionStorage and sends it as
`Authorization: Bearer KEY` (see dashboard_files/dashboard.js); the page polls every two seconds.
The history behind the charts is gpuserve.live.history, sampled once a second by a task that
starts and stops with the app.
"""

from __future__ import annotations

import socket
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gpuserve.core.types import EndpointSpec
from gpuserve.live.history import LATENCY_WINDOW_S, History
from gpuserve.live.registry import LiveWorker
from gpuserve.live.runtime import Runtime
from gpuserve.server.http import ApiError, admin_auth, json_response, runtime_of

__all__ = ["DASHBOARD_PATH", "DECISIONS_SHOWN", "history_of", "router"]

router = APIRouter(tags=["dashboard"])

DASHBOARD_PATH = "/dashboard"
DECISIONS_SHOWN = 10  # the last scale actions listed per endpoint
_FILES = resources.files("gpuserve.server") / "dashboard_files"
# The only files served, with their types: nothing else under the folder is reachable by name.
_STATIC: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
# Scripts and styles from this server only: a key typed into the page cannot be read by anything injected.
_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_HOST = socket.gethostname()  # both backends run their workers on the server's own host


def history_of(request: Request) -> History:
    history: History = request.app.state.dashboard_history
    return history


def _read(name: str) -> bytes:
    folder = _FILES / "vendor" if name.startswith("uPlot") else _FILES
    return (folder / name).read_bytes()


@router.get(DASHBOARD_PATH, include_in_schema=False)
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get(DASHBOARD_PATH + "/", include_in_schema=False)
async def page_slash() -> Response:
    return RedirectResponse(DASHBOARD_PATH)


@router.get(DASHBOARD_PATH + "/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise ApiError(404, f"the dashboard has no file {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


def _gpu(spec: EndpointSpec, w: LiveWorker) -> str:
    if not spec.gpu_type:
        return "CPU"
    ids = ",".join(map(str, w.gpu_ids))
    return f"{spec.gpus_per_worker}x {spec.gpu_type}" + (f" (GPU {ids})" if ids else "")


def _workers(rt: Runtime, eid: str, spec: EndpointSpec, now_s: float) -> list[dict[str, Any]]:
    bills = rt.ledger.worker_bills(eid, now_s)
    out = []
    for w in sorted(rt.registry.all(eid), key=lambda w: (w.created_s, w.worker_id)):
        record = rt.backend.cold_start(w.worker_id) if rt.backend is not None else None
        bill = bills.get(w.worker_id)
        out.append(
            {
                "id": w.worker_id,
                "state": w.state.value,
                "draining": w.draining,
                "failure": w.failure,  # UNHEALTHY: why (an exit code, an image that cannot be pulled)
                "host": _HOST,
                "gpu": _gpu(spec, w),
                "uptimeS": round(max(0.0, now_s - w.created_s), 1),
                "inFlight": len(w.in_flight),
                "capacity": w.capacity,
                "version": w.spec_version,
                "coldStartS": record.total_s if record is not None else None,
                "costUsd": bill.cost_usd if bill is not None else 0.0,
                "logUrl": f"/api/workers/{w.worker_id}/logs",
            }
        )
    return out


async def _endpoint(rt: Runtime, history: History, eid: str, now_s: float) -> dict[str, Any]:
    spec = rt.endpoints[eid].deployment.spec
    stats = rt.queue_stats(eid, now_s)
    latest = history.latest(eid)
    last = rt.controller.last_step(eid) if rt.controller is not None else None
    hist = history.endpoints.get(eid)
    bill = rt.ledger.endpoint_bill(eid, now_s)
    health = await rt.health(eid)
    return {
        "id": eid,
        "type": spec.kind.value,
        "policy": spec.policy.name,
        "gpuType": spec.gpu_type,
        "minWorkers": spec.scaling.min_workers,
        "maxWorkers": spec.scaling.max_workers,
        "idleTimeoutS": spec.scaling.idle_timeout_s,
        "version": rt.endpoints[eid].deployment.version,
        "queue": {
            "inQueue": stats.in_queue,
            "inProgress": stats.in_progress,
            "oldestQueuedAgeS": round(stats.oldest_queued_age_s, 3),
        },
        "waiting": health.get("waiting"),
        "jobs": health.get("jobs"),
        "latencyMs": {
            "windowS": LATENCY_WINDOW_S,
            "delayP50": latest.delay_p50_ms if latest else None,
            "delayP99": latest.delay_p99_ms if latest else None,
            "executionP50": latest.execution_p50_ms if latest else None,
            "executionP99": latest.execution_p99_ms if latest else None,
        },
        "coldStarts": {"total": sum(history.cold_starts(eid).values()), "byKind": history.cold_starts(eid)},
        "lastDecision": (
            {"atS": last.snapshot.now_s, "desiredWorkers": last.decision.desired_workers, "reason": last.decision.reason}
            if last is not None
            else None
        ),
        "actions": [
            {"atS": a.at_s, "start": a.action.start, "stop": list(a.action.stop), "target": a.action.target,
             "reason": a.action.reason}
            for a in history.actions(eid, DECISIONS_SHOWN)
        ],
        "cost": {"costUsd": bill.cost_usd, "gpuSeconds": bill.gpu_s},
        "workers": _workers(rt, eid, spec, now_s),
        "series": hist.series() if hist is not None else None,
    }


@router.get("/api/dashboard", summary="What the dashboard shows: every endpoint's state now and its recent history (admin key)")
async def dashboard_data(request: Request) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "the dashboard")
    history = history_of(request)
    history.collect_starts()
    now = rt.clock.now_s()
    return json_response(
        {
            "serverTimeS": now,
            "wallTimeS": time.time(),
            "host": _HOST,
            "sampleIntervalS": history.interval_s,
            "historyS": history.history_s,
            "endpoints": [await _endpoint(rt, history, eid, now) for eid in sorted(rt.endpoints)],
        }
    )
